"""The console's pieces in process: the list query's bounds, the timeline's placement and missing data, the
pictures' numbers, and the routes' guard and headers (no lifespan: routes needing the store answer 503)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import QueryParams
from starlette.testclient import TestClient

from aybiza.config import Settings
from aybiza.console.page import CONSOLE_CSP
from aybiza.console.pictures import percentile, render_pictures
from aybiza.console.query import QueryError, parse_list_query
from aybiza.console.svg import bar_chart, line_chart, nice_max
from aybiza.console.timeline import plot_turns, render_call, waterfall_of
from aybiza.edge.records import CallRecord, TurnRecord
from aybiza.pipeline.ledger import FAILOVER_AT, ToolUse, Usage
from aybiza.server import create_app

NOW = 1_800_000_000.0


def test_the_list_query_keeps_known_bounded_filters() -> None:
    query = parse_list_query(QueryParams("country=gb&flag=failover&flag=tool_call&min_cost=0.01&page=3&hours=2"
                                         "&agent=&per_page=25"), now=NOW)
    assert query.filters.country == "GB" and query.filters.flags == ("failover", "tool_call")
    assert query.filters.min_cost_usd == 0.01 and query.filters.since == NOW - 7200 and query.filters.agent is None
    assert (query.page, query.per_page) == (3, 25)
    assert query.link(4) == "/calls?country=gb&min_cost=0.01&hours=2&flag=failover&flag=tool_call&per_page=25&page=4"


@pytest.mark.parametrize("bad", ["country=GBR", "per_page=7", "page=0", "page=1001", "min_cost=lots", "flag=vip",
                                 "nonsense=1", "agent=" + "a" * 65, "agent=a%20b", "max_duration=-1",
                                 "country=GB&country=US", "hours=0", "model=" + "m" * 129])
def test_the_list_query_refuses_what_is_out_of_bounds(bad: str) -> None:
    with pytest.raises(QueryError):
        parse_list_query(QueryParams(bad), now=NOW)


def _call() -> CallRecord:
    return CallRecord(
        call_id="CA1", status="ended", started_at=NOW, ended_at=NOW + 20, outcome="hangup", language="en",
        usage=Usage(failovers=[("eu-west-2", "eu-central-1")], interruptions=1),
        quality={"score": 0.9, "tier": "high", "min_score": 0.42},
        turns=[TurnRecord(turn_id=0, agent="Hello.", at=NOW + 0.2),
               TurnRecord(turn_id=1, user="where is my order", agent="Let me check that order.", at=NOW + 5,
                          timings={"stt_final": 0.25, "llm_first_token": 0.4, "voice_to_voice": 1.1,
                                   FAILOVER_AT: 6.5}, interrupted=True,
                          tool_calls=[ToolUse(turn=1, name="order_status", kind="http", at_s=5.6, duration_ms=900,
                                              outcome="ok")]),
               TurnRecord(turn_id=2, user="hola", agent="Hola.", language="es", at=NOW + 9,
                          timings={"stt_final": 0.2})])


def test_turns_are_placed_from_the_end_of_speech_and_measured_stages() -> None:
    plots = plot_turns(_call())
    greeting, asked, spanish = plots
    assert greeting.caller is None and greeting.agent is not None and greeting.agent[0] == pytest.approx(0.2)
    assert asked.caller is not None and asked.caller[1] == pytest.approx(4.75)  # at - stt_final
    assert asked.agent is not None and asked.agent[0] == pytest.approx(4.75 + 1.1) and asked.agent_measured
    assert asked.failover_at == 6.5 and spanish.language_switch == "en \u2192 es"
    stages = waterfall_of(asked.turn)
    assert stages == {"speech_end": 0.0, "end_of_turn": None, "stt_final": 0.25, "first_token": pytest.approx(0.65),
                      "first_audio": 1.1, "playback_done": None}


def test_the_call_page_marks_events_and_missing_data() -> None:
    page = render_call(_call())
    for kind in ("barge-in", "tool", "failover", "language"):
        assert f'class="event event-{kind}"' in page, kind
    assert 'id="no-recording"' in page and "no cost recorded" in page
    assert "a dip: when, not recorded" in page and "not recorded" in page
    assert "<script src=\"/console/static/console.js\" defer></script>" in page and "<script>" not in page
    assert " style=" not in page  # the CSP allows no inline style
    recorded = _call().model_copy(update={"recording": {"url": "s3://bucket/CA1.wav", "duration_s": 20.0}})
    assert 'src="/calls/CA1/recording"' in render_call(recorded)
    assert 'id="no-recording"' in render_call(_call().model_copy(update={"recording": {"duration_s": 3}}))


def test_text_is_escaped() -> None:
    call = _call()
    call.turns[1].user = "<script>alert(1)</script>"
    assert "<script>alert" not in render_call(call)


def test_charts_write_their_numbers() -> None:
    assert nice_max(0.37) == 0.5 and nice_max(7) == 10 and nice_max(120) == 200 and nice_max(0) == 1
    svg = bar_chart([("GB", 3), ("US", 1)], label="Calls", fmt=lambda v: f"{v:.0f}")
    assert re.search(r'data-name="GB" data-value="3".*>3</text>', svg) and svg.startswith("<svg")
    assert "no data" in bar_chart([], label="Calls")
    line = line_chart([("p50", [(0, 1.0), (1, None), (2, 3.0)])], label="x", x_range=(0, 2))
    assert line.count("<circle") == 2 and "<polyline" not in line  # a gap splits the line
    assert percentile([1, 2, 3, 4], 0.5) == 2 and percentile([5], 0.95) == 5


def test_pictures_count_the_hour_and_leave_older_calls_out() -> None:
    now = time.time()
    recent = _call().model_copy(update={"started_at": now - 60, "caller_country": "GB",
                                        "timings": [("voice_to_voice", 1.1), ("stt_final", 0.25)],
                                        "route": {"region": "eu-west-2"},
                                        "cost": {"total_usd": "0.02", "lines": [
                                            {"kind": "llm_input", "detail": "claude", "amount": "0.015"},
                                            {"kind": "stt", "detail": "nova-3", "amount": "0.005"}]}})
    old = recent.model_copy(update={"call_id": "CA2", "started_at": now - 7200, "caller_country": "US"})
    html = render_pictures([recent, old], regions={"us-east-1": {"state": "healthy"}}, now=now)
    assert "Last hour: 1 calls" in html and 'data-name="GB"' in html and 'data-name="US"' not in html
    assert "p50 1100 ms" in html and 'data-name="llm_input" data-value="0.015"' in html
    assert 'data-region="eu-west-2"' in html and "1 failovers away" in html
    assert 'data-region="us-east-1">us-east-1' in html  # no calls there: listed, not drawn


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("AYBIZA_", "TWILIO_")):
            monkeypatch.delenv(name)


def _client(tmp_path: Path, **values: object) -> TestClient:
    agents = tmp_path / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    (agents / "default.yaml").write_text("id: default\nname: Desk\ngreeting: Hello.\nsystem_prompt: Answer.\n")
    settings: dict[str, Any] = {
        "data_dir": tmp_path / "var", "agents_dir": agents, "twilio_auth_token": "t" * 32, "tts": "espeak",
        "public_url": "http://127.0.0.1:8080"} | values
    return TestClient(create_app(Settings(**settings)), base_url="http://127.0.0.1:8080")


def test_with_an_api_token_the_console_answers_only_its_bearer(tmp_path: Path) -> None:
    client = _client(tmp_path, api_token="s3cret-s3cret-s3cret")
    for path in ("/calls", "/calls/CA1", "/calls/CA1/recording", "/console/static/console.js"):
        assert client.get(path).status_code == 401, path
    bearer = {"Authorization": "Bearer s3cret-s3cret-s3cret"}
    assert client.get("/console/static/console.js", headers=bearer).status_code == 200
    assert client.get("/calls?country=GBR", headers=bearer).status_code == 400
    assert client.get("/calls", headers=bearer).status_code == 503  # no lifespan: the store is not open


def test_call_records_need_the_api_token_even_on_loopback_and_a_browser_signs_in_once(tmp_path: Path) -> None:
    client = _client(tmp_path)
    assert client.get("/calls").status_code == 401
    page = client.get("/calls", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/console/login"
    assert client.get("/console/login").status_code == 200
    token = (tmp_path / "var" / "api_token").read_text().strip()
    wrong = client.post("/console/login", data={"token": "guess"}, follow_redirects=False)
    assert wrong.status_code == 401 and "aybiza_console" not in wrong.cookies
    foreign = client.post("/console/login", data={"token": token}, headers={"Sec-Fetch-Site": "cross-site"},
                          follow_redirects=False)
    assert foreign.status_code == 403
    signed = client.post("/console/login", data={"token": token}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/calls"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert client.get("/calls").status_code == 503  # past the guard (no lifespan: no store)
    client.cookies.clear()
    client.cookies.set("aybiza_console", "9999999999." + "0" * 64)
    assert client.get("/calls").status_code == 401, "a forged cookie"


def test_sign_in_attempts_are_rate_limited(tmp_path: Path) -> None:
    client = _client(tmp_path)
    codes = [client.post("/console/login", data={"token": "guess"}).status_code for _ in range(8)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429


def test_only_wrong_tokens_count_against_an_address(tmp_path: Path) -> None:
    client = _client(tmp_path, api_token="s3cret-s3cret-s3cret")
    codes = []
    for _ in range(4):  # an operator signing in again and again, one typo each time
        codes.append(client.post("/console/login", data={"token": "typo"}).status_code)
        codes.append(client.post("/console/login", data={"token": "s3cret-s3cret-s3cret"},
                                 follow_redirects=False).status_code)
    assert codes == [401, 303] * 4


def test_the_static_files_are_ours_and_the_pages_policy_is_strict(tmp_path: Path) -> None:
    client = _client(tmp_path)
    script = client.get("/console/static/console.js")
    assert script.status_code == 200 and "currentTime" in script.text
    assert client.get("/console/static/../../server.py").status_code == 404
    assert "script-src 'self'" in CONSOLE_CSP and "unsafe-inline" not in CONSOLE_CSP
