"""``/calls/{id}``: one call as a time axis, per-turn waterfalls, transcript, player, route and cost.

Everything comes from the call record as stored (transcripts redacted as the
journal wrote them; nothing is re-derived from other sources). What the
record does not hold is drawn as missing, never guessed silently:

- A turn's place on the axis is its record's ``at`` (when the caller's final
  transcript arrived) minus its recognition latency: the end of the caller's
  speech. How long the caller spoke and the agent talked are not recorded;
  the bars are estimated from the words (about 2.5 words/s spoken, 15
  characters/s synthesised) and drawn hatched to say so.
- The waterfall is measured from the end of the caller's speech with the
  ledger's first sample of each stage in that turn: recognition final
  (``stt_final``), model first token (``stt_final + llm_first_token``, or the
  cached answer), first audio out (``voice_to_voice``). End of turn and
  playback done are shown when a turn's timings carry them
  (``end_of_turn``, ``playback_done``) and "not recorded" otherwise.
- Tool calls sit at their ``at_s``, failovers at the turn's
  ``failover_at_s`` (:data:`~aybiza.pipeline.ledger.FAILOVER_AT`), barge-ins
  at the end of the interrupted answer, language switches where a turn's
  language differs from the one before. Quality is kept per call (its worst
  window), not per moment: a dip is marked on the call, its time "not
  recorded", unless the record lists ``quality["dips"]`` as ``{at_s, score}``.

Each turn carries ``data-seek`` (seconds into the call); the page's script
(``console.js``) seeks the recording there when the turn is clicked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from pydantic import BaseModel

from ..edge.call_index import LOW_QUALITY_SCORE
from ..edge.records import CallRecord, TurnRecord
from ..pipeline.ledger import FAILOVER_AT
from .page import format_duration, format_time, layout

__all__ = ["TurnPlot", "WATERFALL", "plot_turns", "recording_of", "render_call", "waterfall_of"]

WORDS_PER_S = 2.5
CHARS_PER_S = 15.0
_DASH = "\u2013"

WATERFALL: tuple[tuple[str, str], ...] = (
    ("speech_end", "end of speech"),
    ("end_of_turn", "end of turn"),
    ("stt_final", "recognition final"),
    ("first_token", "model first token"),
    ("first_audio", "first audio out"),
    ("playback_done", "playback done"),
)
"""The waterfall's stages in order: key and label."""


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def waterfall_of(turn: TurnRecord) -> dict[str, float | None]:
    """Seconds after the end of the caller's speech at which each stage of :data:`WATERFALL` happened (None:
    not recorded)."""
    timings = turn.timings
    stt = _num(timings.get("stt_final"))
    first_token = None
    if "llm" in turn.cached and _num(timings.get("cache_answer")) is not None:
        first_token = (stt or 0.0) + float(timings["cache_answer"])
    elif _num(timings.get("llm_first_token")) is not None:
        first_token = (stt or 0.0) + float(timings["llm_first_token"])
    return {
        "speech_end": 0.0 if turn.user else None,
        "end_of_turn": _num(timings.get("end_of_turn")),
        "stt_final": stt,
        "first_token": first_token,
        "first_audio": _num(timings.get("voice_to_voice")),
        "playback_done": _num(timings.get("playback_done")),
    }


@dataclass
class TurnPlot:
    """Where a turn sits on the call's axis (seconds into the call) and what happened in it."""

    turn: TurnRecord
    caller: tuple[float, float] | None  # estimated speech span
    agent: tuple[float, float] | None  # estimated answer span (from first audio out)
    agent_measured: bool  # the answer's start is measured (voice_to_voice), not guessed
    seek: float
    language_switch: str | None = None
    failover_at: float | None = None
    events: list[tuple[str, float, str]] = field(default_factory=list)  # (kind, at, label)


