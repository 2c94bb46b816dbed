"""The operator console in headless Chromium, over calls placed through a real server.

The app is ``create_app`` as ``aybiza serve`` builds it, served by uvicorn
on loopback, on the production providers pointed at the shipped fakes
(Deepgram, Bedrock) and at an HTTP tool service. Two real calls are placed:

- from a UK number, one with a tool call (a slow order lookup), a barge-in
  (the caller talks over it) and a failover (the region answering after the
  tool's result fails twice, so the turn moves to the next region);
- from a US number, a plain one.

The recording is served by the real ``GET /api/calls/{id}/recording`` (API
bearer, ranges): one record with a recording linked — a WAV filed in the data
directory's ``recordings/`` as the recording feature files it — is inserted
through the archive API, a copy of the UK call, labelled (country DE, id
``CA…INSERTED``).
"""

from __future__ import annotations

import re
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest

from aybiza.config import Settings
from aybiza.edge.archive import SQLiteArchive, default_archive_path
from aybiza.edge.records import CallRecord
from aybiza.private import private_dir
from aybiza.recording.info import RecordingInfo
from aybiza.server import create_app
from aybiza.testing.caller import Say, Wait, caller_speech, place_call
from aybiza.testing.fake_bedrock import BedrockReply, BedrockRequest, FakeBedrock, ToolUseReply
from aybiza.testing.fake_deepgram import FakeDeepgram
from aybiza.testing.processes import free_port
from aybiza.testing.tool_server import ToolAnswer, ToolServer

from .browser import chromium_missing, chromium_page
from .conftest import agents_dir
from .server import AUTH_TOKEN, api_headers, serving_app

MISSING = chromium_missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
AWS = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_EC2_METADATA_DISABLED": "true"}
INSERTED = "CA" + "0" * 24 + "INSERTED"  # a labelled insert: a recorded call, its WAV filed as a recording is


def model(request: BedrockRequest) -> BedrockReply:
    """The fake Claude: looks the order up, answers from the result, and answers the follow-up question."""
    results = request.tool_results()
    said = " ".join(request.texts()).lower()
    if results:
        extra = " And yes, we deliver on Sundays." if "sundays" in said else ""
        return BedrockReply(text=f"Your order is {results[0]['content'][0]['json']['status']}.{extra}")
    if "5555" in said:
        return BedrockReply(text="Let me check that order.", tool_uses=(ToolUseReply("order_status",
                                                                                     {"order_id": "5555"}),))
    return BedrockReply(text="How can I help?")


@dataclass
class Console:
    http: str
    data_dir: Path
    rich: str  # the UK call: tool call, barge-in, failover
    plain: str  # the US call
    seek_turn: int  # a late turn of the recorded call: seeking there moves the player far from the start


def _wav(path: Path, seconds: float) -> Path:
    """A quiet 440 Hz tone of ``seconds`` (8 kHz PCM16): something a player can load and seek in."""
    rate = 8000
    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.sin(2 * np.pi * 440 * t) * 2000).astype(np.int16).tobytes())
    return path


