"""A browser call end to end: real server process, headless Chromium, real WebRTC, real speech models.

Chromium's fake microphone plays an espeak-ng question after a few seconds
of silence (long enough for the greeting); the demo page measures the
energy of the agent audio it receives, per agent turn, and shows the live
transcript the server sends on the data channel.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .browser import chromium_missing, chromium_page, speech_wav
from .server import Server, SharedServers

MISSING = chromium_missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
QUESTION = "when are you open on saturday"
HEARD_ONE_SECOND = 20  # the page counts 50 ms meter readings above -40 dBFS


@pytest.fixture(scope="module")
def server(shared_servers: SharedServers) -> Server:
    """A server with the default settings, shared: these tests count nothing from zero."""
    return shared_servers.get()


def test_demo_page_is_served_with_its_assets(server: Server) -> None:
    page = httpx.get(f"{server.http}/", timeout=5)
    assert page.status_code == 200 and 'id="talk"' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'; frame-ancestors 'none'")
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(f"{server.http}/web/app.js", timeout=5)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"not json", 400, "Bad Request"),
        (b'{"sdp": "v=0\\r\\na=fingerprint:sha-256 ' + b":".join([b"AB"] * 32) + b'\\r\\n", "type": "offer", '
         b'"agent": "nobody"}', 404, "no agent"),
        (b'{"sdp": "v=0\\r\\n", "type": "offer"}', 400, "fingerprint"),  # no DTLS fingerprint: no secure media
    ],
)
def test_bad_offers_are_refused(server: Server, body: bytes, status: int, says: str) -> None:
    response = httpx.post(f"{server.http}/webrtc/offer", content=body, timeout=5)
    assert response.status_code == status
    assert says in response.text


def _wait(page: Any, script: str, timeout_s: float, what: str, server: Server) -> None:
    try:
        page.wait_for_function(script, timeout=timeout_s * 1000)
    except Exception as error:  # Playwright's TimeoutError: say what the page and server showed
        page.screenshot(path=str(ARTIFACTS / "webrtc-failed.png"), full_page=True)
        raise AssertionError(
            f"{what} did not happen in {timeout_s} s\npage: {page.inner_text('main')}\n"
            f"server log:\n{server.log()[-4000:]}"
        ) from error


def _heard(turn: int, seconds: float) -> str:
    readings = int(seconds * HEARD_ONE_SECOND)
    return f"() => (JSON.parse(document.querySelector('#rx-active').dataset.byTurn)['{turn}'] || 0) >= {readings}"


def test_browser_call_hears_greeting_and_answer(server: Server, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    # 7 s of silence lets the 5.7 s greeting finish before the question (else it is a barge-in).
    question = speech_wav(tmp_path / "question.wav", QUESTION, lead_s=7.0, tail_s=10.0)
    with chromium_page(tmp_path / "profile", question) as page_object:
        page: Any = page_object
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{server.http}/")
        assert page.inner_text("#status") == "idle"
        page.click("#talk")
        _wait(page, "() => document.querySelector('#status').dataset.state === 'connected'", 10, "connecting",
              server)
        _wait(page, _heard(0, 1.0), 10, "hearing a second of the greeting", server)
        _wait(page, "() => [...document.querySelectorAll('#conversation li.user')].some("
                    "li => /open/i.test(li.textContent) && /saturday/i.test(li.textContent))",
              20, "the question in the transcript", server)
        _wait(page, _heard(1, 1.0), 15, "hearing a second of the answer", server)
        _wait(page, "() => document.querySelector('#latency li[data-ms]') !== null", 5, "a latency figure", server)
        agent_said = page.inner_text("#conversation")
        latency_ms = int(page.get_attribute("#latency li[data-ms]", "data-ms"))
        page.screenshot(path=str(ARTIFACTS / "webrtc.png"), full_page=True)
        call_id = page.inner_text("#call-id").split(" ")[0]
        page.click("#talk")
        assert page.inner_text("#talk") == "Start talking"
    assert errors == []  # no script error, no missing asset, nothing the CSP refused
    assert "Harbor Lane Dental" in agent_said  # the greeting
    assert "Saturday from 9 AM to 1 PM" in agent_said  # the opening-hours answer
    assert 0 < latency_ms < 10_000
    record = _ended_call(server, call_id)
    assert record["transport"] == "webrtc"
    assert (record["status"], record["outcome"]) == ("ended", "hangup")
    assert any(stage == "voice_to_voice" for stage, _ in record["timings"])


def _ended_call(server: Server, call_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        response = httpx.get(f"{server.http}/api/calls/{call_id}", headers=server.api, timeout=5)
        if response.status_code == 200 and response.json()["status"] == "ended":
            return dict(response.json())
        assert time.monotonic() < deadline, f"call {call_id} not ended: {response.text}"
        time.sleep(0.1)
