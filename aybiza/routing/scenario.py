"""Monthly cost of a deployment: hybrid (edge + cloud) against cloud-only.

A ``Scenario`` states the workload (calls a month, minutes a call, LLM turns
a minute and their size, model mix) and what the edge achieves (share of LLM
turns it answers from its cache, share of caller audio its VAD keeps off the
wire). ``compute`` prices both deployments line by line from the
``infrastructure`` section of the price table (``prices.yaml``): every line
is ``rate x driver``, the driver being one of

- ``flat``: one a month;
- ``call``: calls a month;
- ``call_minute``: calls x minutes a call;
- ``forwarded_minute``: call minutes x (1 - gated silence share); the
  cloud-only deployment has no edge gate, so it forwards every minute;
- ``llm``: LLM turns sent to Bedrock, turns x (1 - cache hit ratio), priced
  per turn from the model mix and Bedrock token prices; cloud-only has no
  edge cache, so every turn.

``DESIGN_PRESET`` makes the design's inputs explicit. The design
(aybizacom/aybiza, ``docs/architecture/global_edge_computing_architecture.md``,
``Aybiza.Edge.CostAnalyzer``) states for 1,000,000 calls a month a hybrid bill
of $6,070 (Cloudflare 1,570 + AWS 4,500), $8,500 for AWS only, a 28.6 % saving
and about $0.006 a call. It gives the hybrid lines but not the workload behind
them, nor any AWS-only breakdown. The preset supplies the missing workload:

* 1,000,000 calls a month — the design's own estimate;
* 2.5 minutes a call, 2 LLM turns a minute (5 turns a call) — assumed;
* 300 input / 40 output tokens a turn and a mix of 5 % premium (Claude 3.7
  Sonnet), 10 % advanced (3.5 Sonnet v2), 25 % fast (3.5 Haiku), 60 % economy
  (3 Haiku) — assumed, following the design's model selection (Sonnet for
  high-quality English, Haiku "primary" for volume); $0.0004 a turn at the
  design-era prices (``price_date`` 2025-06-01, before 3.5 Sonnet's extended-
  access price);
* 25 % of LLM turns answered from the edge cache — assumed (the design targets
  "70 %+ edge processing for simple queries"; the 85 % cache-hit target is over
  all edge lookups, config included);
* 50 % of caller audio gated as silence — assumed (the caller is silent while
  the agent speaks).

With these, the hybrid lines are the design's figures exactly (Workers 500,
bandwidth 1,000, compute 2,000, networking 500, Bedrock 1,500 ...), and the
cloud-only bill is 8,500: the same compute, storage and other; networking
1,000 (no gate); Bedrock 2,000 (no edge answers); bandwidth at CloudFront's
$0.085/GB instead of $0.04/GB (the design's comparison table) 2,125; and AWS
edge functions 875, the one calibrated line (the design gives no AWS-only
breakdown). The saving of 2,430 then splits into bandwidth 1,125, edge cache
500, edge gate 500 and edge services 305.

The design's figures leave out telephony, STT and TTS (they are the same on
both sides except STT, which the gate reduces). ``include_voice_providers``
adds them from the same price table; ``measured_scenario`` turns archived
calls' usage into a scenario with them included, which is what a deployment
really costs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType

from rich.console import Console
from rich.table import Table

from aybiza.errors import ConfigError
from aybiza.pipeline.ledger import Usage
from aybiza.routing.prices import InfraLine, PriceTable, default_prices

__all__ = [
    "DESIGN_TIER_MODELS",
    "DESIGN_PRESET",
    "Scenario",
    "ScenarioLine",
    "DeploymentCost",
    "ScenarioResult",
    "Measurements",
    "compute",
    "measure",
    "measured_scenario",
    "format_scenario",
]

DESIGN_TIER_MODELS: Mapping[str, str] = MappingProxyType(
    {
        "premium": "anthropic.claude-3-7-sonnet-20250219-v1:0",
        "advanced": "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "fast": "anthropic.claude-3-5-haiku-20241022-v1:0",
        "economy": "anthropic.claude-3-haiku-20240307-v1:0",
    }
)
"""The design's model tiers (``select_optimal_model``) as Bedrock model ids."""