async def _place_calls(stream: str, deepgram: FakeDeepgram, bedrock: FakeBedrock) -> tuple[str, str]:
    deepgram.rescript(["where is my order 5555", "and do you deliver on sundays"])
    failed: list[str] = []

    def region_down_after_the_tool(request: BedrockRequest) -> BedrockReply:
        if request.tool_results() and len(failed) < 2:  # botocore tries twice per region, then we fail over
            failed.append(request.path)
            return BedrockReply(status=503, error_type="ServiceUnavailableException")
        return model(request)

    bedrock.rescript(region_down_after_the_tool)
    rich = await place_call(stream, [Wait(6), Say(caller_speech("where is my order 5555")),
                                     Say(caller_speech("and do you deliver on sundays"), barge_in_after=0.3),
                                     Wait(14)], auth_token=AUTH_TOKEN, agent="shop", caller="+447700900123")
    assert len(failed) == 2, "the region failed and the turn moved on"
    bedrock.rescript(model)
    deepgram.rescript(["hello there"])
    plain = await place_call(stream, [Wait(6), Say(caller_speech("hello there")), Wait(8)], auth_token=AUTH_TOKEN,
                             agent="shop", caller="+14155550123")
    return rich.call_sid, plain.call_sid


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    answers = {"/orders/5555": ToolAnswer({"status": "shipped"}, delay_s=3.0)}  # slow enough to talk over
    with ToolServer(answers) as shop, FakeDeepgram(transcripts=["hello"], seconds_per_char=0.06) as deepgram, \
            FakeBedrock(script=model) as bedrock, pytest.MonkeyPatch.context() as env:
        for name, value in AWS.items():
            env.setenv(name, value)
        order_tool = {"name": "order_status", "description": "Where a customer's order is.", "method": "GET",
                      "url": shop.url + "/orders/{order_id}", "keep": ["status"], "timeout_s": 8,
                      "parameters": {"type": "object", "required": ["order_id"],
                                     "properties": {"order_id": {"type": "string", "pattern": "^[0-9]{4}$"}}}}
        agents = agents_dir(tmp, shop={"tools": [order_tool], "filler": "One moment, please."})
        port = free_port()
        data_dir = tmp / "data"
        settings = Settings(data_dir=data_dir, agents_dir=agents, twilio_auth_token=AUTH_TOKEN,
                            public_url=f"http://127.0.0.1:{port}", port=port, host="127.0.0.1",
                            stt="deepgram", llm="bedrock", tts="deepgram", deepgram_api_key="test-key",
                            deepgram_url=deepgram.url, bedrock_endpoint_url=bedrock.url, health_probes=False)
        app = create_app(settings)
        with serving_app(app, port):
            stream = f"ws://127.0.0.1:{port}/twilio/stream"
            rich, plain = anyio.run(_place_calls, stream, deepgram, bedrock)
            http = f"http://127.0.0.1:{port}"
            record = CallRecord.model_validate(httpx.get(f"{http}/api/calls/{rich}", headers=api_headers(data_dir),
                                                         timeout=5).json())
            # Inserted through the archive API (labelled): a recorded call, as the recording feature will store it.
            turn = record.turns[-1]
            audio = _wav(private_dir(data_dir / "recordings") / f"{INSERTED}.wav", record.duration_s + 2)
            recording = RecordingInfo(storage="file", key=audio.name, duration_s=record.duration_s + 2)
            inserted = record.model_copy(update={"call_id": INSERTED, "caller_country": "DE", "recording": recording})
            archive = SQLiteArchive(default_archive_path(data_dir))
            archive.put_sync(inserted)
            yield Console(http, data_dir, rich, plain, turn.turn_id)


def _sign_in(page: Any, console: Console, path: str) -> None:
    """Open ``path``: the console sends a browser without its cookie to sign in with the API token first."""
    page.goto(f"{console.http}{path}")
    assert page.url.endswith("/console/login"), page.url
    page.fill("input[name=token]", "not the token")
    page.click("form.login button[type=submit]")
    assert "not the API token" in page.inner_text("#login-error")
    page.fill("input[name=token]", (console.data_dir / "api_token").read_text().strip())
    page.click("form.login button[type=submit]")
    page.wait_for_url(re.compile(r"/calls$"))
    page.goto(f"{console.http}{path}")


def _rows(page: Any) -> list[str]:
    return [row.get_attribute("data-call") for row in page.query_selector_all("#calls tbody tr[data-call]")]


def test_the_call_list_filters_by_country_flags_and_transport(console: Console, tmp_path: Path) -> None:
    page: Any
    with chromium_page(tmp_path / "profile") as page:
        violations: list[str] = []
        page.on("console", lambda message: violations.append(message.text) if "Content Security" in message.text
                else None)
        _sign_in(page, console, "/calls")
        assert set(_rows(page)) == {console.rich, console.plain, INSERTED}
        page.fill("input[name=country]", "GB")
        page.click("form.filters button[type=submit]")
        page.wait_for_url(re.compile(r"country=GB"))
        assert _rows(page) == [console.rich]
        row = page.inner_text(f"tr[data-call={console.rich}]")
        assert "failover" in row and "barge-in" in row and "tools" in row and "GB" in row, row
        page.fill("input[name=country]", "")
        page.check("input[name=flag][value=failover]")
        page.click("form.filters button[type=submit]")
        page.wait_for_url(re.compile(r"flag=failover"))
        assert set(_rows(page)) == {console.rich, INSERTED}, "the plain call did not fail over"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-calls.png"), full_page=True)
        page.select_option("select[name=transport]", "webrtc")
        page.click("form.filters button[type=submit]")
        page.wait_for_url(re.compile(r"transport=webrtc"))
        assert _rows(page) == [] and "no call matches" in page.inner_text("#calls")
        assert not violations, violations
    assert httpx.get(f"{console.http}/calls", timeout=5).status_code == 401, "a call record needs the API token"
    bearer = api_headers(console.data_dir)
    for bad in ("country=GBR", "per_page=7", "page=0", "min_cost=lots", "flag=vip", "nonsense=1", "agent=" + "a" * 65):
        response = httpx.get(f"{console.http}/calls?{bad}", headers=bearer, timeout=5)
        assert response.status_code == 400, (bad, response.text)


