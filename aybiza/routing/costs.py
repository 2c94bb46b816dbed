"""The per-call cost ledger: one call's usage counters priced into line items and a total.

``cost_of`` turns one call's usage counters (the keys of ``CallContext.usage``)
into line items and a total in USD, at the prices of a
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

from aybiza.routing.prices import PriceTable, default_prices

__all__ = [
    "USD_QUANTUM",
    "CostLine",
    "CallCost",
    "CostTotals",
    "cost_of",
    "aggregate",
]

USD_QUANTUM = Decimal("0.000001")
"""Line items are rounded to a millionth of a dollar (the call record stores micro-dollars)."""

_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1000)
_SIXTY = Decimal(60)
_NON_BILLABLE = frozenset({"audio_seconds", "gated_seconds", "faq_answers", "llm_turns", "interruptions"})
_NON_BILLABLE_SUFFIXES = ("_errors", "_reconnects")
_NON_BILLABLE_PREFIXES = ("cache_hits:",)


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


def cost_of(
    usage: Mapping[str, float],
    region: str,
    minutes: float,
    prices: PriceTable | None = None,
    *,
    on: date | None = None,
    transport: str = "twilio",
    voice: str | None = None,
    stt_model: str | None = None,
    tts_model: str | None = None,
    strict: bool = False,
) -> CallCost:
    """Price one call's usage counters (``CallContext.usage``) in ``region``.

    ``minutes`` is the call's length (Twilio bills whole minutes, call and
    stream each); ``transport`` other than ``"twilio"`` (e.g. ``"webrtc"``)
    has no telephony lines. ``on`` is the call's date for dated prices.
    ``stt_model``/``tts_model`` name the engines (default: the table's Deepgram
    models); embedded engines listed in ``free_models`` (``whisper``,
    ``sphinx``, ``piper`` ...) add no line.
    """
    table = prices if prices is not None else default_prices()
    day = on or table.as_of
    lines: list[CostLine] = []
    notes: list[str] = []

    tokens: dict[str, list[float]] = {}
    for key, amount in usage.items():
        direction, sep, model = key.partition(":")
        if sep and direction in ("tokens_in", "tokens_out") and model:
            pair = tokens.setdefault(model, [0.0, 0.0])
            pair[0 if direction == "tokens_in" else 1] += amount
        elif (
            key not in _NON_BILLABLE
            and key not in ("stt_seconds", "tts_chars")
            and not key.endswith(_NON_BILLABLE_SUFFIXES)
            and not key.startswith(_NON_BILLABLE_PREFIXES)
        ):
            notes.append(f"usage {key!r} has no price; not counted")

    for model in sorted(tokens):
        tokens_in, tokens_out = tokens[model]
        quote = table.token_price(model, region, on=day, strict=strict)
        notes.extend(n for n in quote.notes if n not in notes)
        if quote.free:
            continue
        for kind, count, rate in (
            ("llm_input", tokens_in, quote.price.input_per_mtok),
            ("llm_output", tokens_out, quote.price.output_per_mtok),
        ):
            if count > 0:
                lines.append(
                    _line(
                        kind,
                        model,
                        _qty(count),
                        "tokens",
                        rate,
                        "per 1M tokens",
                        _MILLION,
                        estimated=quote.estimated,
                    )
                )

    stt_free = stt_model is not None and table.is_free(stt_model)
    stt_rate = Decimal(0) if stt_free else table.stt_rate(stt_model)
    stt_label = stt_model or table.default_stt_model
    stt_seconds = usage.get("stt_seconds", 0.0)
    if stt_seconds > 0 and not stt_free:
        # Deepgram bills per second of audio sent.
        billed = Decimal(math.ceil(stt_seconds - 1e-9)) / _SIXTY
        lines.append(_line("stt", stt_label, billed, "minutes", stt_rate, "per minute", Decimal(1)))

    tts_chars = usage.get("tts_chars", 0.0)
    if tts_chars > 0 and not (tts_model is not None and table.is_free(tts_model)):
        lines.append(
            _line(
                "tts",
                tts_model or table.default_tts_model,
                _qty(tts_chars),
                "characters",
                table.tts_rate(tts_model),
                "per 1k characters",
                _THOUSAND,
            )
        )

    if transport == "twilio" and minutes > 0:
        billed_minutes = Decimal(math.ceil(minutes - 1e-9)) if table.round_up_to_minute else Decimal(str(minutes))
        kind = voice or table.default_voice
        voice_rate = table.voice_rate(kind)
        lines.append(_line("telephony", kind, billed_minutes, "minutes", voice_rate, "per minute", Decimal(1)))
        if table.media_streams_per_minute:
            lines.append(
                _line(
                    "media_streams",
                    "twilio",
                    billed_minutes,
                    "minutes",
                    table.media_streams_per_minute,
                    "per minute",
                    Decimal(1),
                )
            )

    gated = usage.get("gated_seconds", 0.0)
    savings = _usd(Decimal(str(gated)) / _SIXTY * stt_rate) if gated > 0 else Decimal(0)
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
