"""The words hold a pause open, on the assembled server (``aybiza serve``'s app on scripted providers).

The scripted recogniser is Deepgram with ``interim_results`` through its real SDK over a socket: the
words of the phrase before a pause arrive as an interim 50 ms after the caller pauses. The caller
asks "how much does a cleaning cost" — audio the end-of-turn model takes for a finished question —
pauses 700 ms and goes on. When the recogniser's words before the pause end on "the", the end of
turn waits and the two phrases make one turn; when they end on a word a sentence can end on, the
model's "finished" cuts the caller off at the pause (two turns): the words decided.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aybiza.testing.caller import Say, Script, Wait, caller_speech, place_call

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import scripted_server  # noqa: E402
from benchmarks.scripted_server import API_TOKEN, AUTH_TOKEN  # noqa: E402

pytestmark = pytest.mark.slow


async def _user_turns(monkeypatch: pytest.MonkeyPatch, before_pause: str) -> list[str]:
    timings: dict[str, Any] = {"stt_final_ms": 150, "stt_endpointing": True, "stt_interim_ms": 50,
                               "transcripts": [before_pause, "on Tuesday morning"], "reply": ["Of course."]}
    with monkeypatch.context() as patch:
        patch.setenv("AYBIZA_END_OF_TURN", "fast")
        patch.setenv("AYBIZA_PREEMPTIVE", "false")
        with scripted_server(cpu=None, timings=timings) as server:
            stream_url = server.base.replace("http://", "ws://") + "/twilio/stream"
            script: Script = [Wait(10), Say(caller_speech("how much does a cleaning cost")),
                              Wait(0.7, until_idle=False), Say(caller_speech("on tuesday morning")), Wait(8)]
            report = await place_call(stream_url, script, auth_token=AUTH_TOKEN, public_url=server.base)
            async with httpx.AsyncClient(base_url=server.base,
                                         headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
                for _ in range(50):
                    response = await client.get(f"/api/calls/{report.call_sid}")
                    if response.status_code == 200:
                        return [turn["user"] for turn in response.json()["turns"] if turn["user"]]
                    await anyio.sleep(0.1)
    raise AssertionError(f"no record of {report.call_sid}")


@pytest.mark.anyio
async def test_a_pause_after_the_is_no_end_of_turn_though_the_audio_sounds_finished(
        monkeypatch: pytest.MonkeyPatch) -> None:
    held = await _user_turns(monkeypatch, "I would like to book the")
    assert held == ["I would like to book the on Tuesday morning"], held  # one turn across the pause
    cut = await _user_turns(monkeypatch, "I would like to book a cleaning")
    assert len(cut) == 2, cut  # the same audio, words that can end: the model's "finished" ends the turn
