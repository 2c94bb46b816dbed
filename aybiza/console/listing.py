"""``/calls``: the archived calls as a server-rendered table with a filter form (works without JavaScript).

Rows come from the archive's derived columns (:mod:`aybiza.edge.call_index`),
never from the records' JSON, so a page costs two indexed queries however
large the archive. The count is capped (``10,000+``): counting every match of
a broad filter over millions of rows would cost more than the page.
"""

from __future__ import annotations

from html import escape

from ..edge.call_index import FLAG_COLUMNS, CallRow
from ..errors import EndReason
from .page import format_duration, format_time, layout
from .query import PER_PAGE, ListQuery

__all__ = ["COUNT_CAP", "render_list"]

COUNT_CAP = 10_000
"""Matches counted at most."""
_DASH = "\u2013"

_FLAG_LABELS = {"failover": "failover", "barge_in": "barge-in", "tool_call": "tool calls", "transfer": "transfer",
                "low_quality": "low quality"}
_TRANSPORTS = ("twilio", "webrtc")


def _cost(value: float | None) -> str:
    return "\u2013" if value is None else f"${value:,.4f}"


def _flags(row: CallRow) -> str:
    flags = []
    if row.failovers:
        flags.append(("failover", f"failover ×{row.failovers}"))
    if row.barge_ins:
        flags.append(("barge_in", f"barge-in ×{row.barge_ins}"))
    if row.tool_calls:
        flags.append(("tool_call", f"tools ×{row.tool_calls}"))
    if row.transferred:
        flags.append(("transfer", "transfer"))
    if row.low_quality:
        flags.append(("low_quality", "low quality"))
    return " ".join(f'<span class="flag flag-{kind}">{escape(text)}</span>' for kind, text in flags)


def _row(row: CallRow) -> str:
    model = " / ".join(part for part in (row.region, row.model) if part) or "\u2013"
    return (f'<tr data-call="{escape(row.call_id)}">'
            f'<td><a href="/calls/{escape(row.call_id)}">{escape(format_time(row.started_at))}</a></td>'
            f"<td>{escape(row.caller_country or _DASH)}</td><td>{escape(row.agent_id)}</td>"
            f"<td>{escape(row.transport)}</td><td>{escape(model)}</td>"
            f'<td class="num">{escape(format_duration(row.duration_s))}</td>'
            f'<td class="outcome">{escape(row.outcome or row.status)}</td>'
            f'<td class="num">{escape(_cost(row.cost_usd))}</td><td class="flags">{_flags(row)}</td></tr>')


def _input(name: str, label: str, value: str, *, kind: str = "text", extra: str = "") -> str:
    return (f'<label>{escape(label)} <input type="{kind}" name="{name}" value="{escape(value)}" {extra}></label>')


def _select(name: str, label: str, value: str, options: tuple[str, ...]) -> str:
    items = "".join(f'<option value="{escape(option)}"{" selected" if option == value else ""}>'
                    f"{escape(option or 'any')}</option>" for option in ("", *options))
    return f'<label>{escape(label)} <select name="{name}">{items}</select></label>'


def _form(query: ListQuery) -> str:
    given = dict(query.params)
    chosen = {value for key, value in query.params if key == "flag"}
    flags = "".join(f'<label class="check"><input type="checkbox" name="flag" value="{flag}"'
                    f'{" checked" if flag in chosen else ""}> {escape(_FLAG_LABELS[flag])}</label>'
                    for flag in FLAG_COLUMNS)
    per_page = "".join(f'<option{" selected" if size == query.per_page else ""}>{size}</option>' for size in PER_PAGE)
    return ('<form method="get" action="/calls" class="filters">'
            + _input("country", "Country", given.get("country", ""), extra='maxlength="2" size="3" placeholder="GB"')
            + _input("agent", "Agent", given.get("agent", ""), extra='maxlength="64" size="10"')
            + _select("transport", "Transport", given.get("transport", ""), _TRANSPORTS)
            + _input("region", "Region", given.get("region", ""), extra='maxlength="64" size="10"')
            + _input("model", "Model", given.get("model", ""), extra='maxlength="128" size="14"')
            + _select("outcome", "End reason", given.get("outcome", ""), tuple(reason.value for reason in EndReason))
            + _input("min_duration", "Min s", given.get("min_duration", ""), kind="number",
                     extra='min="0" step="any" class="short"')
            + _input("max_duration", "Max s", given.get("max_duration", ""), kind="number",
                     extra='min="0" step="any" class="short"')
            + _input("min_cost", "Min $", given.get("min_cost", ""), kind="number",
                     extra='min="0" step="any" class="short"')
            + _input("max_cost", "Max $", given.get("max_cost", ""), kind="number",
                     extra='min="0" step="any" class="short"')
            + _input("hours", "Last hours", given.get("hours", ""), kind="number", extra='min="1" class="short"')
            + f'<fieldset><legend>Flags</legend>{flags}</fieldset>'
            + f'<label>Per page <select name="per_page">{per_page}</select></label>'
            + '<button type="submit">Filter</button> <a href="/calls">clear</a></form>')


def render_list(query: ListQuery, rows: list[CallRow], total: int, *, live: int = 0) -> str:
    """The whole ``/calls`` page: form, the page of ``rows`` out of ``total`` matches, and page links."""
    pages = max(1, -(-total // query.per_page))
    shown = f"{COUNT_CAP:,}+" if total >= COUNT_CAP else f"{total:,}"
    body = "".join(_row(row) for row in rows) or '<tr><td colspan="9" class="empty">no call matches</td></tr>'
    links = []
    if query.page > 1:
        links.append(f'<a rel="prev" href="{escape(query.link(query.page - 1))}">newer</a>')
    links.append(f'<span id="page-of">page {query.page} of {pages if total < COUNT_CAP else "many"}</span>')
    if query.page * query.per_page < total:
        links.append(f'<a rel="next" href="{escape(query.link(query.page + 1))}">older</a>')
    content = f"""<header><h1>Calls</h1>
<span class="muted"><span id="match-count">{escape(shown)}</span> archived calls match · {live} live now</span></header>
{_form(query)}
<table id="calls">
<thead><tr><th>Started (UTC)</th><th>Country</th><th>Agent</th><th>Transport</th><th>Region / model</th>
<th class="num">Duration</th><th>End reason</th><th class="num">Cost</th><th>Flags</th></tr></thead>
<tbody>{body}</tbody>
</table>
<p class="pages">{" ".join(links)}</p>"""
    return layout("Calls", content)