def plot_turns(record: CallRecord) -> list[TurnPlot]:
    """The turns of ``record`` placed on its time axis (see the module's notes for what is estimated)."""
    plots: list[TurnPlot] = []
    previous_language = record.turns[0].language if record.turns else record.language
    for turn in sorted(record.turns, key=lambda t: t.turn_id):
        arrived = max(0.0, turn.at - record.started_at)
        stt = _num(turn.timings.get("stt_final")) or 0.0
        speech_end = max(0.0, arrived - stt)
        caller = None
        if turn.user:
            spoken = max(0.6, len(turn.user.split()) / WORDS_PER_S)
            caller = (max(0.0, speech_end - spoken), speech_end)
        v2v = _num(turn.timings.get("voice_to_voice"))
        agent = None
        start = speech_end + v2v if v2v is not None else arrived
        if turn.agent:
            agent = (start, start + max(0.5, len(turn.agent) / CHARS_PER_S))
        plot = TurnPlot(turn, caller, agent, v2v is not None, seek=caller[0] if caller else start)
        if turn.language != previous_language:
            plot.language_switch = f"{previous_language} \u2192 {turn.language}"
        previous_language = turn.language
        plot.failover_at = _num(turn.timings.get(FAILOVER_AT))
        plots.append(plot)
    for index, plot in enumerate(plots):  # an answer ends where the next caller turn starts, at the latest
        following = plots[index + 1] if index + 1 < len(plots) else None
        if plot.agent and following and following.caller and plot.agent[1] > following.caller[0]:
            plot.agent = (plot.agent[0], max(plot.agent[0] + 0.1, following.caller[0]))
    return plots


def recording_of(record: CallRecord) -> dict[str, Any] | None:
    """The record's recording reference (``url`` or ``key``, ``duration_s``), or None; tolerant of its shape."""
    recording: Any = getattr(record, "recording", None)
    if isinstance(recording, BaseModel):  # a typed model rather than a mapping
        recording = recording.model_dump(mode="json")
    if isinstance(recording, dict) and (recording.get("url") or recording.get("key") or recording.get("path")):
        return recording
    return None


# -- the SVG -------------------------------------------------------------------------------------

_W, _LEFT, _RIGHT = 880, 70, 12
_LANES = (("caller", "Caller", 30), ("agent", "Agent", 62), ("events", "Events", 98))


def _axis(duration: float) -> tuple[float, list[float]]:
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600) if duration / s <= 10), 1200)
    ticks = [float(t) for t in range(0, int(duration) + 1, step)]
    return float(step), ticks


