"""The price table: what every model, STT/TTS engine and telephony minute costs, as of a date.

The table is data (``prices.yaml`` next to this module, or any file of the
same shape) loaded into frozen dataclasses; it is dated, and prices that
change carry the date they change on. Everything here is pure: no I/O
except ``load_prices`` reading a file. :mod:`aybiza.routing.costs` prices a
call's usage with it.

Bedrock model ids may come bare (``anthropic.claude-3-haiku-…``), with a
cross-Region profile prefix (``eu.anthropic…``, ``global.anthropic…``) or as
an ARN; the price is that of the *source* Region (the one the request is made
in), plus a regional premium for models that also have a global endpoint.
A model the table does not know is priced at the table's ``unknown_model``
rate and flagged ``estimated`` (or raises with ``strict=True``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from aybiza.errors import ConfigError

__all__ = [
    "UnknownPriceError",
    "TokenPrice",
    "PriceChange",
    "ModelPrice",
    "TokenQuote",
    "InfraLine",
    "PriceTable",
    "split_model_id",
    "load_prices",
    "parse_prices",
    "default_prices",
]

_MILLION = Decimal(1_000_000)


class UnknownPriceError(ConfigError):
    """The price table has no price for a model, STT/TTS model or voice kind asked for."""


def _dec(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigError(f"price table: {what} must be a number, got {value!r}")
    try:
        result = Decimal(str(value))
    except ArithmeticError as exc:
        raise ConfigError(f"price table: {what} is not a number: {value!r}") from exc
    if not result.is_finite() or result < 0:
        raise ConfigError(f"price table: {what} must be a finite non-negative number, got {value!r}")
    return result


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """USD per million input and output tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal

    def scaled(self, factor: Decimal) -> TokenPrice:
        """This price times ``factor`` (e.g. 1.1 for a regional premium)."""
        return TokenPrice(self.input_per_mtok * factor, self.output_per_mtok * factor)


@dataclass(frozen=True, slots=True)
class PriceChange:
    """A new list price for a model from ``effective`` on (e.g. extended-access pricing)."""

    effective: date
    price: TokenPrice
    note: str = ""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One Bedrock model's list price, its dated changes and lifecycle."""

    model_id: str
    name: str
    price: TokenPrice
    changes: tuple[PriceChange, ...] = ()
    regional_premium: Decimal = Decimal(0)
    lifecycle: str = "active"
    eol: date | None = None
    source: str = ""

    def price_on(self, day: date) -> tuple[TokenPrice, str]:
        """The list price in force on ``day`` and the note of the change that set it."""
        current, note = self.price, ""
        for change in sorted(self.changes, key=lambda c: c.effective):
            if change.effective <= day:
                current, note = change.price, change.note
        return current, note


@dataclass(frozen=True, slots=True)
class TokenQuote:
    """The token price that applies to one model id in one Region on one day."""

    model_id: str
    base_id: str
    scope: str
    price: TokenPrice
    estimated: bool = False
    free: bool = False
    notes: tuple[str, ...] = ()

    def cost(self, tokens_in: float, tokens_out: float) -> Decimal:
        """Unrounded USD for the given token counts."""
        return (
            Decimal(str(tokens_in)) * self.price.input_per_mtok + Decimal(str(tokens_out)) * self.price.output_per_mtok
        ) / _MILLION


@dataclass(frozen=True, slots=True)
class InfraLine:
    """One line of a deployment's monthly infrastructure bill (used by the scenario calculator)."""

    key: str
    label: str
    tier: str
    driver: str
    rate: Decimal | None
    source: str = ""


