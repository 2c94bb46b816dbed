"""The dashboard's pictures: the last hour of archived calls drawn as SVG, numbers readable without script.

- latency percentiles per stage (p50 and p95 per 5 minutes, one small chart a stage),
- calls by caller country (bars),
- cost by kind of line and by model,
- cache hit ratio over time,
- Region health history: per Region and 5 minutes, calls routed there and failovers away from it, with
  its state now (from the process's metrics).

Drawn from the archive (calls started in the window, at most
:data:`MAX_CALLS`), so the pictures agree across processes sharing it and
survive restarts. Samples are placed at their call's start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from html import escape
from typing import Any

from ..edge.records import CallRecord
from .page import format_time
from .svg import bar_chart, hbar_chart, line_chart

__all__ = ["BUCKET_S", "MAX_CALLS", "STAGES", "WINDOW_S", "percentile", "render_pictures"]

WINDOW_S = 3600.0
BUCKET_S = 300.0
MAX_CALLS = 5000
STAGES: dict[str, str] = {
    "stt_final": "Recognition final",
    "llm_first_token": "Model first token",
    "tts_first_byte": "TTS first byte",
    "voice_to_voice": "Voice to voice",
}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method (non-empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _usd(value: float) -> str:
    return f"${value:,.4f}"


def _clock(epoch: float) -> str:
    return format_time(epoch)[11:16]


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _latency(records: Sequence[CallRecord], start: float, buckets: int) -> str:
    samples: dict[str, list[list[float]]] = {stage: [[] for _ in range(buckets)] for stage in STAGES}
    for record in records:
        index = min(buckets - 1, int((record.started_at - start) // BUCKET_S))
        for stage, seconds in record.timings:
            if stage in samples:
                samples[stage][index].append(seconds * 1000)
    charts = []
    for stage, label in STAGES.items():
        points = [(start + (i + 0.5) * BUCKET_S, values) for i, values in enumerate(samples[stage])]
        series = [(name, [(x, percentile(v, q) if v else None) for x, v in points]) for name, q in
                  (("p50", 0.5), ("p95", 0.95))]
        every = [s for values in samples[stage] for s in values]
        numbers = (f"p50 {_ms(percentile(every, 0.5))} · p95 {_ms(percentile(every, 0.95))} · {len(every)} samples"
                   if every else "no samples")
        charts.append(f'<figure class="small" data-stage="{stage}"><figcaption>{escape(label)} '
                      f'<span class="numbers">{escape(numbers)}</span></figcaption>'
                      + line_chart(series, label=f"{label}, p50 and p95 per 5 minutes", x_range=(start, start +
                                   buckets * BUCKET_S), fmt=_ms, x_fmt=_clock) + "</figure>")
    return '<div class="multiples" id="latency-multiples">' + "".join(charts) + "</div>"


def _countries(records: Sequence[CallRecord]) -> str:
    counts: dict[str, int] = {}
    for record in records:
        key = record.caller_country or "unknown"
        counts[key] = counts.get(key, 0) + 1
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:12]
    return bar_chart([(k, float(v)) for k, v in items], label="Calls by caller country, last hour",
                     fmt=lambda v: f"{v:.0f}", css="bars countries")


def _costs(records: Sequence[CallRecord]) -> tuple[str, str]:
    kinds: dict[str, Decimal] = {}
    models: dict[str, Decimal] = {}
    for record in records:
        lines = (record.cost or {}).get("lines")
        for line in lines if isinstance(lines, list) else []:
            if not isinstance(line, Mapping):
                continue
            kind, amount = str(line.get("kind", "?")), _decimal(line.get("amount"))
            kinds[kind] = kinds.get(kind, Decimal(0)) + amount
            if kind.startswith("llm_"):
                model = str(line.get("detail", "?"))
                models[model] = models.get(model, Decimal(0)) + amount
    by_kind = hbar_chart(sorted(((k, float(v)) for k, v in kinds.items()), key=lambda kv: -kv[1]),
                         label="Cost by kind, last hour", fmt=_usd, css="hbars cost-kind")
    by_model = hbar_chart(sorted(((k, float(v)) for k, v in models.items()), key=lambda kv: -kv[1]),
                          label="Model cost by model, last hour", fmt=_usd, width=520, name_w=300,
                          css="hbars cost-model")
    return by_kind, by_model


def _cache(records: Sequence[CallRecord], start: float, buckets: int) -> str:
    hits = [0] * buckets
    looks = [0] * buckets
    for record in records:
        index = min(buckets - 1, int((record.started_at - start) // BUCKET_S))
        for use in record.usage.cache.values():
            hits[index] += use.hits
            looks[index] += use.hits + use.misses
    points = [(start + (i + 0.5) * BUCKET_S, hits[i] / looks[i] if looks[i] else None) for i in range(buckets)]
    total = sum(looks)
    numbers = f"{sum(hits) / total * 100:.1f} % of {total} lookups" if total else "no lookups"
    return (f'<p class="numbers" id="cache-numbers">{escape(numbers)}</p>'
            + line_chart([("hit ratio", points)], label="Cache hit ratio per 5 minutes",
                         x_range=(start, start + buckets * BUCKET_S), fmt=lambda v: f"{v * 100:.0f} %",
                         x_fmt=_clock, y_max=1.0, width=420, css="lines cache"))


def _regions(records: Sequence[CallRecord], start: float, buckets: int, states: Mapping[str, Any]) -> str:
    routed: dict[str, list[int]] = {}
    away: dict[str, list[int]] = {}
    for record in records:
        index = min(buckets - 1, int((record.started_at - start) // BUCKET_S))
        region = record.route.get("region", "")
        if region:
            routed.setdefault(region, [0] * buckets)[index] += 1
        for from_region, _ in record.usage.failovers:
            away.setdefault(from_region, [0] * buckets)[index] += 1
    names = sorted(set(routed) | set(away))
    quiet = sorted(set(states) - set(names))
    charts = []
    for name in names:
        calls, failed = routed.get(name, [0] * buckets), away.get(name, [0] * buckets)
        state = _state(states, name)
        xs = [start + (i + 0.5) * BUCKET_S for i in range(buckets)]
        total_routed, total_away = int(sum(calls)), int(sum(failed))
        chart = line_chart([("calls routed", list(zip(xs, [float(c) for c in calls], strict=True))),
                            ("failovers away", list(zip(xs, [float(f) for f in failed], strict=True)))],
                           label=f"Region {name}: calls routed and failovers away per 5 minutes",
                           x_range=(start, start + buckets * BUCKET_S), fmt=lambda v: f"{v:.0f}", x_fmt=_clock)
        charts.append(f'<figure class="small" data-region="{escape(name)}"><figcaption>{escape(name)} '
                      f'<span class="state state-{escape(str(state))}">{escape(str(state))}</span> '
                      f'<span class="numbers">{total_routed} calls, {total_away} failovers away</span></figcaption>'
                      f"{chart}</figure>")
    idle = "".join(f'<li data-region="{escape(name)}">{escape(name)} <span class="state state-'
                   f'{escape(str(_state(states, name)))}">{escape(str(_state(states, name)))}</span>: no calls</li>'
                   for name in quiet)
    if not charts and not idle:
        return '<p class="empty">no Region reported yet</p>'
    return ('<div class="multiples" id="region-history">' + "".join(charts) + "</div>"
            + (f'<ul class="idle-regions">{idle}</ul>' if idle else ""))


def _state(states: Mapping[str, Any], name: str) -> str:
    entry = states.get(name)
    return str(entry.get("state", "unknown")) if isinstance(entry, Mapping) else "unknown"


def render_pictures(records: Sequence[CallRecord], *, regions: Mapping[str, Any] | None = None,
                    now: float | None = None) -> str:
    """The pictures' HTML (sections of inline SVG) for ``records`` started in the hour before ``now``."""
    now = time.time() if now is None else now
    buckets = int(WINDOW_S // BUCKET_S)
    start = now - WINDOW_S
    records = [r for r in records if r.started_at >= start]
    by_kind, by_model = _costs(records)
    return f"""<div class="pictures" id="pictures">
<h2 class="wide">Last hour: {len(records)} calls</h2>
<section class="wide"><h2>Latency per stage (p50, p95)</h2>{_latency(records, start, buckets)}</section>
<section><h2>Calls by country</h2>{_countries(records)}</section>
<section><h2>Cost by kind</h2>{by_kind}<h2>Model cost by model</h2>{by_model}</section>
<section><h2>Cache hit ratio</h2>{_cache(records, start, buckets)}</section>
<section class="wide"><h2>Region health history (calls routed, failovers away)</h2>
{_regions(records, start, buckets, regions or {})}</section>
</div>"""