def _timeline_svg(record: CallRecord, plots: Sequence[TurnPlot]) -> str:
    end = max([record.duration_s, 1.0] + [p.agent[1] for p in plots if p.agent]
              + [p.caller[1] for p in plots if p.caller])
    scale = (_W - _LEFT - _RIGHT) / end
    height = 140

    def x(seconds: float) -> float:
        return _LEFT + seconds * scale

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="timeline" class="chart timeline" role="img" '
             f'viewBox="0 0 {_W} {height}" width="{_W}" height="{height}" data-duration="{end:.3f}" '
             f'aria-label="Timeline of the call"><title>Timeline of the call ({end:.1f} s)</title>',
             '<defs><pattern id="est" width="6" height="6" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><rect width="3" height="6" fill="#ffffff" fill-opacity="0.35"/>'
             '</pattern></defs>']
    for _, label, y in _LANES:
        parts.append(f'<text x="4" y="{y + 13}" class="lane">{label}</text>')
    _, ticks = _axis(end)
    for tick in ticks:
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="22" y2="{height - 16}" class="grid"/>'
                     f'<text x="{x(tick):.1f}" y="{height - 4}" text-anchor="middle" class="tick">{tick:g} s</text>')
    for plot in plots:
        turn = plot.turn
        parts.append(f'<g class="turn" data-turn="{turn.turn_id}" data-seek="{plot.seek:.3f}" tabindex="0">')
        if plot.caller:
            a, b = plot.caller
            parts.append(f'<rect class="caller" x="{x(a):.1f}" y="30" width="{max(2.0, (b - a) * scale):.1f}" '
                         f'height="18" fill="#2563eb"><title>turn {turn.turn_id}, caller (span estimated): '
                         f'{escape(turn.user[:80])}</title></rect>'
                         f'<rect x="{x(a):.1f}" y="30" width="{max(2.0, (b - a) * scale):.1f}" height="18" '
                         f'fill="url(#est)"/>')
        if plot.agent:
            a, b = plot.agent
            parts.append(f'<rect class="agent" x="{x(a):.1f}" y="62" width="{max(2.0, (b - a) * scale):.1f}" '
                         f'height="18" fill="#16a34a"><title>turn {turn.turn_id}, agent '
                         f'(start {"measured" if plot.agent_measured else "estimated"}, length estimated): '
                         f'{escape(turn.agent[:80])}</title></rect>')
        parts.append("</g>")
        if turn.interrupted and plot.agent:
            parts.append(_marker("barge-in", plot.agent[1], x, "#dc2626", f"barge-in: the caller spoke over turn "
                                 f"{turn.turn_id}'s answer"))
        for use in turn.tool_calls:
            span = (use.duration_ms or 0) / 1000 * scale
            parts.append(f'<g class="event event-tool" data-kind="tool" data-at="{use.at_s:.3f}">'
                         f'<rect x="{x(use.at_s):.1f}" y="100" width="{max(4.0, span):.1f}" height="12" fill="#d97706">'
                         f'<title>tool {escape(use.name)} ({escape(use.outcome)}'
                         f'{f", {use.duration_ms:.0f} ms" if use.duration_ms is not None else ""})</title></rect>'
                         f'<text x="{x(use.at_s):.1f}" y="97" class="event-label">{escape(use.name[:16])}</text></g>')
        if plot.failover_at is not None:
            parts.append(_marker("failover", plot.failover_at, x, "#7c3aed", f"failover in turn {turn.turn_id}"))
        if plot.language_switch:
            parts.append(_marker("language", plot.seek, x, "#0891b2", f"language {plot.language_switch}"))
    for dip in _dips(record):
        parts.append(_marker("quality", dip[0], x, "#db2777", f"quality dip: score {dip[1]:.2f}"))
    parts.append("</svg>")
    return "".join(parts)


def _marker(kind: str, at: float, x: Any, colour: str, label: str) -> str:
    px = x(at)
    return (f'<g class="event event-{kind}" data-kind="{kind}" data-at="{at:.3f}">'
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="26" y2="116" stroke="{colour}" stroke-width="2"/>'
            f'<polygon points="{px - 5:.1f},116 {px + 5:.1f},116 {px:.1f},108" fill="{colour}"/>'
            f"<title>{escape(label)} at {at:.1f} s</title></g>")


def _dips(record: CallRecord) -> list[tuple[float, float]]:
    dips = record.quality.get("dips") if isinstance(record.quality, dict) else None
    out: list[tuple[float, float]] = []
    for dip in dips if isinstance(dips, list) else []:
        at, score = _num(dip.get("at_s")) if isinstance(dip, dict) else None, None
        if isinstance(dip, dict):
            score = _num(dip.get("score"))
        if at is not None and score is not None:
            out.append((at, score))
    return out


def _waterfall_svg(turn: TurnRecord) -> str:
    stages = waterfall_of(turn)
    known = [v for v in stages.values() if v is not None]
    top = max(known + [0.1])
    width, label_w, row = 420, 130, 16
    height = row * len(WATERFALL) + 6
    scale = (width - label_w - 70) / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart waterfall" role="img" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" data-turn="{turn.turn_id}">'
             f"<title>Turn {turn.turn_id}: stages after the end of the caller's speech</title>"]
    previous = 0.0
    for index, (key, label) in enumerate(WATERFALL):
        y = 3 + index * row
        value = stages[key]
        parts.append(f'<g class="stage" data-stage="{key}"><text x="{label_w - 6}" y="{y + 11}" text-anchor="end" '
                     f'class="name">{label}</text>')
        if value is None:
            parts.append(f'<text x="{label_w}" y="{y + 11}" class="missing">not recorded</text></g>')
            continue
        start = min(previous, value)
        bar = max(2.0, (value - start) * scale)
        parts.append(f'<rect x="{label_w + start * scale:.1f}" y="{y + 2}" width="{bar:.1f}" '
                     f'height="{row - 5}" fill="#2563eb"><title>{label}: +{value * 1000:.0f} ms</title></rect>'
                     f'<text x="{label_w + value * scale + 4:.1f}" y="{y + 11}" class="value">'
                     f"+{value * 1000:.0f} ms</text></g>")
        previous = max(previous, value)
    parts.append("</svg>")
    return "".join(parts)


