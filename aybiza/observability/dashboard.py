"""The built-in dashboard page, for people without Grafana.

``render_dashboard(snapshot)`` turns ``Metrics.snapshot()`` into a complete
HTML page — live calls, latency percentiles per stage, Region health, cache
hit ratio, cost today — rendered on the server, so it shows numbers even
with scripts off. A small inline script re-fetches the same snapshot as JSON
(``/api/dashboard`` by default) every 2 s and updates the numbers in place.
No external assets: no CDN, fonts or images (the machine may have no
internet). :func:`content_security_policy` allows exactly the page's own
inline style and script (by hash) and nothing from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from html import escape
from typing import Any

__all__ = ["API_PATH", "STAGE_LABELS", "content_security_policy", "render_dashboard", "format_ms", "format_ratio",
           "format_usd"]

API_PATH = "/api/dashboard"
"""Where the page's script fetches the JSON snapshot."""

STAGE_LABELS: dict[str, str] = {
    "voice_to_voice": "Voice to voice",
    "stt_final": "STT final transcript",
    "llm_first_token": "LLM first token",
    "tts_first_byte": "TTS first byte",
    "edge_frame": "Edge frame",
}
"""Stages in display order, with their labels."""

_DASH = "\u2013"


def format_ms(value: Any) -> str:
    """Milliseconds with sensible precision (``0.020 ms``, ``42.5 ms``, ``812 ms``)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return _DASH
    if value < 1:
        return f"{value:.3f} ms"
    if value < 100:
        return f"{value:.1f} ms"
    return f"{value:.0f} ms"


def format_ratio(value: Any) -> str:
    """A 0..1 ratio as a percentage (``87.5 %``)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return _DASH
    return f"{value * 100:.1f} %"


def format_usd(value: Any) -> str:
    """Dollars with four decimals (calls cost fractions of a cent)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return _DASH
    return f"${value:,.4f}"


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, Mapping) else None


_STYLE = """
:root { color-scheme: light dark; --ok: #1a7f37; --warn: #b35900; --bad: #c62828; --muted: #6b7280; }
* { box-sizing: border-box; }
body { font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; padding: 1.5rem; }
header { display: flex; align-items: baseline; gap: 1rem; flex-wrap: wrap; margin-bottom: 1rem; }
h1 { font-size: 1.4rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 0 0 .5rem; }
.status { color: var(--muted); font-size: .85rem; }
.status.offline { color: var(--bad); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(11rem, 1fr)); gap: .75rem; }
.card { border: 1px solid #8884; border-radius: .5rem; padding: .75rem 1rem; }
.card .label { color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 1.8rem; font-variant-numeric: tabular-nums; }
.panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr)); gap: 1rem;
          margin-top: 1rem; }