_CENT = Decimal("0.01")
_MILLION = Decimal(1_000_000)
_UNITS = {
    "flat": "month",
    "call": "calls",
    "call_minute": "call-minutes",
    "forwarded_minute": "forwarded minutes",
    "llm": "LLM turns",
}


def _d(value: float) -> Decimal:
    return Decimal(str(value))


@dataclass(frozen=True, slots=True)
class Scenario:
    """The inputs of a monthly cost estimate."""

    calls_per_month: float
    minutes_per_call: float
    model_mix: Mapping[str, float]
    cache_hit_ratio: float
    gated_silence_share: float
    llm_turns_per_minute: float = 2.0
    tokens_in_per_turn: float = 300.0
    tokens_out_per_turn: float = 40.0
    region: str = "us-east-1"
    tier_models: Mapping[str, str] = field(default_factory=lambda: DESIGN_TIER_MODELS)
    price_date: date | None = None
    include_voice_providers: bool = False
    tts_chars_per_minute: float = 450.0
    name: str = "custom"

    def __post_init__(self) -> None:
        for label, value in (
            ("calls_per_month", self.calls_per_month),
            ("minutes_per_call", self.minutes_per_call),
            ("llm_turns_per_minute", self.llm_turns_per_minute),
            ("tokens_in_per_turn", self.tokens_in_per_turn),
            ("tokens_out_per_turn", self.tokens_out_per_turn),
            ("tts_chars_per_minute", self.tts_chars_per_minute),
        ):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"scenario: {label} must be a finite number >= 0, got {value!r}")
        for label, value in (
            ("cache_hit_ratio", self.cache_hit_ratio),
            ("gated_silence_share", self.gated_silence_share),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"scenario: {label} must be between 0 and 1, got {value!r}")
        if not self.model_mix:
            raise ConfigError("scenario: model_mix is empty")
        if any(share < 0 for share in self.model_mix.values()):
            raise ConfigError("scenario: model_mix shares must be >= 0")
        total = sum(self.model_mix.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"scenario: model_mix shares must add up to 1, got {total}")

    def model_for(self, tier: str) -> str:
        """The Bedrock model id of a mix entry: a tier name, or already a model id."""
        return self.tier_models.get(tier, tier)


DESIGN_PRESET = Scenario(
    calls_per_month=1_000_000,
    minutes_per_call=2.5,
    model_mix=MappingProxyType({"premium": 0.05, "advanced": 0.10, "fast": 0.25, "economy": 0.60}),
    cache_hit_ratio=0.25,
    gated_silence_share=0.5,
    llm_turns_per_minute=2.0,
    tokens_in_per_turn=300,
    tokens_out_per_turn=40,
    region="us-east-1",
    price_date=date(2025, 6, 1),
    include_voice_providers=False,
    name="design",
)
"""The design's inputs (see the module docstring for the source of each)."""


@dataclass(frozen=True, slots=True)
class ScenarioLine:
    """One priced line of a deployment's month."""

    key: str
    label: str
    tier: str
    quantity: Decimal
    unit: str
    rate: Decimal
    amount: Decimal
    source: str = ""


@dataclass(frozen=True, slots=True)
class DeploymentCost:
    """A deployment's monthly bill, line by line."""

    name: str
    lines: tuple[ScenarioLine, ...]
    monthly: Decimal
    per_call: Decimal

    def line(self, key: str) -> ScenarioLine | None:
        """The line with ``key``, if this deployment has one."""
        return next((line for line in self.lines if line.key == key), None)

    def by_tier(self) -> dict[str, Decimal]:
        """Monthly totals per tier (edge, cloud, providers)."""
        out: dict[str, Decimal] = {}
        for line in self.lines:
            out[line.tier] = out.get(line.tier, Decimal(0)) + line.amount
        return out


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """Hybrid and cloud-only bills for one scenario, and the difference."""

    scenario: Scenario
    price_date: date
    hybrid: DeploymentCost
    cloud_only: DeploymentCost
    notes: tuple[str, ...] = ()

    @property
    def saving(self) -> Decimal:
        """Cloud-only minus hybrid, a month."""
        return self.cloud_only.monthly - self.hybrid.monthly

    @property
    def saving_share(self) -> Decimal:
        """The saving as a fraction of the cloud-only bill."""
        if not self.cloud_only.monthly:
            return Decimal(0)
        return self.saving / self.cloud_only.monthly