# -- the page -------------------------------------------------------------------------------------

def _dl(items: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v or _DASH)}</dd>" for k, v in items) + "</dl>"


def _route(record: CallRecord) -> str:
    route = record.route
    usage = record.usage
    failovers = ", ".join(f"{a} \u2192 {b}" for a, b in usage.failovers) or "none"
    models = "".join(f"<tr><td>{escape(model)}</td><td class=\"num\">{use.input}</td>"
                     f"<td class=\"num\">{use.output}</td><td class=\"num\">{usage.answers.get(model, 0)}</td></tr>"
                     for model, use in usage.tokens.items())
    answered = "".join(f"<li>{escape(who)}: {count} turn(s)</li>" for who, count in usage.answers.items())
    return (_dl([("Region", route.get("region", "")), ("Fallbacks", route.get("fallbacks", "")),
                 ("Regions tried", route.get("regions_tried", "")), ("Model tier", route.get("model_tier", "")),
                 ("Quality tier", route.get("quality_tier", "")), ("Codec", route.get("codec", "")),
                 ("Failovers", failovers)])
            + ('<table class="models"><thead><tr><th>Model</th><th class="num">Tokens in</th>'
               '<th class="num">Tokens out</th><th class="num">Turns</th></tr></thead>'
               f"<tbody>{models}</tbody></table>" if models else '<p class="missing">no model tokens recorded</p>')
            + (f"<ul class=\"answered\">{answered}</ul>" if answered else ""))


def _cost(record: CallRecord) -> str:
    cost = record.cost
    if not cost:
        return '<p class="missing">no cost recorded</p>'
    found = cost.get("lines")
    lines: list[Any] = found if isinstance(found, list) else []
    rows = "".join(
        f"<tr><td>{escape(str(line.get('kind', '')))}</td><td>{escape(str(line.get('detail', '')))}</td>"
        f"<td class=\"num\">{escape(str(line.get('quantity', '')))} {escape(str(line.get('unit', '')))}</td>"
        f"<td class=\"num\">${escape(str(line.get('amount', '')))}</td></tr>"
        for line in lines if isinstance(line, dict))
    return (f'<table id="cost-lines"><thead><tr><th>Kind</th><th>Detail</th><th class="num">Quantity</th>'
            f'<th class="num">Amount</th></tr></thead><tbody>{rows}</tbody>'
            f'<tfoot><tr><th colspan="3">Total ({escape(str(cost.get("currency", "USD")))})</th>'
            f'<th class="num" id="cost-total">${escape(str(cost.get("total_usd", "")))}</th></tr></tfoot></table>')


