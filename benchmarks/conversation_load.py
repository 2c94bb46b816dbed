"""Callers that hold a conversation: the caller side of ``benchmarks.conversation``.

A :class:`ConversationCall` is a loadgen caller that speaks an utterance,
waits for the agent's reply, hears it out, pauses briefly and speaks again —
so that, with replies about as long as the utterances, the caller speaks
about 40 % of the time and the agent about 40 % — and every
``barge_in_every``-th turn it talks over the reply ``barge_in_after_s``
into it (the server must send ``clear``).

What it measures that the listening capacity run cannot: **agent-audio
lateness**. Twilio plays the agent's audio from a buffer; once a reply has
begun (its first media after the previous reply's closing ``turn-N`` mark,
or after a ``clear``), every further media message should arrive before the
buffer runs dry. Lateness is how long the phone's buffer had been empty when
the message came (0 when it had not): a caller hears it as a gap inside the
reply. The reply's first audio is latency, not lateness, and is not counted;
nor is audio after the caller's own next utterance ended (a server that sends
no marks, as pipecat's serializer, still has its replies told apart).

    python -m benchmarks.conversation_load --base http://127.0.0.1:PORT --server-pid PID [--cpu N] [--params JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aybiza.testing.scripted import LatencyHistogram
from benchmarks.loadgen import Behaviour, Call, CallerAudio, Fleet, _cpu_s, _progress, _rss_mb, caller_audio
from benchmarks.machine import run_queue_wait_s
from benchmarks.ramp import ramp

__all__ = ["ConversationCall", "ConversationFleet", "Talk", "conversation", "conversational", "main"]


@dataclass(frozen=True)
class Talk(Behaviour):
    """A conversational caller: wait for each reply; every ``barge_in_every``-th turn, talk over it."""

    barge_in_every: int = 3  # 0: never
    barge_in_after_s: float = 0.8  # into the reply's playback


class ConversationCall(Call):
    """A caller that talks with the agent and times the agent's audio as its phone plays it."""

    fleet: ConversationFleet
    behaviour: Talk

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reply_open = False  # between a reply's first audio and its closing mark (or a clear)
        self.barged = 0
        every = getattr(self.behaviour, "barge_in_every", 0)
        # Which of every `every` turns this caller talks over: spread across callers, so that a short
        # measuring window sees barge-ins too (not only calls that lived through three turns).
        self.barge_phase = self.rng.randrange(every) if every else 0

    def _ready_to_speak(self, now: float) -> bool:
        every = getattr(self.behaviour, "barge_in_every", 0)  # the warm-up's callers are plain ones
        after_s = getattr(self.behaviour, "barge_in_after_s", 0.0)
        last = self.utterances[-1] if self.utterances else None
        if (every and last is not None and last.reply_at is not None
                and not self.playback.idle(now)
                and (len(self.utterances) + self.barge_phase) % every == 0 and now - last.reply_at >= after_s):
            self.barged += 1
            self.fleet.barge_ins += 1
            return True
        return super()._ready_to_speak(now)

    def next_frame(self, now: float) -> tuple[str, bool]:
        """As :meth:`Call.next_frame`; the end of an utterance also ends the reply (for servers without marks)."""
        payload, ends_utterance = super().next_frame(now)
        if ends_utterance:
            self.reply_open = False
        return payload, ends_utterance

    def on_message(self, text: str | bytes, now: float) -> None:
        """As :meth:`Call.on_message`, and each media message inside a reply timed against the playback buffer."""
        message = json.loads(text)
        event = message.get("event")
        fleet = self.fleet
        if event == "media":
            payload = message["media"]["payload"]
            size = len(payload) * 3 // 4 - payload.count("=", -2)
            self.heard_audio = True
            if self.utterances and self.utterances[-1].reply_at is None and self.speech is None:
                self.utterances[-1].reply_at = now
                fleet.reply_latency.add(now - self.utterances[-1].spoken_at)
            if self.reply_open:
                fleet.agent_lateness.add(max(0.0, now - self.playback.played_until))
            self.reply_open = True
            fleet.agent_audio_s += size / 8000
            self.playback.media(size, now)
        elif event == "mark":
            name = str(message["mark"]["name"])
            if "." not in name:  # turn-N: the reply's last audio went before it
                self.reply_open = False
            self.echoes += self.playback.mark(name, now)
        elif event == "clear":
            self.reply_open = False
            fleet.clears += 1
            self.echoes += self.playback.clear(now)