def _turn_price(scenario: Scenario, prices: PriceTable, day: date) -> tuple[Decimal, list[str]]:
    """Blended USD per LLM turn over the model mix."""
    price = Decimal(0)
    notes: list[str] = []
    tokens_in, tokens_out = _d(scenario.tokens_in_per_turn), _d(scenario.tokens_out_per_turn)
    for entry, share in sorted(scenario.model_mix.items()):
        quote = prices.token_price(scenario.model_for(entry), scenario.region, on=day)
        notes.extend(n for n in quote.notes if n not in notes)
        per_turn = tokens_in * quote.price.input_per_mtok + tokens_out * quote.price.output_per_mtok
        per_turn /= _MILLION
        price += _d(share) * per_turn
    return price, notes


def _deployment(
    name: str,
    lines: Iterable[InfraLine],
    scenario: Scenario,
    prices: PriceTable,
    *,
    cache_hit_ratio: float,
    gated_share: float,
    turn_price: Decimal,
) -> DeploymentCost:
    calls = _d(scenario.calls_per_month)
    call_minutes = calls * _d(scenario.minutes_per_call)
    forwarded = call_minutes * (1 - _d(gated_share))
    turns = call_minutes * _d(scenario.llm_turns_per_minute)
    drivers = {
        "flat": Decimal(1),
        "call": calls,
        "call_minute": call_minutes,
        "forwarded_minute": forwarded,
        "llm": turns * (1 - _d(cache_hit_ratio)),
    }
    out: list[ScenarioLine] = []
    for line in lines:
        if line.driver not in drivers:
            raise ConfigError(f"price table: line {line.key!r} has unknown driver {line.driver!r}")
        rate = turn_price if line.driver == "llm" else line.rate
        if rate is None:
            raise ConfigError(f"price table: infrastructure line {line.key!r} needs a rate")
        quantity = drivers[line.driver]
        out.append(
            ScenarioLine(
                line.key,
                line.label,
                line.tier,
                quantity,
                _UNITS[line.driver],
                rate,
                quantity * rate,
                line.source,
            )
        )
    if scenario.include_voice_providers:
        out.extend(_provider_lines(scenario, prices, calls, call_minutes, forwarded))
    monthly = sum((line.amount for line in out), Decimal(0))
    per_call = monthly / calls if calls else Decimal(0)
    return DeploymentCost(name, tuple(out), monthly, per_call)


def _provider_lines(
    scenario: Scenario, prices: PriceTable, calls: Decimal, call_minutes: Decimal, forwarded: Decimal
) -> list[ScenarioLine]:
    # Twilio bills each call (and its stream) in whole minutes.
    billed = calls * Decimal(math.ceil(scenario.minutes_per_call - 1e-9))
    voice = prices.voice_rate()
    stt = prices.stt_rate()
    tts_thousands = call_minutes * _d(scenario.tts_chars_per_minute) / 1000
    tts = prices.tts_rate()
    return [
        ScenarioLine(
            "telephony",
            f"Twilio voice ({prices.default_voice})",
            "providers",
            billed,
            "billed minutes",
            voice,
            billed * voice,
            "twilio.voice_per_minute",
        ),
        ScenarioLine(
            "media_streams",
            "Twilio Media Streams",
            "providers",
            billed,
            "billed minutes",
            prices.media_streams_per_minute,
            billed * prices.media_streams_per_minute,
            "twilio.media_streams_per_minute",
        ),
        ScenarioLine(
            "stt",
            f"Deepgram STT ({prices.default_stt_model})",
            "providers",
            forwarded,
            "forwarded minutes",
            stt,
            forwarded * stt,
            "deepgram.stt_per_minute; gated audio not sent",
        ),
        ScenarioLine(
            "tts",
            f"Deepgram TTS ({prices.default_tts_model})",
            "providers",
            tts_thousands,
            "1k characters",
            tts,
            tts_thousands * tts,
            "deepgram.tts_per_1k_chars",
        ),
    ]