section { border: 1px solid #8884; border-radius: .5rem; padding: .75rem 1rem; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #8883; }
td.num, th.num { text-align: right; }
.state { font-weight: 600; }
.state-healthy { color: var(--ok); }
.state-degraded { color: var(--warn); }
.state-unhealthy { color: var(--bad); }
.empty { color: var(--muted); }
"""

# Formatting here must match format_ms / format_ratio / format_usd above.
_SCRIPT = """
(function () {
  "use strict";
  var DASH = "\\u2013";
  function num(v) { return typeof v === "number" && isFinite(v); }
  function ms(v) {
    if (!num(v)) return DASH;
    if (v < 1) return v.toFixed(3) + " ms";
    if (v < 100) return v.toFixed(1) + " ms";
    return v.toFixed(0) + " ms";
  }
  function ratio(v) { return num(v) ? (v * 100).toFixed(1) + " %" : DASH; }
  function usd(v) {
    if (!num(v)) return DASH;
    return "$" + v.toLocaleString("en-US", {minimumFractionDigits: 4, maximumFractionDigits: 4});
  }
  function set(id, text) { var el = document.getElementById(id); if (el) el.textContent = text; }
  function count(v) { return num(v) ? String(v) : DASH; }
  function render(s) {
    set("active-calls", count(s.active_calls));
    set("calls-total", count(s.calls_total));
    set("failovers", count(s.failovers));
    var errors = 0, kinds = s.errors || {};
    for (var k in kinds) { if (Object.prototype.hasOwnProperty.call(kinds, k)) errors += kinds[k]; }
    set("errors-total", String(errors));
    set("cache-hit-ratio", ratio(s.cache && s.cache.hit_ratio));
    set("cost-today", usd(s.cost_today_usd));
    var lat = s.latency || {};
    var rows = document.querySelectorAll("tr[data-stage]");
    for (var i = 0; i < rows.length; i++) {
      var stage = rows[i].getAttribute("data-stage"), v = lat[stage] || {};
      rows[i].querySelector(".p50").textContent = ms(v.p50_ms);
      rows[i].querySelector(".p95").textContent = ms(v.p95_ms);
      rows[i].querySelector(".samples").textContent = count(v.count);
    }
    var body = document.getElementById("regions"), regions = s.regions || {};
    var names = Object.keys(regions).sort();
    body.textContent = "";
    if (names.length === 0) {
      var tr = document.createElement("tr"), td = document.createElement("td");
      td.colSpan = 3; td.className = "empty"; td.textContent = "no Region reported yet";
      tr.appendChild(td); body.appendChild(tr);
    }
    names.forEach(function (name) {
      var r = regions[name] || {}, tr = document.createElement("tr");
      tr.setAttribute("data-region", name);
      var cells = [name, r.state || "unknown", ms(r.latency_ms)];
      cells.forEach(function (text, j) {
        var td = document.createElement("td");
        td.textContent = text;
        if (j === 1) td.className = "state state-" + (r.state || "unknown");
        if (j === 2) td.className = "num";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    set("cost-day", s.cost_day ? "(" + s.cost_day + ")" : "");
  }
  var status = document.getElementById("status");
  function refresh() {
    fetch(__API__, {cache: "no-store", headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (s) {
        render(s);
        status.className = "status";
        status.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function (e) {
        status.className = "status offline";
        status.textContent = "offline: " + e.message;
      });
  }
  setInterval(refresh, __INTERVAL_MS__);
})();
"""


def _card(ident: str, label: str, value: str, extra: str = "") -> str:
    return (
        f'<div class="card"><div class="label">{escape(label)} {extra}</div>'
        f'<div class="value" id="{ident}">{escape(value)}</div></div>'
    )


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else _DASH


def render_dashboard(
    snapshot: Mapping[str, Any],
    *,
    api_path: str = API_PATH,
    refresh_seconds: float = 2.0,
    title: str = "aybiza",
    pictures: str = "",
) -> str:
    """A complete HTML page of ``snapshot`` that refreshes itself from ``api_path``.

    ``pictures``: the console's server-rendered charts (:mod:`aybiza.console.pictures`), placed under the
    tables with the console's stylesheet (served from this origin).
    """
    errors = _get(snapshot, "errors")
    error_total = sum(v for v in errors.values() if isinstance(v, int)) if isinstance(errors, Mapping) else 0
    cost_day = _get(snapshot, "cost_day")
    cards = "".join(
        (
            _card("active-calls", "Live calls", _count(_get(snapshot, "active_calls"))),
            _card("cache-hit-ratio", "Cache hit ratio", format_ratio(_get(_get(snapshot, "cache"), "hit_ratio"))),
            _card(
                "cost-today",
                "Cost today",
                format_usd(_get(snapshot, "cost_today_usd")),
                f'<span id="cost-day">{escape(f"({cost_day})") if cost_day else ""}</span>',
            ),
            _card("calls-total", "Calls since start", _count(_get(snapshot, "calls_total"))),
            _card("failovers", "Failovers", _count(_get(snapshot, "failovers"))),
            _card("errors-total", "Errors", str(error_total)),
        )
    )

    latency = _get(snapshot, "latency")
    stages = list(STAGE_LABELS)
    if isinstance(latency, Mapping):
        stages += [s for s in latency if s not in STAGE_LABELS]
    latency_rows = []
    for stage in stages:
        entry = _get(latency, stage)
        latency_rows.append(
            f'<tr data-stage="{escape(stage)}"><td>{escape(STAGE_LABELS.get(stage, stage))}</td>'
            f'<td class="num p50">{escape(format_ms(_get(entry, "p50_ms")))}</td>'
            f'<td class="num p95">{escape(format_ms(_get(entry, "p95_ms")))}</td>'
            f'<td class="num samples">{escape(_count(_get(entry, "count")))}</td></tr>'
        )

    regions = _get(snapshot, "regions")
    region_rows = []
    if isinstance(regions, Mapping):
        for name in sorted(regions):
            entry = regions[name]
            state = str(_get(entry, "state") or "unknown")
            region_rows.append(
                f'<tr data-region="{escape(str(name))}"><td>{escape(str(name))}</td>'
                f'<td class="state state-{escape(state)}">{escape(state)}</td>'
                f'<td class="num">{escape(format_ms(_get(entry, "latency_ms")))}</td></tr>'
            )
    if not region_rows:
        region_rows.append('<tr><td colspan="3" class="empty">no Region reported yet</td></tr>')

    script = _SCRIPT.replace("__API__", json.dumps(api_path)).replace(
        "__INTERVAL_MS__", str(max(250, int(refresh_seconds * 1000)))
    )
    # json.dumps does not escape "</"; keep the script element closed only by us.
    script = script.replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} dashboard</title>
<style>{_STYLE}</style>
{'<link rel="stylesheet" href="/console/static/console.css">' if pictures else ""}
</head>
<body>
<header>
<h1>{escape(title)} live dashboard</h1>
<span id="status" class="status">rendered by the server; refreshing every {refresh_seconds:g} s</span>
{'<a href="/calls">Calls</a>' if pictures else ""}
</header>
<div class="cards">{cards}</div>
<div class="panels">
<section>
<h2>Latency per stage</h2>
<table id="latency">
<thead><tr><th>Stage</th><th class="num">p50</th><th class="num">p95</th>
<th class="num">Samples</th></tr></thead>
<tbody>{"".join(latency_rows)}</tbody>
</table>
</section>
<section>
<h2>Region health</h2>
<table>
<thead><tr><th>Region</th><th>State</th><th class="num">Latency</th></tr></thead>
<tbody id="regions">{"".join(region_rows)}</tbody>
</table>
</section>
</div>
{pictures}
<script>{script}</script>
</body>
</html>
"""


_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def content_security_policy(page: str) -> str:
    """A CSP for a page rendered here: its inline ``<style>`` and ``<script>`` by SHA-256, nothing else inline."""
    allowed: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii")
        allowed[kind].append(f"'sha256-{digest}'")
    scripts = " ".join(allowed["script"]) or "'none'"
    styles = " ".join([*allowed["style"], "'self'"])  # 'self': the console's stylesheet (dashboard pictures)
    return (f"default-src 'self'; script-src {scripts}; style-src {styles}; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'none'")