@dataclass(frozen=True, slots=True)
class PriceTable:
    """All prices the ledger and the scenario calculator use, as of one date."""

    as_of: date
    currency: str
    models: Mapping[str, ModelPrice]
    region_overrides: Mapping[str, Mapping[str, TokenPrice]]
    profile_prefixes: frozenset[str]
    global_prefix: str
    unknown_model: TokenPrice
    free_models: tuple[str, ...]
    bedrock_providers: frozenset[str]
    stt_per_minute: Mapping[str, Decimal]
    default_stt_model: str
    tts_per_1k_chars: Mapping[str, Decimal]
    default_tts_model: str
    voice_per_minute: Mapping[str, Decimal]
    default_voice: str
    media_streams_per_minute: Decimal
    round_up_to_minute: bool
    infrastructure: Mapping[str, tuple[InfraLine, ...]] = field(default_factory=dict)

    def is_free(self, model_id: str) -> bool:
        """True for embedded or self-hosted engines (FAQ answerer, whisper, piper, ...) that cost nothing per use."""
        lowered = model_id.lower()
        return any(lowered == name or lowered.startswith((name + ":", name + "/")) for name in self.free_models)

    def token_price(self, model_id: str, region: str, *, on: date | None = None, strict: bool = False) -> TokenQuote:
        """The per-token price of ``model_id`` called from ``region`` on ``on`` (default: ``as_of``).

        Unknown Bedrock models get the ``unknown_model`` rate, flagged estimated,
        unless ``strict`` (then ``UnknownPriceError``).
        """
        day = on or self.as_of
        if self.is_free(model_id):
            return TokenQuote(model_id, model_id, "", TokenPrice(Decimal(0), Decimal(0)), free=True)
        scope, base_id = split_model_id(model_id, self.profile_prefixes)
        model = self._lookup(base_id)
        if model is None and base_id.partition(".")[0] not in self.bedrock_providers:
            # Not a Bedrock id (e.g. "llama3.2:3b" on a local OpenAI-compatible server).
            note = f"{model_id}: not a Bedrock model id; counted as self-hosted, no per-token price"
            return TokenQuote(model_id, base_id, scope, TokenPrice(Decimal(0), Decimal(0)), free=True, notes=(note,))
        if model is None:
            if strict:
                raise UnknownPriceError(f"no Bedrock price for model {model_id!r} (base id {base_id!r})")
            note = f"{model_id}: not in the price table (as of {self.as_of}); priced as an estimate"
            return TokenQuote(model_id, base_id, scope, self.unknown_model, estimated=True, notes=(note,))
        notes: list[str] = []
        override = self.region_overrides.get(region, {}).get(model.model_id)
        if override is not None:
            price = override
        else:
            price, change_note = model.price_on(day)
            if change_note:
                notes.append(f"{model.name}: {change_note} price")
        if model.regional_premium and scope != self.global_prefix:
            price = price.scaled(1 + model.regional_premium)
        if model.eol is not None and day >= model.eol:
            notes.append(f"{model.name}: past end of life ({model.eol.isoformat()})")
        return TokenQuote(model_id, model.model_id, scope, price, notes=tuple(notes))

    def _lookup(self, base_id: str) -> ModelPrice | None:
        found = self.models.get(base_id)
        if found is not None:
            return found
        # Tolerate a missing or different ":N" throughput suffix.
        stem = base_id.split(":", 1)[0]
        for key, model in self.models.items():
            if key.split(":", 1)[0] == stem:
                return model
        return None

    def stt_rate(self, model: str | None = None) -> Decimal:
        """USD per minute of streaming STT for ``model`` (default: the table's)."""
        return _rate(self.stt_per_minute, model or self.default_stt_model, "STT model")

    def tts_rate(self, model: str | None = None) -> Decimal:
        """USD per 1,000 characters of TTS for ``model`` (default: the table's)."""
        return _rate(self.tts_per_1k_chars, model or self.default_tts_model, "TTS model")

    def voice_rate(self, kind: str | None = None) -> Decimal:
        """USD per minute of a Twilio call of ``kind`` (inbound_local, outbound, ...)."""
        return _rate(self.voice_per_minute, kind or self.default_voice, "Twilio voice kind")


def _rate(table: Mapping[str, Decimal], key: str, what: str) -> Decimal:
    try:
        return table[key]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise UnknownPriceError(f"no price for {what} {key!r} (known: {known})") from None


def split_model_id(model_id: str, prefixes: Iterable[str]) -> tuple[str, str]:
    """Split a Bedrock model id, profile id or ARN into ``(scope, base_id)``.

    ``scope`` is the inference-profile prefix (``"us"``, ``"eu"``, ``"global"``)
    or ``""`` for a bare in-Region model id.
    """
    ident = model_id.strip()
    if ident.startswith("arn:"):
        ident = ident.rsplit("/", 1)[-1]
    head, dot, rest = ident.partition(".")
    if dot and head in set(prefixes) and "." in rest:
        return head, rest
    return "", ident


# -- loading ---------------------------------------------------------------


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"price table: {what} must be a mapping")
    return value


def _date(value: Any, what: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"price table: {what} must be a date (YYYY-MM-DD), got {value!r}") from exc


def _token_price(raw: Any, what: str) -> TokenPrice:
    entry = _mapping(raw, what)
    if "input" not in entry or "output" not in entry:
        raise ConfigError(f"price table: {what} needs 'input' and 'output' (USD per 1M tokens)")
    return TokenPrice(_dec(entry["input"], f"{what}.input"), _dec(entry["output"], f"{what}.output"))


