"""Whisper on the caller's pause, on ``aybiza serve``'s embedded default (VAD, smart-turn, whisper, FAQ, local voice).

Two servers, ``AYBIZA_WHISPER_EARLY_MS=0`` (whisper starts at the confirmed end of turn) and 100 ms (the
default: it starts after 100 ms of the caller's silence). The same spoken FAQ question twice a call; the second
(no language ID) is compared: its final, timed from the end of speech in the call record, is out sooner
when whisper started on the pause, by about whisper's own time (the end of turn comes later than the
early run's result), and the caller hears the answer either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aybiza.testing.caller import CallReport, Say, Wait, caller_speech, place_call

from .server import AUTH_TOKEN, running_server

pytestmark = pytest.mark.slow


async def ask_twice(tmp: Path, early_ms: str) -> tuple[CallReport, dict[str, Any]]:
    question = caller_speech("When are you open?")
    with running_server(tmp, env={"AYBIZA_WHISPER_EARLY_MS": early_ms}, start_timeout_s=120) as server:
        report = await place_call(server.stream_url, [Wait(20), Say(question), Wait(20), Say(question), Wait(20)],
                                  auth_token=AUTH_TOKEN)
        record = await server.record(report.call_sid)
    return report, record


def second_final_s(record: dict[str, Any]) -> float:
    turns = [t for t in record["turns"] if t.get("turn_id", 0) > 0]
    assert len(turns) == 2, turns
    return float(turns[1]["timings"]["stt_final"])


@pytest.mark.anyio
async def test_whisper_started_on_the_pause_has_the_final_ready_sooner(tmp_path: Path) -> None:
    late_report, late = await ask_twice(tmp_path / "late", "0")
    early_report, early = await ask_twice(tmp_path / "early", "100")
    for report in (late_report, early_report):
        assert [t.latency is not None for t in report.turns] == [True, True], "both answers heard"
    late_s, early_s = second_final_s(late), second_final_s(early)
    assert early_s < late_s - 0.2, (early_s, late_s)  # whisper's run (~0.6 s here) is off the path