def _transcript(record: CallRecord, plots: Sequence[TurnPlot]) -> str:
    if record.transcript_purged:
        note = '<p class="missing">transcript removed by the retention policy; timings remain</p>'
    else:
        note = ""
    items = []
    for plot in plots:
        turn = plot.turn
        lines = []
        if turn.user:
            lines.append(f'<p class="said caller"><b>Caller</b> {escape(turn.user)}</p>')
        for use in turn.tool_calls:
            duration = f", {use.duration_ms:.0f} ms" if use.duration_ms is not None else ""
            lines.append(f'<p class="said tool"><b>Tool</b> {escape(use.name)} ({escape(use.outcome)}{duration})</p>')
        if turn.agent:
            lines.append(f'<p class="said agent"><b>Agent</b> {escape(turn.agent)}'
                         f'{" <em>(interrupted)</em>" if turn.interrupted else ""}</p>')
        if not lines:
            lines.append('<p class="missing">nothing said (or removed)</p>')
        flags = " ".join(f'<span class="flag">{escape(text)}</span>' for text in (
            *(["cached: " + ", ".join(turn.cached)] if turn.cached else []),
            *([plot.language_switch] if plot.language_switch else []),
            *(["failover"] if plot.failover_at is not None else [])))
        items.append(f'<li class="turn" data-turn="{turn.turn_id}" data-seek="{plot.seek:.3f}">'
                     f'<div class="turn-head"><button type="button" class="seek" data-seek="{plot.seek:.3f}">'
                     f"\u25b6 {plot.seek:.1f} s</button> turn {turn.turn_id} · {escape(turn.language)} {flags}</div>"
                     f'{"".join(lines)}<div class="waterfall-box">{_waterfall_svg(turn)}</div></li>')
    return note + (f'<ol id="transcript">{"".join(items)}</ol>' if items else '<p class="missing">no turns</p>')


def _player(record: CallRecord) -> str:
    recording = recording_of(record)
    if recording is None:
        return '<p id="no-recording" class="missing">no recording</p>'
    duration = _num(recording.get("duration_s"))
    return (f'<audio id="player" controls preload="metadata" src="/calls/{escape(record.call_id)}/recording">'
            "your browser cannot play the recording</audio>"
            f'<span id="player-status" class="muted">{format_duration(duration)} recorded</span>')


def _quality(record: CallRecord) -> str:
    quality = record.quality or {}
    low = _num(quality.get("min_score"))
    if not quality:
        return "not recorded"
    worst = _DASH if low is None else f"{low:g}"
    text = f"tier {quality.get('tier', _DASH)}, last score {quality.get('score', _DASH)}, worst {worst}"
    if low is not None and low <= LOW_QUALITY_SCORE and not _dips(record):
        text += " (a dip: when, not recorded)"
    return text


def render_call(record: CallRecord) -> str:
    """The whole ``/calls/{id}`` page."""
    plots = plot_turns(record)
    incidents = "".join(f"<li>{escape(i.kind.value)} at {i.at_s:.1f} s: {escape(i.detail)}</li>"
                        for i in record.incidents)
    summary = _dl([
        ("Call", record.call_id), ("Status", record.status), ("Agent", record.agent_id),
        ("Transport", record.transport), ("Caller country", record.caller_country),
        ("Started (UTC)", format_time(record.started_at)), ("Duration", format_duration(record.duration_s)),
        ("End reason", record.outcome or ""), ("Detail", record.outcome_detail),
        ("Language", record.language), ("Quality", _quality(record)),
        ("Barge-ins", str(max(record.usage.interruptions, sum(t.interrupted for t in record.turns)))),
    ])
    body = f"""<header><h1>Call {escape(record.call_id)}</h1>
<a href="/api/calls/{escape(record.call_id)}" class="muted">JSON</a></header>
<section class="summary">{summary}</section>
<section><h2>Recording</h2>{_player(record)}</section>
<section><h2>Timeline</h2>
<p class="muted">Bars: caller and agent speech (lengths estimated from the words, hatched); markers: barge-ins,
tool calls, failovers, language switches, quality dips. Click a turn to hear it.</p>
{_timeline_svg(record, plots)}
<ul class="legend"><li class="k-barge">barge-in</li><li class="k-tool">tool call</li>
<li class="k-failover">failover</li><li class="k-language">language switch</li>
<li class="k-quality">quality dip</li></ul>
</section>
<section><h2>Transcript and stages</h2>{_transcript(record, plots)}</section>
<div class="panels">
<section><h2>Route and models</h2>{_route(record)}</section>
<section><h2>Cost</h2>{_cost(record)}</section>
</div>
<section><h2>Incidents</h2>{f"<ul>{incidents}</ul>" if incidents else '<p class="muted">none</p>'}</section>"""
    return layout(f"Call {record.call_id}", body, script=True)