def _model(model_id: str, raw: Any) -> ModelPrice:
    entry = _mapping(raw, f"bedrock.models[{model_id}]")
    changes = tuple(
        PriceChange(
            _date(_mapping(c, "change").get("from"), f"{model_id} change date"),
            _token_price(c, f"{model_id} change"),
            str(_mapping(c, "change").get("note", "")),
        )
        for c in entry.get("changes") or ()
    )
    eol = entry.get("eol")
    return ModelPrice(
        model_id=model_id,
        name=str(entry.get("name", model_id)),
        price=_token_price(entry, f"bedrock.models[{model_id}]"),
        changes=changes,
        regional_premium=_dec(entry.get("regional_premium", 0), f"{model_id}.regional_premium"),
        lifecycle=str(entry.get("lifecycle", "active")),
        eol=None if eol is None else _date(eol, f"{model_id}.eol"),
        source=str(entry.get("source", "")),
    )


def _decimals(raw: Any, what: str) -> Mapping[str, Decimal]:
    return MappingProxyType({str(k): _dec(v, f"{what}[{k}]") for k, v in _mapping(raw, what).items()})


def _infra(raw: Any) -> Mapping[str, tuple[InfraLine, ...]]:
    out: dict[str, tuple[InfraLine, ...]] = {}
    for deployment, lines in _mapping(raw, "infrastructure").items():
        parsed = []
        for i, line in enumerate(lines or ()):
            entry = _mapping(line, f"infrastructure.{deployment}[{i}]")
            rate = entry.get("rate")
            parsed.append(
                InfraLine(
                    key=str(entry["key"]),
                    label=str(entry.get("label", entry["key"])),
                    tier=str(entry.get("tier", "cloud")),
                    driver=str(entry["driver"]),
                    rate=None if rate is None else _dec(rate, f"{deployment}.{entry['key']}.rate"),
                    source=" ".join(str(entry.get("source", "")).split()),
                )
            )
        out[str(deployment)] = tuple(parsed)
    return MappingProxyType(out)


def parse_prices(data: Mapping[str, Any]) -> PriceTable:
    """Build a ``PriceTable`` from the parsed YAML document (see ``prices.yaml`` for the shape)."""
    try:
        bedrock = _mapping(data.get("bedrock"), "bedrock")
        deepgram = _mapping(data.get("deepgram"), "deepgram")
        twilio = _mapping(data.get("twilio"), "twilio")
        models = {str(k): _model(str(k), v) for k, v in _mapping(bedrock.get("models"), "models").items()}
        overrides = {
            str(region): MappingProxyType(
                {str(m): _token_price(p, f"regions.{region}.{m}") for m, p in _mapping(per, region).items()}
            )
            for region, per in _mapping(bedrock.get("regions"), "bedrock.regions").items()
        }
        return PriceTable(
            as_of=_date(data.get("as_of"), "as_of"),
            currency=str(data.get("currency", "USD")),
            models=MappingProxyType(models),
            region_overrides=MappingProxyType(overrides),
            profile_prefixes=frozenset(str(p) for p in bedrock.get("profile_prefixes") or ()),
            global_prefix=str(bedrock.get("global_prefix", "global")),
            unknown_model=_token_price(bedrock.get("unknown_model"), "bedrock.unknown_model"),
            free_models=tuple(str(m).lower() for m in data.get("free_models") or ()),
            bedrock_providers=frozenset(str(p) for p in bedrock.get("providers") or ()),
            stt_per_minute=_decimals(deepgram.get("stt_per_minute"), "deepgram.stt_per_minute"),
            default_stt_model=str(deepgram.get("default_stt_model", "nova-3")),
            tts_per_1k_chars=_decimals(deepgram.get("tts_per_1k_chars"), "deepgram.tts_per_1k_chars"),
            default_tts_model=str(deepgram.get("default_tts_model", "aura-2")),
            voice_per_minute=_decimals(twilio.get("voice_per_minute"), "twilio.voice_per_minute"),
            default_voice=str(twilio.get("default_voice", "inbound_local")),
            media_streams_per_minute=_dec(twilio.get("media_streams_per_minute", 0), "media_streams"),
            round_up_to_minute=bool(twilio.get("round_up_to_minute", True)),
            infrastructure=_infra(data.get("infrastructure")),
        )
    except KeyError as exc:
        raise ConfigError(f"price table: missing key {exc}") from exc


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Load a price table from ``path`` (default: the packaged ``prices.yaml``)."""
    if path is None:
        text = resources.files("aybiza.routing").joinpath("prices.yaml").read_text(encoding="utf-8")
        origin = "aybiza/routing/prices.yaml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read price table {path}: {exc}") from exc
        origin = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"price table {origin} is not valid YAML: {exc}") from exc
    return parse_prices(_mapping(data, origin))


@lru_cache(maxsize=1)
def default_prices() -> PriceTable:
    """The packaged price table, loaded once per process."""
    return load_prices()