def conversational(audio: CallerAudio, min_s: float = 1.2) -> CallerAudio:
    """The questions of at least ``min_s`` (not "yes please"): a conversation's turns, as long as the replies."""
    longer = tuple(u for u in audio.utterances if len(u) * 0.02 >= min_s)
    return CallerAudio(longer or audio.utterances, audio.silence, audio.source)


class ConversationFleet(Fleet):
    """A fleet of :class:`ConversationCall` callers, with the agent-audio figures they share."""

    call_class = ConversationCall

    def __init__(self, base: str, audio: CallerAudio, behaviour: Behaviour, seed: int = 0) -> None:
        super().__init__(base, audio, behaviour, seed)
        self.agent_lateness = LatencyHistogram()
        self.reply_latency = LatencyHistogram(max_ms=20_000, bin_ms=1.0)  # end of a question -> first reply audio
        self.agent_audio_s = 0.0
        self.barge_ins = 0
        self.clears = 0


async def conversation(base: str, params: dict[str, Any], server_pid: int) -> dict[str, Any]:
    """Ramp talking calls in steps until agent-audio or inbound lateness breaks the limit (then bisect)."""
    start, step, limit = params.get("start", 50), params.get("step", 50), params.get("max_calls", 600)
    settle, window = params.get("settle_s", 4.0), params.get("window_s", 8.0)
    limit_ms = params.get("lateness_p99_ms", 20.0)
    inbound_counts = params.get("inbound_limit", True)  # false: inbound lateness reported, not a criterion
    reply_p95_s = params.get("reply_p95_s")  # a bound on the reply latency's p95 (the embedded stack's criterion)
    refine = params.get("refine", 2)
    steps_list = params.get("steps")  # an explicit list of call counts (the embedded stack's small numbers)
    talk = Talk(wait_for_reply=True, greeting_s=(0.0, 0.0), pause_after_reply_s=params.get("pause_s", 0.3),
                reply_timeout_s=params.get("reply_timeout_s", 6.0), barge_in_every=params.get("barge_in_every", 3))
    audio = conversational(caller_audio())
    steps: list[dict[str, Any]] = []
    expected = len(steps_list) if steps_list else max(1, math.ceil((limit - start) / step) + 1 + refine)

    fleet = ConversationFleet(base, audio, talk)
    async with fleet:
        await fleet.warm_up(calls=params.get("warmup_calls", 5))
        fleet.behaviour = talk
        idle = await fleet.server_stats()
        frames_in_before, sent_before_all = idle["frames_in"], fleet.frames_sent

        async def measure(target: int) -> dict[str, Any]:
            _progress(len(steps) / expected, f"{target} talking calls")
            failures_before = len(fleet.failures)
            await fleet.resize(target)
            await fleet.wait_closed(10)
            await asyncio.sleep(settle)
            before = await fleet.server_stats(reset="1")
            fleet.send_lateness.reset()
            fleet.agent_lateness = LatencyHistogram()
            fleet.reply_latency = LatencyHistogram(max_ms=20_000, bin_ms=1.0)
            spoken_before = sum(len(c.utterances) for c in fleet.calls)
            audio_before, barge_before, clears_before = fleet.agent_audio_s, fleet.barge_ins, fleet.clears
            speaking_before = sum(1 for c in fleet.calls if c.speech is not None)
            sent_before, wall_before, cpu_before = fleet.frames_sent, time.monotonic(), _cpu_s()
            wait_before = run_queue_wait_s()
            speech_samples = 0
            samples = 0
            deadline = wall_before + window
            while time.monotonic() < deadline:  # sample who is speaking, 10 times a second
                await asyncio.sleep(0.1)
                speech_samples += sum(1 for c in fleet.calls if c.speech is not None)
                samples += 1
            after = await fleet.server_stats(cdf="1")
            wall = time.monotonic() - wall_before
            inbound = after["lateness"]
            agent = fleet.agent_lateness.summary()
            replies = fleet.reply_latency.summary((50, 95))
            spoken = sum(len(c.utterances) for c in fleet.calls) - spoken_before
            failed = len(fleet.failures) - failures_before
            live = max(1, fleet.alive)
            entry = {
                "calls": fleet.alive,
                "target": target,
                "agent_lateness_ms": agent,
                "inbound_lateness_ms": {k: v for k, v in inbound.items() if k != "count"},
                "reply_latency_ms": replies,
                "questions": spoken,
                "frames_measured": inbound["count"],
                "caller_speech_fraction": round(speech_samples / max(1, samples) / live, 3),
                "agent_speech_fraction": round((fleet.agent_audio_s - audio_before) / wall / live, 3),
                "barge_ins_per_call_minute": round((fleet.barge_ins - barge_before) / wall * 60 / live, 2),
                "clears": fleet.clears - clears_before,
                "frames_sent_per_s": round((fleet.frames_sent - sent_before) / wall, 1),
                "client_send_lateness_p99_ms": fleet.send_lateness.summary()["p99_ms"],
                "server_cpu_percent": round(100 * (after["cpu_s"] - before["cpu_s"]) / wall, 1),
                "server_waiting_for_cpu_percent": round(100 * (after["cpu_wait_s"] - before["cpu_wait_s"]) / wall, 1),
                "client_cpu_percent": round(100 * (_cpu_s() - cpu_before) / wall, 1),
                "client_waiting_for_cpu_percent": round(100 * (run_queue_wait_s() - wait_before) / wall, 1),
                "rss_mb": round(_rss_mb(server_pid), 2),
                "tasks": after["tasks"],
                "failed_calls": failed,
                "speaking_at_start": speaking_before,
            }
            agent_p99 = agent["p99_ms"] if agent.get("count") else None
            reply_ok = reply_p95_s is None or (bool(replies["count"])
                                               and (replies["p95_ms"] or 0.0) <= reply_p95_s * 1000)
            inbound_ok = bool(inbound["count"]) and (not inbound_counts or inbound["p99_ms"] <= limit_ms)
            entry["pass"] = (inbound_ok and agent_p99 is not None and agent_p99 <= limit_ms and reply_ok
                             and failed == 0 and entry["calls"] >= target)
            steps.append(entry)
            return entry

        passed, failed_at = await ramp(measure, start=start, step=step, limit=limit, refine=refine,
                                       steps=[int(target) for target in steps_list or ()])
        # Dropped frames: every frame the callers sent since the warm-up reached our first stage.
        await fleet.hang_up(len(fleet.calls))
        await fleet.wait_closed(30)
        await asyncio.sleep(1.0)
        end = await fleet.server_stats()
        frames_sent = fleet.frames_sent - sent_before_all
        frames_received = end["frames_in"] - frames_in_before
        failures = fleet.failures[-10:]
    return {"max_calls": passed, "first_failing_calls": failed_at, "idle_rss_mb": idle["rss_mb"], "steps": steps,
            "frames_sent": frames_sent, "frames_received": frames_received,
            "dropped_frames": frames_sent - frames_received, "failures_sample": failures,
            "lateness_limit_ms": limit_ms, "audio": audio.source}


def main(argv: list[str] | None = None) -> int:
    """Caller process: run the conversation ramp against ``--base`` and print its JSON result."""
    parser = argparse.ArgumentParser(description="talking callers")
    parser.add_argument("--base", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--params", default="{}")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    result = asyncio.run(conversation(args.base, json.loads(args.params), args.server_pid))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