def compute(scenario: Scenario, prices: PriceTable | None = None) -> ScenarioResult:
    """Price ``scenario`` for the hybrid and the cloud-only deployment."""
    table = prices if prices is not None else default_prices()
    day = scenario.price_date or table.as_of
    try:
        hybrid_lines = table.infrastructure["hybrid"]
        cloud_lines = table.infrastructure["cloud_only"]
    except KeyError as exc:
        raise ConfigError(f"price table has no infrastructure section for {exc}") from exc
    turn_price, notes = _turn_price(scenario, table, day)
    hybrid = _deployment(
        "hybrid",
        hybrid_lines,
        scenario,
        table,
        cache_hit_ratio=scenario.cache_hit_ratio,
        gated_share=scenario.gated_silence_share,
        turn_price=turn_price,
    )
    cloud_only = _deployment(
        "cloud-only",
        cloud_lines,
        scenario,
        table,
        cache_hit_ratio=0.0,
        gated_share=0.0,
        turn_price=turn_price,
    )
    return ScenarioResult(scenario, day, hybrid, cloud_only, tuple(notes))


# -- measured inputs ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measurements:
    """Usage summed over archived calls (the inputs of ``measured_scenario``)."""

    calls: int = 0
    minutes: float = 0.0
    audio_seconds: float = 0.0
    gated_seconds: float = 0.0
    llm_turns: float = 0.0
    faq_answers: float = 0.0
    tts_chars: float = 0.0
    tokens_in: Mapping[str, float] = field(default_factory=dict)
    tokens_out: Mapping[str, float] = field(default_factory=dict)


def measure(calls: Iterable[tuple[Usage, float]]) -> Measurements:
    """Sum ``(usage, minutes)`` pairs of archived calls.

    Turns answered at the edge (the FAQ responder, the answer cache) count as
    ``faq_answers``; turns answered by a model as ``llm_turns``.
    """
    count = 0
    totals = dict.fromkeys(("minutes", "audio_seconds", "gated_seconds", "llm_turns", "faq_answers", "tts_chars"),
                           0.0)
    tokens_in: dict[str, float] = {}
    tokens_out: dict[str, float] = {}
    for usage, minutes in calls:
        count += 1
        totals["minutes"] += minutes
        totals["audio_seconds"] += usage.audio_seconds
        totals["gated_seconds"] += usage.gated_seconds
        totals["tts_chars"] += sum(usage.tts_chars.values())
        for model, turns in usage.answers.items():
            totals["faq_answers" if model in _EDGE_ANSWERERS else "llm_turns"] += turns
        for model, counts in usage.tokens.items():
            tokens_in[model] = tokens_in.get(model, 0.0) + counts.input
            tokens_out[model] = tokens_out.get(model, 0.0) + counts.output
    return Measurements(count, tokens_in=tokens_in, tokens_out=tokens_out, **totals)


_EDGE_ANSWERERS = frozenset({"faq", "cache"})


def measured_scenario(
    measured: Measurements,
    *,
    calls_per_month: float | None = None,
    base: Scenario = DESIGN_PRESET,
    region: str | None = None,
) -> Scenario:
    """A scenario whose ratios come from real calls; what ``measured`` lacks comes from ``base``.

    Minutes a call, gated silence share (gated / audio seconds), edge answers
    (``faq_answers``) against LLM turns (usage ``llm_turns``; without it,
    estimated as input tokens / ``base.tokens_in_per_turn``), tokens a turn,
    model mix (share of input tokens per model) and TTS characters a minute.
    Voice providers are included: this is what the deployment really costs.
    """
    if measured.calls == 0 or measured.minutes <= 0:
        raise ConfigError("measured_scenario needs at least one call with a length")
    tokens_in = sum(measured.tokens_in.values())
    tokens_out = sum(measured.tokens_out.values())
    llm_turns = measured.llm_turns
    if llm_turns <= 0 and tokens_in > 0:
        llm_turns = tokens_in / base.tokens_in_per_turn if base.tokens_in_per_turn else 0.0
    all_turns = llm_turns + measured.faq_answers
    if tokens_in > 0:
        mix: Mapping[str, float] = {model: amount / tokens_in for model, amount in measured.tokens_in.items()}
        per_in, per_out = tokens_in / llm_turns, tokens_out / llm_turns
    else:
        mix, per_in, per_out = base.model_mix, base.tokens_in_per_turn, base.tokens_out_per_turn
    return Scenario(
        calls_per_month=calls_per_month if calls_per_month is not None else base.calls_per_month,
        minutes_per_call=measured.minutes / measured.calls,
        model_mix=MappingProxyType(dict(mix)),
        cache_hit_ratio=measured.faq_answers / all_turns if all_turns else base.cache_hit_ratio,
        gated_silence_share=(
            min(1.0, measured.gated_seconds / measured.audio_seconds)
            if measured.audio_seconds > 0
            else base.gated_silence_share
        ),
        llm_turns_per_minute=all_turns / measured.minutes if all_turns else base.llm_turns_per_minute,
        tokens_in_per_turn=per_in,
        tokens_out_per_turn=per_out,
        region=region or base.region,
        tier_models=base.tier_models,
        price_date=None,
        include_voice_providers=True,
        tts_chars_per_minute=measured.tts_chars / measured.minutes,
        name="measured",
    )


