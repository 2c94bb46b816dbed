"""Talking callers: agent-audio lateness as a phone hears it, barge-ins, the verdicts; one real short run."""

from __future__ import annotations

import base64
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aybiza.testing.scripted import LatencyHistogram  # noqa: E402
from benchmarks.conversation import profile_summary, run_stack, what_limits  # noqa: E402
from benchmarks.conversation_load import ConversationCall, Talk, conversational  # noqa: E402
from benchmarks.loadgen import CallerAudio, TwilioMessages, Utterance  # noqa: E402


class _Fleet:
    def __init__(self) -> None:
        self.audio = CallerAudio(utterances=(("s1", "s2", "s3"),), silence=("q",), source="test")
        self.agent_lateness = LatencyHistogram()
        self.agent_audio_s = 0.0
        self.barge_ins = 0
        self.clears = 0


def _call(behaviour: Talk) -> tuple[ConversationCall, _Fleet]:
    fleet = _Fleet()
    call = ConversationCall(fleet, ws=None, messages=TwilioMessages("MZ", "CA", "AC", {}),  # type: ignore[arg-type]
                            behaviour=behaviour, rng=random.Random(0), now=0.0)
    return call, fleet


def _media(seconds: float) -> str:
    payload = base64.b64encode(b"\xff" * int(8000 * seconds)).decode()
    return json.dumps({"event": "media", "streamSid": "MZ", "media": {"payload": payload}})


def _mark(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": "MZ", "mark": {"name": name}})


def test_a_gap_inside_a_reply_is_lateness_and_a_reply_start_is_not() -> None:
    call, fleet = _call(Talk())
    call.on_message(_media(0.1), now=10.0)  # a reply begins: latency, not lateness
    assert fleet.agent_lateness.count == 0
    call.on_message(_media(0.1), now=10.05)  # in time: 50 ms still queued
    call.on_message(_media(0.1), now=10.23)  # the buffer ran dry at 10.2: 30 ms late
    assert fleet.agent_lateness.count == 2
    assert fleet.agent_lateness.percentile(50) == pytest.approx(0.0, abs=0.2)
    assert fleet.agent_lateness.max_seen_ms == pytest.approx(30.0, abs=0.2)
    call.on_message(_mark("turn-1.1"), now=10.24)  # a segment mark: the reply goes on
    call.on_message(_media(0.1), now=10.5)
    assert fleet.agent_lateness.max_seen_ms == pytest.approx(170.0, abs=0.2)
    call.on_message(_mark("turn-1"), now=10.51)  # the reply's end
    call.on_message(_media(0.1), now=20.0)  # the next reply's first audio
    assert fleet.agent_lateness.count == 3
    assert fleet.agent_audio_s == pytest.approx(0.5)


def test_a_clear_ends_the_reply() -> None:
    call, fleet = _call(Talk())
    call.on_message(_media(1.0), now=1.0)
    call.on_message(json.dumps({"event": "clear", "streamSid": "MZ"}), now=1.3)
    call.on_message(_media(1.0), now=5.0)
    assert fleet.agent_lateness.count == 0 and fleet.clears == 1


def test_every_third_turn_the_caller_talks_over_the_reply() -> None:
    call, fleet = _call(Talk(wait_for_reply=True, greeting_s=(0, 0), pause_after_reply_s=0.3, barge_in_every=3,
                             barge_in_after_s=0.8))
    call.barge_phase = 0  # this caller talks over the third reply
    for turn in range(1, 4):
        call.utterances.append(Utterance(spoken_at=turn * 10.0, reply_at=turn * 10.0 + 0.5))
        call.on_message(_media(2.0), now=turn * 10.0 + 0.5)  # plays until +2.5
        if turn < 3:
            assert not call._ready_to_speak(turn * 10.0 + 1.5), "turns 1 and 2: heard out"
            assert call._ready_to_speak(turn * 10.0 + 2.9), "then the pause"
    assert not call._ready_to_speak(30.0 + 1.2), "turn 3: 0.7 s into the reply"
    assert call._ready_to_speak(30.0 + 1.4), "turn 3: 0.9 s into the reply, still playing: barge in"
    assert fleet.barge_ins == 1


def test_conversational_audio_keeps_the_questions_not_the_short_answers() -> None:
    audio = CallerAudio(utterances=(("a",) * 80, ("b",) * 30), silence=("q",), source="test")
    assert conversational(audio).utterances == (("a",) * 80,)


def test_profile_summary_counts_leaf_frames_and_leaves_waiting_threads_out() -> None:
    collapsed = "\n".join([
        "main (a.py:1);Runner.run (runners.py:10) 30",
        "main (a.py:1);Session.run (/x/onnxruntime_inference_collection.py:200) 50",
        "main (a.py:1);feed (/y/quality.py:7) 20",
    ])
    summary = profile_summary(collapsed)
    assert summary["samples"] == 100 and summary["idle_percent"] == 30.0
    assert summary["self_percent"][0] == ["Session.run (onnxruntime_inference_collection.py)", 50.0]
    assert ["main (a.py)", 70.0] in summary["total_percent"], "busy samples only"


def _step(calls: int, ok: bool, **over: Any) -> dict[str, Any]:
    step = {"calls": calls, "target": calls, "pass": ok, "failed_calls": 0, "agent_lateness_ms": {"p99_ms": 0.0},
            "inbound_lateness_ms": {"p99_ms": 5.0 if ok else 44.0}, "server_cpu_percent": 60.0 if ok else 95.0,
            "server_waiting_for_cpu_percent": 2.0, "client_cpu_percent": 30.0, "client_send_lateness_p99_ms": 1.0}
    step.update(over)
    return step


def test_what_limits_names_the_failing_criterion_and_the_saturated_core() -> None:
    text = what_limits([_step(40, True), _step(50, False), _step(60, False)], 20.0)
    assert text.startswith("at 50 calls") and "inbound frame lateness p99 44.0 ms" in text
    assert "core saturated (95.0 %)" in text
    assert "ceiling" in what_limits([_step(40, True)], 20.0)


@pytest.mark.slow
def test_a_short_talking_run_through_the_fake_providers_drops_no_frame() -> None:
    """Server pinned as the benchmark pins it, the real SDKs to the fakes in their own process, three callers."""
    result = run_stack("production", {"steps": [3], "settle_s": 2.0, "window_s": 6.0, "warmup_calls": 1},
                       profile=False)
    assert result["failures_sample"] == [], result["failures_sample"]
    assert result["dropped_frames"] == 0 and result["frames_sent"] > 500
    [step] = result["steps"]
    assert step["calls"] == 3 and step["failed_calls"] == 0
    assert step["agent_lateness_ms"]["count"] > 0, "replies were heard, chunk by chunk"
    assert 0.15 < step["caller_speech_fraction"] < 0.6 and 0.15 < step["agent_speech_fraction"] < 0.6


def test_the_callers_next_question_ends_the_reply_for_servers_that_send_no_marks() -> None:
    call, fleet = _call(Talk(wait_for_reply=True, greeting_s=(0, 0), barge_in_every=0))
    call.on_message(_media(1.0), now=0.0)  # a greeting, no mark after it
    assert [call.next_frame(1.7 + i * 0.02)[1] for i in range(3)] == [False, False, True]
    call.on_message(_media(1.0), now=3.0)  # the reply: a new one, not a 2 s gap in the greeting
    assert fleet.agent_lateness.count == 0
