"""Tests for the built-in dashboard page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aybiza.observability.dashboard import format_ms, format_ratio, format_usd, render_dashboard
from aybiza.observability.metrics import Metrics


def live_snapshot() -> dict[str, Any]:
    metrics = Metrics()
    for _ in range(3):
        metrics.call_started()
    metrics.call_ended(0.0412, region="us-east-1", country="US", model="m", reason="hangup")
    for seconds in (0.5, 0.6, 0.7, 0.8):
        metrics.observe_timing("voice_to_voice", seconds)
    metrics.observe_timing("edge_frame", 21e-6)
    for hit in (True, True, True, False, True, True, True, True):
        metrics.cache("agent_config", hit)
    metrics.region_state("us-east-1", "healthy", 0.0123)
    metrics.region_state("eu-west-2", "unhealthy")
    return metrics.snapshot()


def test_page_shows_the_live_numbers() -> None:
    html = render_dashboard(live_snapshot())
    assert re.search(r'id="active-calls">2<', html)
    assert re.search(r'id="cache-hit-ratio">87\.5 %<', html)
    assert re.search(r'id="cost-today">\$0\.0412<', html)
    row = re.search(r'<tr data-stage="voice_to_voice">(.*?)</tr>', html)
    assert row is not None
    assert "600 ms" in row.group(1) and "800 ms" in row.group(1)  # p50, p95
    assert re.search(r'<tr data-stage="edge_frame">.*?0\.021 ms', html)
    assert re.search(r'data-region="eu-west-2">.*?state-unhealthy">unhealthy<', html)
    assert re.search(r'data-region="us-east-1">.*?healthy<.*?12\.3 ms', html)


def test_page_needs_nothing_from_the_internet() -> None:
    html = render_dashboard(live_snapshot())
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and " src=" not in html and "@import" not in html
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_script_polls_the_json_snapshot_every_two_seconds() -> None:
    html = render_dashboard(live_snapshot())
    assert 'fetch("/api/dashboard"' in html
    assert "setInterval(refresh, 2000)" in html
    other = render_dashboard({}, api_path="/x/snap", refresh_seconds=5)
    assert 'fetch("/x/snap"' in other and "setInterval(refresh, 5000)" in other


def test_names_are_escaped() -> None:
    snapshot = {"regions": {"<script>alert(1)</script>": {"state": "healthy", "latency_ms": 1.0}}}
    html = render_dashboard(snapshot)
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    tricky = render_dashboard({}, api_path="</script><b>x")
    assert tricky.count("</script>") == 1


def test_an_empty_snapshot_still_renders() -> None:
    html = render_dashboard({})
    assert 'id="active-calls">\u2013<' in html
    assert "no Region reported yet" in html
    assert html.count("<tr data-stage=") == 5


def test_formatting() -> None:
    assert format_ms(0.0214) == "0.021 ms"
    assert format_ms(42.46) == "42.5 ms"
    assert format_ms(812.4) == "812 ms"
    assert format_ms(None) == "\u2013"
    assert format_ratio(0.875) == "87.5 %"
    assert format_usd(1234.5) == "$1,234.5000"


# A stand-in for the few DOM calls the page's script makes, to run it under node.
FAKE_DOM = """
const els = {};
function el(id) {
  if (!els[id]) els[id] = {id, textContent: "", className: "", children: [], q: {},
    setAttribute() {}, appendChild(c) { this.children.push(c); },
    querySelector(sel) { return this.q[sel] = this.q[sel] || {textContent: ""}; }};
  return els[id];
}
const rows = ["voice_to_voice", "edge_frame"].map(s => {
  const r = el("row-" + s); r.getAttribute = () => s; return r;
});
global.document = {getElementById: el, querySelectorAll: () => rows,
  createElement: () => ({children: [], setAttribute() {}, appendChild(c) { this.children.push(c); }})};
let tick; global.setInterval = (f, ms) => { tick = f; };
global.fetch = (url) => Promise.resolve({ok: true, json: () => Promise.resolve(SNAPSHOT)});
SCRIPT
tick();
setTimeout(() => console.log(JSON.stringify({
  active: els["active-calls"].textContent, ratio: els["cache-hit-ratio"].textContent,
  cost: els["cost-today"].textContent, status: els["status"].textContent,
  v2v: ["p50", "p95", "samples"].map(c => rows[0].q["." + c].textContent),
  regions: els["regions"].children.map(tr => tr.children.map(td => td.textContent)),
})), 20);
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed; the script is checked in Chromium")
def test_script_updates_the_numbers_from_the_json(tmp_path: Path) -> None:
    html = render_dashboard({})
    script = re.search(r"<script>(.*)</script>", html, re.S)
    assert script is not None
    snapshot = live_snapshot()
    program = FAKE_DOM.replace("SNAPSHOT", json.dumps(snapshot)).replace("SCRIPT", script.group(1))
    path = tmp_path / "page.js"
    path.write_text(program)
    result = subprocess.run(["node", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["active"] == "2"
    assert seen["ratio"] == "87.5 %"
    assert seen["cost"] == "$0.0412"
    assert seen["status"].startswith("updated")
    assert seen["v2v"] == ["600 ms", "800 ms", "4"]
    assert seen["regions"] == [["eu-west-2", "unhealthy", "\u2013"], ["us-east-1", "healthy", "12.3 ms"]]