# -- output ------------------------------------------------------------------


def _money(amount: Decimal, places: str = "0.01") -> str:
    return f"${amount.quantize(Decimal(places), rounding=ROUND_HALF_UP):,}"


def _qty(value: Decimal) -> str:
    if value == value.to_integral_value():
        return f"{int(value):,}"
    return f"{float(value):,.2f}"


def format_scenario(result: ScenarioResult, *, width: int = 118) -> str:
    """A plain-text report: inputs, both bills line by line, totals, per call and the saving."""
    s = result.scenario
    inputs = Table(title=f"Scenario '{s.name}' (prices as of {result.price_date.isoformat()}, {s.region})")
    inputs.add_column("input")
    inputs.add_column("value", justify="right")
    ranked = sorted(s.model_mix.items(), key=lambda kv: -kv[1])
    mix = ", ".join(f"{tier} {share:.0%}" for tier, share in ranked)
    for label, value in (
        ("calls a month", f"{s.calls_per_month:,.0f}"),
        ("minutes a call", f"{s.minutes_per_call:g}"),
        ("LLM turns a minute", f"{s.llm_turns_per_minute:g}"),
        ("tokens a turn (in / out)", f"{s.tokens_in_per_turn:g} / {s.tokens_out_per_turn:g}"),
        ("model mix", mix),
        ("turns answered at the edge", f"{s.cache_hit_ratio:.1%}"),
        ("caller audio gated as silence", f"{s.gated_silence_share:.1%}"),
        ("telephony, STT, TTS included", "yes" if s.include_voice_providers else "no"),
    ):
        inputs.add_row(label, value)

    bills = Table(title="Monthly cost, USD")
    for column, justify in (("item", "left"), ("tier", "left"), ("hybrid", "right"), ("cloud-only", "right")):
        bills.add_column(column, justify=justify)  # type: ignore[arg-type]
    keys: list[str] = []
    tier_order = {"edge": 0, "cloud": 1}
    all_lines = sorted((*result.hybrid.lines, *result.cloud_only.lines), key=lambda item: tier_order.get(item.tier, 2))
    for line in all_lines:
        if line.key not in keys:
            keys.append(line.key)
    for key in keys:
        hybrid_line, cloud_line = result.hybrid.line(key), result.cloud_only.line(key)
        shown = hybrid_line or cloud_line
        assert shown is not None
        bills.add_row(
            shown.label,
            shown.tier,
            _money(hybrid_line.amount) if hybrid_line else "-",
            _money(cloud_line.amount) if cloud_line else "-",
        )
    bills.add_section()
    bills.add_row("total a month", "", _money(result.hybrid.monthly), _money(result.cloud_only.monthly))
    bills.add_row(
        "per call",
        "",
        _money(result.hybrid.per_call, "0.00001"),
        _money(result.cloud_only.per_call, "0.00001"),
    )

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    console.print(inputs)
    console.print(bills)
    share = (result.saving_share * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    console.print(f"Hybrid saves {_money(result.saving)} a month ({share} %) against cloud-only.")
    for note in result.notes:
        console.print(f"note: {note}")
    return buffer.getvalue()
