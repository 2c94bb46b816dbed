"""Preemption on a stable interim, on the assembled server (``aybiza serve``'s app on scripted providers).

The scripted recogniser behaves like Deepgram with ``interim_results``: the phrase's words come as an
interim 50 ms after its speech pauses, the final 150 ms after; the model's first token 350 ms after the
request, the voice's first audio 100 ms after the first text. With ``AYBIZA_PREEMPT_INTERIM_MS=0`` the
model starts on the final; with the default it starts on the stable interim, so the caller hears the
answer sooner.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aybiza.testing.caller import CallReport, Say, Wait, caller_speech, place_call

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import scripted_server  # noqa: E402
from benchmarks.scripted_server import API_TOKEN, AUTH_TOKEN  # noqa: E402

pytestmark = pytest.mark.slow

TIMINGS: dict[str, Any] = {"stt_final_ms": 150, "llm_first_token_ms": 350, "tts_first_byte_ms": 100,
                           "stt_endpointing": True, "stt_interim_ms": 50,
                           "reply": ["We open at nine in the morning."]}
QUESTION = "what time do you open tomorrow"
TURNS = 3


@contextmanager
def server_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[Any]:
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with scripted_server(cpu=None, timings=TIMINGS) as server:
            yield server


async def call(base: str) -> tuple[CallReport, dict[str, Any]]:
    stream_url = base.replace("http://", "ws://") + "/twilio/stream"
    question = caller_speech(QUESTION)
    script = [Wait(10)] + [step for _ in range(TURNS) for step in (Say(question), Wait(8))]
    report = await place_call(stream_url, script, auth_token=AUTH_TOKEN, public_url=base)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        for _ in range(50):
            response = await client.get(f"/api/calls/{report.call_sid}")
            if response.status_code == 200:
                return report, response.json()
            await anyio.sleep(0.1)
    raise AssertionError(f"no record of {report.call_sid}")


def median_latency(report: CallReport) -> float:
    latencies = [t.latency for t in report.turns if t.latency is not None]
    assert len(latencies) == TURNS, f"the caller heard {len(latencies)} of {TURNS} answers"
    return statistics.median(latencies)


@pytest.mark.anyio
async def test_an_answer_started_on_a_stable_interim_is_heard_sooner_than_one_started_on_the_final(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with server_with(monkeypatch, AYBIZA_PREEMPTIVE="true", AYBIZA_PREEMPT_INTERIM_MS="0") as server:
        on_finals, finals_record = await call(server.base)
    with server_with(monkeypatch, AYBIZA_PREEMPTIVE="true") as server:
        on_interims, interims_record = await call(server.base)
    finals_s, interims_s = median_latency(on_finals), median_latency(on_interims)
    # the interim comes 100 ms before the final; the guess waits 50 ms for it (and the caller) to be still
    assert interims_s < finals_s - 0.025, (interims_s, finals_s)
    for record in (finals_record, interims_record):
        turns = [t for t in record["turns"] if t.get("turn_id", 0) > 0]
        assert [t["user"] for t in turns] == [QUESTION] * TURNS  # each question answered once, as asked
        assert record["usage"]["preemptions"].get("used") == TURNS  # every answer came from a guess
    # a guess on the final is never wrong here; one on an interim may be (a word gap with the audio's 100 ms
    # messages can leave a partial interim still for 50 ms): discarded, at most once a turn, never heard
    assert finals_record["usage"]["preemptions"] == {"used": TURNS}
    assert interims_record["usage"]["preemptions"].get("discarded", 0) <= TURNS
