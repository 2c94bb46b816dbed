"""The per-call cost ledger: one call's usage counters priced into line items and a total.

``cost_of`` turns one call's :class:`~aybiza.pipeline.ledger.Usage` (tokens per
model, seconds per recogniser, characters per voice, as its ledger counted
them) into line items and a total in USD, at the prices of a
:class:`~aybiza.routing.prices.PriceTable`; ``aggregate`` sums many calls.
Pure functions over plain values.

Amounts are ``Decimal``; each line is rounded to a millionth of a dollar and
the total is the sum of the rounded lines, so lines always add up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from aybiza.errors import ConfigError
from aybiza.pipeline.ledger import Usage
from aybiza.routing.prices import PriceTable, UnknownPriceError, default_prices

__all__ = [
    "USD_QUANTUM",
    "CostLine",
    "CallCost",
    "CostTotals",
    "cost_of",
    "tokens_cost",
    "aggregate",
]

USD_QUANTUM = Decimal("0.000001")
"""Line items are rounded to a millionth of a dollar (the call record stores micro-dollars)."""

_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1000)
_SIXTY = Decimal(60)


def _qty(value: float) -> Decimal:
    """A usage counter as a Decimal, without a trailing ``.0`` for whole numbers."""
    result = Decimal(str(value))
    return Decimal(int(result)) if result == result.to_integral_value() else result


def _usd(amount: Decimal) -> Decimal:
    return amount.quantize(USD_QUANTUM, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class CostLine:
    """One priced item of a call: quantity in natural units, rate, rounded amount."""

    kind: str
    detail: str
    quantity: Decimal
    unit: str
    rate: Decimal
    rate_unit: str
    amount: Decimal
    estimated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (decimals as strings, so nothing is lost)."""
        return {
            "kind": self.kind,
            "detail": self.detail,
            "quantity": str(self.quantity),
            "unit": self.unit,
            "rate": str(self.rate),
            "rate_unit": self.rate_unit,
            "amount": str(self.amount),
            "estimated": self.estimated,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostLine:
        """Inverse of ``to_dict``."""
        return cls(
            kind=str(data["kind"]),
            detail=str(data["detail"]),
            quantity=Decimal(str(data["quantity"])),
            unit=str(data["unit"]),
            rate=Decimal(str(data["rate"])),
            rate_unit=str(data["rate_unit"]),
            amount=Decimal(str(data["amount"])),
            estimated=bool(data.get("estimated", False)),
        )


@dataclass(frozen=True, slots=True)
class CallCost:
    """What one call cost: line items, their total, and what the edge gate saved."""

    region: str
    price_date: date
    lines: tuple[CostLine, ...]
    total: Decimal
    edge_savings: Decimal = Decimal(0)
    notes: tuple[str, ...] = ()
    currency: str = "USD"

    @property
    def estimated(self) -> bool:
        """True when any line used an estimated price (a model missing from the table)."""
        return any(line.estimated for line in self.lines)

    @property
    def total_usd(self) -> float:
        """The total as a float, for metrics and dashboards."""
        return float(self.total)

    @property
    def total_micros(self) -> int:
        """The total in millionths of a dollar (what the call record stores)."""
        return int(self.total / USD_QUANTUM)

    def by_kind(self) -> dict[str, Decimal]:
        """Totals per kind of line (``llm_input``, ``stt``, ``telephony`` ...)."""
        out: dict[str, Decimal] = {}
        for line in self.lines:
            out[line.kind] = out.get(line.kind, Decimal(0)) + line.amount
        return out

    def by_model(self) -> dict[str, Decimal]:
        """LLM totals per model id."""
        out: dict[str, Decimal] = {}
        for line in self.lines:
            if line.kind.startswith("llm_"):
                out[line.detail] = out.get(line.detail, Decimal(0)) + line.amount
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the call record."""
        return {
            "currency": self.currency,
            "region": self.region,
            "price_date": self.price_date.isoformat(),
            "total_usd": str(self.total),
            "total_micros": self.total_micros,
            "edge_savings_usd": str(self.edge_savings),
            "estimated": self.estimated,
            "notes": list(self.notes),
            "lines": [line.to_dict() for line in self.lines],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallCost:
        """Inverse of ``to_dict`` (for reading archived calls)."""
        return cls(
            region=str(data["region"]),
            price_date=date.fromisoformat(str(data["price_date"])),
            lines=tuple(CostLine.from_dict(line) for line in data.get("lines", ())),
            total=Decimal(str(data["total_usd"])),
            edge_savings=Decimal(str(data.get("edge_savings_usd", "0"))),
            notes=tuple(str(n) for n in data.get("notes", ())),
            currency=str(data.get("currency", "USD")),
        )


def _line(
    kind: str,
    detail: str,
    quantity: Decimal,
    unit: str,
    rate: Decimal,
    rate_unit: str,
    per: Decimal,
    *,
    estimated: bool = False,
) -> CostLine:
    return CostLine(kind, detail, quantity, unit, rate, rate_unit, _usd(quantity * rate / per), estimated)


def _engine_rate(rate_of: Any, table: PriceTable, engine: str, default: str, notes: list[str],
                 strict: bool) -> Decimal:
    """The unit rate of a paid engine; an engine missing from the table is priced at the default's rate."""
    try:
        rate: Decimal = rate_of(engine)
        return rate
    except UnknownPriceError:
        if strict:
            raise
        notes.append(f"{engine}: not in the price table; priced as {default}")
        fallback: Decimal = rate_of(default)
        return fallback


def cost_of(
    usage: Usage,
    region: str,
    minutes: float,
    prices: PriceTable | None = None,
    *,
    on: date | None = None,
    transport: str = "twilio",
    voice: str | None = None,
    strict: bool = False,
) -> CallCost:
    """Price one call's usage in ``region``.

    ``minutes`` is the call's length (Twilio bills whole minutes, call and
    stream each); ``transport`` other than ``"twilio"`` (e.g. ``"webrtc"``)
    has no telephony lines. ``on`` is the call's date for dated prices.
    Recognisers and voices are priced by the engine name the ledger counted
    them under (``nova-3``, ``aura-2``); embedded engines listed in
    ``free_models`` (``whisper``, ``sphinx``, ``piper`` ...) add no line.
    """
    table = prices if prices is not None else default_prices()
    day = on or table.as_of
    lines: list[CostLine] = []
    notes: list[str] = []

    for model in sorted(usage.tokens):
        counts = usage.tokens[model]
        quote = table.token_price(model, region, on=day, strict=strict)
        notes.extend(n for n in quote.notes if n not in notes)
        if quote.free:
            continue
        for kind, count, rate in (
            ("llm_input", counts.input, quote.price.input_per_mtok),
            ("llm_output", counts.output, quote.price.output_per_mtok),
        ):
            if count > 0:
                lines.append(_line(kind, model, _qty(count), "tokens", rate, "per 1M tokens", _MILLION,
                                   estimated=quote.estimated))

    paid_stt_rate = Decimal(0)
    for engine in sorted(usage.stt_seconds):
        seconds = usage.stt_seconds[engine]
        if seconds <= 0 or table.is_free(engine):
            continue
        rate = _engine_rate(table.stt_rate, table, engine, table.default_stt_model, notes, strict)
        paid_stt_rate = max(paid_stt_rate, rate)
        # Deepgram bills per second of audio sent.
        billed = Decimal(math.ceil(seconds - 1e-9)) / _SIXTY
        lines.append(_line("stt", engine, billed, "minutes", rate, "per minute", Decimal(1)))

    for engine in sorted(usage.tts_chars):
        chars = usage.tts_chars[engine]
        if chars <= 0 or table.is_free(engine):
            continue
        rate = _engine_rate(table.tts_rate, table, engine, table.default_tts_model, notes, strict)
        lines.append(_line("tts", engine, _qty(chars), "characters", rate, "per 1k characters", _THOUSAND))

    if transport == "twilio" and minutes > 0:
        billed_minutes = Decimal(math.ceil(minutes - 1e-9)) if table.round_up_to_minute else Decimal(str(minutes))
        kind = voice or table.default_voice
        voice_rate = table.voice_rate(kind)
        lines.append(_line("telephony", kind, billed_minutes, "minutes", voice_rate, "per minute", Decimal(1)))
        if table.media_streams_per_minute:
            lines.append(_line("media_streams", "twilio", billed_minutes, "minutes",
                               table.media_streams_per_minute, "per minute", Decimal(1)))

    # Silence the edge held back is audio a paid recogniser would have billed.
    gated = usage.gated_seconds
    savings = _usd(Decimal(str(gated)) / _SIXTY * paid_stt_rate) if gated > 0 else Decimal(0)
    total = sum((line.amount for line in lines), Decimal(0))
    return CallCost(
        region=region,
        price_date=day,
        lines=tuple(lines),
        total=total,
        edge_savings=savings,
        notes=tuple(notes),
        currency=table.currency,
    )


def tokens_cost(usage: Usage, region: str, prices: PriceTable | None = None) -> float:
    """What the model tokens of ``usage`` cost so far, in USD (the per-call budget reads it each turn)."""
    table = prices if prices is not None else default_prices()
    total = Decimal(0)
    for model, counts in usage.tokens.items():
        try:
            quote = table.token_price(model, region)
        except ConfigError:
            continue
        if not quote.free:
            price = quote.price
            total += (counts.input * price.input_per_mtok + counts.output * price.output_per_mtok) / _MILLION
    return float(total)


@dataclass(frozen=True, slots=True)
class CostTotals:
    """Totals over many calls, for ``aybiza costs``."""

    calls: int
    total: Decimal
    by_region: Mapping[str, Decimal]
    by_model: Mapping[str, Decimal]
    by_kind: Mapping[str, Decimal]
    edge_savings: Decimal
    estimated_calls: int

    @property
    def per_call(self) -> Decimal:
        """Mean cost of a call (0 when there are none)."""
        return _usd(self.total / self.calls) if self.calls else Decimal(0)


def aggregate(costs: Iterable[CallCost]) -> CostTotals:
    """Sum call costs per Region, per LLM model and per kind of line."""
    calls = estimated = 0
    total = savings = Decimal(0)
    by_region: dict[str, Decimal] = {}
    by_model: dict[str, Decimal] = {}
    by_kind: dict[str, Decimal] = {}
    for cost in costs:
        calls += 1
        estimated += cost.estimated
        total += cost.total
        savings += cost.edge_savings
        by_region[cost.region] = by_region.get(cost.region, Decimal(0)) + cost.total
        for model, amount in cost.by_model().items():
            by_model[model] = by_model.get(model, Decimal(0)) + amount
        for kind, amount in cost.by_kind().items():
            by_kind[kind] = by_kind.get(kind, Decimal(0)) + amount
    return CostTotals(calls, total, by_region, by_model, by_kind, savings, estimated)