def test_a_call_with_a_barge_in_a_tool_call_and_a_failover_shows_each_on_its_timeline(
    console: Console, tmp_path: Path
) -> None:
    page: Any
    with chromium_page(tmp_path / "profile") as page:
        _sign_in(page, console, f"/calls/{console.rich}")
        timeline = page.query_selector("#timeline")
        assert timeline is not None
        for kind in ("barge-in", "tool", "failover"):
            assert page.query_selector_all(f"#timeline g.event-{kind}"), f"no {kind} on the timeline"
        assert "order_status" in page.text_content("#timeline")
        assert "Caller where is my order 5555" in page.inner_text("#transcript")
        for stage in ("stt_final", "first_token", "first_audio"):  # measured in the caller's turns
            texts = [g.text_content() for g in page.query_selector_all(f"svg.waterfall g.stage[data-stage={stage}]")]
            assert any(re.search(r"\+\d+ ms", text or "") for text in texts), (stage, texts)
        assert "not recorded" in page.text_content("#transcript svg.waterfall g.stage[data-stage=playback_done]")
        assert page.inner_text("#no-recording") == "no recording"
        assert page.inner_text("#cost-total").startswith("$")
        assert "us-" in page.inner_text("section.summary") or page.query_selector("table.models")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-call.png"), full_page=True)


def test_the_player_seeks_to_a_clicked_turn(console: Console, tmp_path: Path) -> None:
    page: Any
    with chromium_page(tmp_path / "profile") as page:
        _sign_in(page, console, f"/calls/{INSERTED}")
        page.wait_for_function("() => document.getElementById('player').readyState >= 1", timeout=15000)
        button = page.query_selector(f"li.turn[data-turn='{console.seek_turn}'] button.seek")
        assert button is not None
        seek = float(button.get_attribute("data-seek"))
        assert seek > 1.0, "a late turn, away from where the player starts"
        button.click()
        page.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {seek}) < 0.5",
                               timeout=10000)
        assert "at " in page.inner_text("#player-status")
        page.click("#timeline g.turn >> nth=0")  # the timeline seeks too
        first = float(page.get_attribute("#timeline g.turn >> nth=0", "data-seek"))
        page.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {first}) < 0.5",
                               timeout=10000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-player.png"), full_page=True)
    # The browser never holds the API token: the console's route adds it inside the process.
    assert httpx.get(f"{console.http}/api/calls/{INSERTED}/recording", timeout=5).status_code == 401
    bearer = api_headers(console.data_dir)
    assert httpx.get(f"{console.http}/calls/{INSERTED}/recording", timeout=5).status_code == 401
    assert httpx.get(f"{console.http}/calls/{INSERTED}/recording", headers=bearer, timeout=5).status_code == 200
    assert httpx.get(f"{console.http}/calls/{console.plain}/recording", headers=bearer, timeout=5).status_code == 404


def test_the_dashboard_draws_the_calls_of_the_last_hour(console: Console, tmp_path: Path) -> None:
    page: Any
    with chromium_page(tmp_path / "profile") as page:
        page.goto(f"{console.http}/dashboard")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('updated')",
                               timeout=15000)
        countries = {bar.get_attribute("data-name"): bar.get_attribute("data-value")
                     for bar in page.query_selector_all("svg.countries g.bar")}
        assert countries == {"GB": "1", "US": "1", "DE": "1"}, countries
        v2v = page.inner_text("figure[data-stage=voice_to_voice] figcaption")
        assert re.search(r"p50 \d+(\.\d)? ms · p95 \d+(\.\d)? ms · [1-9]\d* samples", v2v), v2v
        assert page.query_selector_all("figure[data-stage=voice_to_voice] circle")
        kinds = [bar.get_attribute("data-name") for bar in page.query_selector_all("svg.cost-kind g.bar")]
        assert kinds and any(kind.startswith("llm_") for kind in kinds), kinds
        assert page.query_selector_all("svg.cost-model g.bar")
        assert "lookups" in page.inner_text("#cache-numbers")
        regions = page.query_selector_all("#region-history figure[data-region]")
        assert len(regions) >= 2, "the failed Region and the one that answered"
        assert "failovers away" in page.inner_text("#region-history")
        assert page.inner_text("#active-calls").strip() == "0"  # the tables are still there
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-dashboard.png"), full_page=True)
