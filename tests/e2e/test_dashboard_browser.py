"""The built-in dashboard in headless Chromium, with live numbers from a real call."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aybiza.testing.caller import Say, Wait, caller_speech, place_call

from .browser import chromium_missing, chromium_page
from .server import AUTH_TOKEN, Server, running_server

MISSING = chromium_missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("dashboard")) as running:
        anyio.run(lambda: place_call(running.stream_url, [Wait(20), Say(caller_speech("where are you located")),
                                                           Wait(30)], auth_token=AUTH_TOKEN, caller="+447700900123"))
        yield running


def test_metrics_carry_the_call_with_bounded_labels(server: Server) -> None:
    text = httpx.get(f"{server.http}/metrics", timeout=5).text
    assert 'aybiza_calls_total{country="GB",model="faq",region="local"} 1.0' in text
    assert re.search(r"^aybiza_voice_to_voice_seconds_count 1\.0$", text, re.M)
    assert re.search(r"^aybiza_stt_final_seconds_count [1-9]", text, re.M)
    assert re.search(r"^aybiza_tts_first_byte_seconds_count [1-9]", text, re.M)
    assert re.search(r"^aybiza_edge_frame_seconds_count [1-9]", text, re.M)
    assert "CA" not in "".join(line for line in text.splitlines() if not line.startswith("#"))  # no call ids


def test_dashboard_renders_live_numbers_in_chromium(server: Server, tmp_path: Path) -> None:
    page: Any
    with chromium_page(tmp_path / "profile") as page:
        page.goto(f"{server.http}/dashboard")
        # A function, not an expression: the page's CSP (its own inline script only) forbids eval.
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('updated')",
                               timeout=15000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert page.inner_text("#active-calls").strip() == "0"
        assert page.inner_text("#cost-today").strip().startswith("$0.0")  # one short call
        voice_to_voice = page.inner_text("tr[data-stage=voice_to_voice] .p50")
        assert re.fullmatch(r"\d+(\.\d+)? ?(ms|s)", voice_to_voice.strip()), voice_to_voice


def test_with_an_api_token_the_api_dashboard_and_metrics_answer_only_its_bearer(tmp_path: Path) -> None:
    with running_server(tmp_path, {"AYBIZA_API_TOKEN": "s3cret"}) as guarded:
        assert httpx.get(f"{guarded.http}/dashboard", timeout=5).status_code == 401
        assert httpx.get(f"{guarded.http}/api/calls", timeout=5).status_code == 401
        assert httpx.get(f"{guarded.http}/metrics", timeout=5).status_code == 401
        ok = httpx.get(f"{guarded.http}/api/calls", headers={"Authorization": "Bearer s3cret"}, timeout=5)
        assert ok.status_code == 200
