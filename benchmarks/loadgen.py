"""Load generation for the capacity, turn and soak suites: a scripted server and a fleet of phone callers.

The harness side (:func:`run_scenario`) starts ``benchmarks.scripted_server``
pinned to one core and this module's caller process pinned to another, and
reads back one JSON result. The caller process runs a :class:`Fleet`: real
WebSocket clients (the ``websockets`` library, no compression, as Twilio)
that fetch TwiML from the signed webhook, then stream 20 ms μ-law frames at
real-time pace from one 1 ms ticker, each call at its own phase within the
20 ms period (so frames reach the server spread out, as from a real carrier).
Callers speak synthetic utterances (espeak-ng, comfort noise underneath),
stay silent between them, count the agent's audio as played at 8 kB/s and
echo each mark when playback reaches it.

Scenarios: ``capacity`` (ramp the number of calls), ``turns`` (speak, wait
for the reply, repeat; each utterance's stamps joined to its turn's timings
in the call record), ``soak`` (a steady number of calls that hang up and are
replaced) and ``ingress`` (calls speaking and pausing; each frame's send
time joined to when the server's probe saw it reach the STT stage).

    python -m benchmarks.loadgen SCENARIO --base http://127.0.0.1:PORT [--cpu N] [--params JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from aybiza.testing.playback import PlaybackBuffer
from aybiza.testing.processes import free_port, serving
from aybiza.testing.scripted import LatencyHistogram
from aybiza.testing.twilio_caller import new_sid
from benchmarks.callers import PROGRESS, ProgressFn, child_env, run_callers
from benchmarks.machine import run_queue_wait_s, wait_for_quiet
from benchmarks.ramp import ramp

__all__ = [
    "CallerAudio",
    "Fleet",
    "ProgressFn",
    "ServerProcess",
    "TwilioMessages",
    "caller_audio",
    "cpu_plan",
    "join_turns",
    "run_scenario",
    "scripted_server",
]

ROOT = Path(__file__).resolve().parents[1]
AUTH_TOKEN = "aybiza-bench-auth-token"  # the same as benchmarks.scripted_server.AUTH_TOKEN
API_HEADERS = {"Authorization": "Bearer aybiza-bench-api-token"}  # benchmarks.scripted_server.API_TOKEN
FRAME_S = 0.02
SLOTS = 20  # 1 ms ticker slots in a 20 ms period


# -- harness side ------------------------------------------------------------------------------


def cpu_plan() -> tuple[int | None, int | None]:
    """(server core, callers core): two different cores if this process may use two, else unpinned."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[1]


@dataclass
class ServerProcess:
    """A running scripted server: its port, pid and log."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id (the callers sample its CPU)."""
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def scripted_server(*, cpu: int | None, timings: dict[str, Any] | None = None, probe_ingress: bool = False,
                    log_level: str = "WARNING") -> Iterator[ServerProcess]:
    """Run ``benchmarks.scripted_server`` on a free port (pinned to ``cpu``) until the block ends."""
    port = free_port()
    log_path = Path(tempfile.gettempdir()) / f"aybiza-bench-server-{port}.log"
    scratch = tempfile.mkdtemp(prefix="aybiza-bench-")  # the call store; removed with the server
    command = [sys.executable, "-m", "benchmarks.scripted_server", "--port", str(port), "--data-dir", scratch,
               "--timings", json.dumps(timings or {}), "--log-level", log_level]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if probe_ingress:
        command.append("--probe-ingress")
    env = child_env()
    succeeded = False
    try:
        with serving(command, health_url=f"http://127.0.0.1:{port}/health", log_path=log_path, env=env, cwd=ROOT,
                     what="scripted server") as process:
            yield ServerProcess(port, process, log_path)
        succeeded = True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if succeeded:
            log_path.unlink(missing_ok=True)  # kept after a failure, for its tail in the error


def run_scenario(scenario: str, params: dict[str, Any], *, timings: dict[str, Any] | None = None,
                 probe_ingress: bool = False, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Start a scripted server and a caller process for ``scenario``; return the callers' JSON result.

    It first waits (up to 30 s) for the machine to be quiet. The result gets
    ``server_cpu``/``callers_cpu`` (None = not pinned) and
    ``machine_busy_percent_before`` (how busy the cores were when it started).
    """
    server_cpu, callers_cpu = cpu_plan()
    if progress is not None:
        progress(0.0, "waiting for a quiet machine")
    busy_before = wait_for_quiet()
    with scripted_server(cpu=server_cpu, timings=timings, probe_ingress=probe_ingress) as server:
        result = run_callers("benchmarks.loadgen", [scenario], server=server, params=params, cpu=callers_cpu,
                             label=scenario, progress=progress)
    result.update(server_cpu=server_cpu, callers_cpu=callers_cpu, machine_busy_percent_before=busy_before)
    return result


# -- caller audio ------------------------------------------------------------------------------

UTTERANCES = (
    "what time do you open tomorrow",
    "I would like to book a cleaning",
    "can I pay my bill over the phone",
    "do you take my insurance",
    "yes please",
)


@dataclass(frozen=True)
class CallerAudio:
    """Base64 μ-law frames, 20 ms each: utterances (trimmed speech) and comfort-noise silence."""

    utterances: tuple[tuple[str, ...], ...]
    silence: tuple[str, ...]
    source: str


def _encode_frames(pcm: np.ndarray[Any, Any]) -> tuple[str, ...]:
    from aybiza.codecs import lin2ulaw

    samples = np.clip(pcm, -32768, 32767).astype("<i2")
    pad = (-samples.size) % 160
    samples = np.concatenate([samples, np.zeros(pad, dtype="<i2")])
    ulaw = lin2ulaw(samples.tobytes())
    return tuple(base64.b64encode(ulaw[i : i + 160]).decode("ascii") for i in range(0, len(ulaw), 160))


def _speech(text: str) -> np.ndarray[Any, Any] | None:
    """Espeak-ng speech at 8 kHz with leading and trailing silence trimmed (None without espeak-ng)."""
    try:
        from aybiza.codecs import ulaw2lin
        from aybiza.testing.caller import caller_speech

        pcm = ulaw2lin(caller_speech(text))  # the same audio every run (resampled in one piece)
    except Exception:
        return None
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    loud = np.flatnonzero(np.abs(samples) > 500)
    if loud.size == 0:
        return None
    return samples[loud[0] : loud[-1] + 1]


def _synthetic_speech(seconds: float, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """Voiced, syllable-modulated harmonics: what the VAD takes for speech when espeak-ng is missing."""
    t = np.arange(int(seconds * 8000)) / 8000
    pitch = 120 + 20 * rng.random()
    voice: np.ndarray[Any, Any] = np.zeros_like(t)
    for k in range(1, 12):
        voice += np.sin(2 * np.pi * pitch * k * t) / k
    out: np.ndarray[Any, Any] = 6000 * voice * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    return out


def caller_audio(seed: int = 0) -> CallerAudio:
    """The callers' utterances and silence (comfort noise about 60 dB below full scale underneath)."""
    rng = np.random.default_rng(seed)
    clips: list[np.ndarray[Any, Any]] = []
    source = "espeak-ng"
    for text in UTTERANCES:
        speech = _speech(text)
        if speech is None:
            source = "synthetic"
            speech = _synthetic_speech(0.6 + 0.25 * len(text.split()), rng)
        clips.append(speech)
    noise_level = 32768 * 10 ** (-60 / 20)
    utterances = tuple(_encode_frames(clip + rng.normal(0, noise_level, clip.size)) for clip in clips)
    silence = _encode_frames(rng.normal(0, noise_level, 8000))
    return CallerAudio(utterances, silence, source)


# -- Twilio's messages, fast -------------------------------------------------------------------


class TwilioMessages:
    """What Twilio sends on a Media Stream, byte for byte as ``TwilioCallerProtocol`` builds it, but with
    media messages from a string template (a loaded caller process sends tens of thousands a second)."""

    __slots__ = ("stream_sid", "call_sid", "account_sid", "custom", "sequence", "chunk", "_tail")

    def __init__(self, stream_sid: str, call_sid: str, account_sid: str, custom: dict[str, str]) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.custom = custom
        self.sequence = 0
        self.chunk = 0
        self._tail = '"},"streamSid":"' + stream_sid + '"}'

    def connected(self) -> str:
        """The first message."""
        return '{"event":"connected","protocol":"Call","version":"1.0.0"}'

    def start(self) -> str:
        """Stream metadata with the custom parameters from the TwiML."""
        self.sequence += 1
        start = {"accountSid": self.account_sid, "streamSid": self.stream_sid, "callSid": self.call_sid,
                 "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                        "channels": 1},
                 "customParameters": self.custom}
        return json.dumps({"event": "start", "sequenceNumber": str(self.sequence), "start": start,
                           "streamSid": self.stream_sid}, separators=(",", ":"))

    def media(self, payload_b64: str) -> str:
        """One 20 ms frame (160 μ-law bytes, base64)."""
        self.sequence += 1
        chunk = self.chunk = self.chunk + 1
        return (f'{{"event":"media","sequenceNumber":"{self.sequence}","media":{{"track":"inbound",'
                f'"chunk":"{chunk}","timestamp":"{(chunk - 1) * 20}","payload":"{payload_b64}' + self._tail)

    def mark(self, name: str) -> str:
        """Echo of a server mark."""
        self.sequence += 1
        return json.dumps({"event": "mark", "sequenceNumber": str(self.sequence), "streamSid": self.stream_sid,
                           "mark": {"name": name}}, separators=(",", ":"))

    def stop(self) -> str:
        """The caller hung up."""
        self.sequence += 1
        return json.dumps({"event": "stop", "sequenceNumber": str(self.sequence),
                           "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                           "streamSid": self.stream_sid}, separators=(",", ":"))


# -- the callers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """How a caller talks: fixed gaps (load) or wait-for-the-reply (turn timing)."""

    wait_for_reply: bool = False
    greeting_s: tuple[float, float] = (3.0, 5.0)  # fixed mode: silence before the first utterance
    gap_s: tuple[float, float] = (4.5, 6.5)  # fixed mode: silence after each utterance
    pause_after_reply_s: float = 0.6  # reply mode: silence once the reply has played
    reply_timeout_s: float = 8.0
    turns: int | None = None  # hang up after this many utterances (and their replies)
    call_s: tuple[float, float] | None = None  # hang up after a random duration in this range
    record: bool = False  # keep per-frame send times and per-utterance stamps


@dataclass
class Utterance:
    """One utterance as the caller saw it."""

    spoken_at: float  # monotonic time the last frame of speech was sent
    frame: int = -1  # that frame's index in the call's ``sent_at`` (its media chunk number - 1)
    spoken_wall: float = 0.0  # the same moment on the wall clock (call records are stamped with it)
    reply_at: float | None = None  # first agent audio received after it


class Call:
    """One caller on one WebSocket."""

    def __init__(self, fleet: Fleet, ws: Any, messages: TwilioMessages, behaviour: Behaviour,
                 rng: random.Random, now: float) -> None:
        self.fleet = fleet
        self.ws = ws
        self.messages = messages
        self.behaviour = behaviour
        self.rng = rng
        self.started = now
        self.slot = 0
        self.speech: tuple[str, ...] | None = None
        self.position = 0
        self.next_utterance = rng.randrange(len(fleet.audio.utterances))
        self.silence_at = rng.randrange(len(fleet.audio.silence))
        self.quiet_until = now + rng.uniform(*behaviour.greeting_s)
        self.playback = PlaybackBuffer()  # times only: the load generator does not keep the audio
        self.echoes: list[str] = []  # marks to echo at the next frame (clear, or nothing left to play)
        self.heard_audio = False
        self.utterances: list[Utterance] = []
        self.sent_at = array("d") if behaviour.record else None
        self.hangup_at = now + rng.uniform(*behaviour.call_s) if behaviour.call_s else math.inf
        self.stopping = False
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.frames = 0

    def _ready_to_speak(self, now: float) -> bool:
        b = self.behaviour
        if b.turns is not None and len(self.utterances) >= b.turns:
            return False
        if not b.wait_for_reply:
            return now >= self.quiet_until
        waiting_for = self.utterances[-1] if self.utterances else None
        replied = self.heard_audio if waiting_for is None else waiting_for.reply_at is not None
        if not replied:
            return now - (waiting_for.spoken_at if waiting_for else self.started) > b.reply_timeout_s
        return self.playback.idle(now - b.pause_after_reply_s)

    def next_frame(self, now: float) -> tuple[str, bool]:
        """The next 20 ms payload and whether it ends an utterance."""
        if self.speech is None and self._ready_to_speak(now):
            utterances = self.fleet.audio.utterances
            self.speech = utterances[self.next_utterance % len(utterances)]
            self.next_utterance += 1
            self.position = 0
        if self.speech is not None:
            payload = self.speech[self.position]
            self.position += 1
            if self.position == len(self.speech):
                self.speech = None
                self.quiet_until = now + self.rng.uniform(*self.behaviour.gap_s)
                return payload, True
            return payload, False
        silence = self.fleet.audio.silence
        self.silence_at = (self.silence_at + 1) % len(silence)
        return silence[self.silence_at], False

    @property
    def done(self) -> bool:
        """Whether the caller has said all it will say and heard the last reply out (or timed out)."""
        b = self.behaviour
        if b.turns is None or len(self.utterances) < b.turns or self.speech is not None:
            return False
        last = self.utterances[-1]
        now = time.monotonic()
        if last.reply_at is None:
            return now - last.spoken_at > b.reply_timeout_s
        return self.playback.idle(now - b.pause_after_reply_s)

    def on_message(self, text: str | bytes, now: float) -> None:
        """Feed one server message to the phone's playback (marks due at once wait in ``echoes``)."""
        message = json.loads(text)
        event = message.get("event")
        if event == "media":
            payload = message["media"]["payload"]
            size = len(payload) * 3 // 4 - payload.count("=", -2)
            if not self.heard_audio:
                self.heard_audio = True
            if self.utterances and self.utterances[-1].reply_at is None and self.speech is None:
                self.utterances[-1].reply_at = now
            self.playback.media(size, now)
        elif event == "mark":
            self.echoes += self.playback.mark(message["mark"]["name"], now)
        elif event == "clear":
            self.echoes += self.playback.clear(now)

    def marks_due(self, now: float) -> list[str]:
        """The marks to echo now, in order."""
        due, self.echoes = self.echoes, []
        return due + self.playback.due(now)


class Fleet:
    """Callers in one process: connect, stream in real time from one ticker, hang up."""

    call_class: type[Call] = Call  # a subclass may place callers that behave otherwise (benchmarks.conversation)

    def __init__(self, base: str, audio: CallerAudio, behaviour: Behaviour, seed: int = 0) -> None:
        self.base = base.rstrip("/")
        self.ws_url = self.base.replace("http://", "ws://") + "/twilio/stream"
        self.audio = audio
        self.behaviour = behaviour
        self.rng = random.Random(seed)
        self.validator = RequestValidator(AUTH_TOKEN)
        self.http = httpx.AsyncClient(base_url=self.base, timeout=30, headers=API_HEADERS)
        self.calls: set[Call] = set()
        self.finished: list[Call] = []
        self.slots: list[set[Call]] = [set() for _ in range(SLOTS)]
        self.send_lateness = LatencyHistogram()
        self.frames_sent = 0
        self.failures: list[str] = []
        self.connect_ms = LatencyHistogram()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = True
        self._ticker: asyncio.Task[None] | None = None
        self.keep_finished = behaviour.record

    # lifecycle

    async def __aenter__(self) -> Fleet:
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hang_up(len(self.calls))
        await self.wait_closed(20)
        self._running = False
        if self._ticker is not None:
            self._ticker.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.http.aclose()

    @property
    def alive(self) -> int:
        """Calls streaming and not about to hang up."""
        now = time.monotonic()
        return sum(1 for call in self.calls if not call.stopping and call.hangup_at > now)

    async def grow(self, count: int, concurrency: int = 20) -> None:
        """Place ``count`` more calls, ``concurrency`` set-ups at a time."""
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                await self._place_call()

        await asyncio.gather(*(one() for _ in range(count)))

    async def hang_up(self, count: int) -> None:
        """Hang up ``count`` calls (the oldest first)."""
        now = time.monotonic()
        live = (c for c in self.calls if not c.stopping and c.hangup_at > now)
        for call in sorted(live, key=lambda c: c.started)[:count]:
            call.hangup_at = 0.0

    async def resize(self, target: int) -> None:
        """Grow or shrink to ``target`` live calls."""
        alive = self.alive
        if target > alive:
            await self.grow(target - alive)
        elif target < alive:
            await self.hang_up(alive - target)

    async def wait_closed(self, within_s: float) -> None:
        """Wait (up to ``within_s``) until every hung-up call's socket has closed."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            now = time.monotonic()
            if not any(c.stopping or c.hangup_at <= now for c in self.calls):
                return
            await asyncio.sleep(0.05)

    # calls

    async def _place_call(self) -> None:
        started = time.monotonic()
        call_sid, account_sid = new_sid("CA"), new_sid("AC")
        params = {"CallSid": call_sid, "AccountSid": account_sid, "From": "+15555550123", "To": "+18005550100",
                  "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
        signature = self.validator.compute_signature(self.base + "/twiml", params)
        try:
            response = await self.http.post("/twiml", data=params, headers={"X-Twilio-Signature": signature})
            response.raise_for_status()
            stream = ET.fromstring(response.text).find("./Connect/Stream")
            assert stream is not None, "TwiML without <Connect><Stream>"
            custom = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
            header = self.validator.compute_signature(stream.get("url", ""), {})
            ws = await connect(self.ws_url, additional_headers={"X-Twilio-Signature": header}, compression=None,
                               max_size=2**22, ping_interval=None, open_timeout=30, close_timeout=10)
        except Exception as error:  # a refused or broken set-up is a failed call, not a crash
            self.failures.append(f"setup: {type(error).__name__}: {error}")
            return
        messages = TwilioMessages(new_sid("MZ"), call_sid, account_sid, custom)
        await ws.send(messages.connected())
        await ws.send(messages.start())
        call = self.call_class(self, ws, messages, self.behaviour, random.Random(self.rng.random()), time.monotonic())
        self.connect_ms.add(time.monotonic() - started)
        call.slot = min(range(SLOTS), key=lambda s: len(self.slots[s]))
        self.slots[call.slot].add(call)
        self.calls.add(call)
        task = asyncio.create_task(self._receive(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _receive(self, call: Call) -> None:
        try:
            async for message in call.ws:
                call.on_message(message, time.monotonic())
        except ConnectionClosed:
            pass
        except Exception as error:
            self.failures.append(f"receive: {type(error).__name__}: {error}")
        finally:
            call.close_code = call.ws.close_code
            if not call.stopping or call.close_code not in (1000, None):
                reason = call.ws.close_reason or ""
                self.failures.append(f"call {call.messages.call_sid} closed by server: {call.close_code} {reason}")
            self._retire(call)

    def _retire(self, call: Call) -> None:
        self.slots[call.slot].discard(call)
        self.calls.discard(call)
        if self.keep_finished:
            self.finished.append(call)
        call.closed.set()

    async def _stop(self, call: Call) -> None:
        try:
            await call.ws.send(call.messages.stop())
            await asyncio.wait_for(call.closed.wait(), 15)
        except Exception:
            await call.ws.close()

    # the ticker

    async def _tick(self) -> None:
        """Every 1 ms, send the due frame of the calls in that slot (catching up if the loop was late)."""
        slot_s = FRAME_S / SLOTS
        origin = time.monotonic()
        tick = 0
        lateness = self.send_lateness
        while self._running:
            due = origin + tick * slot_s
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for call in list(self.slots[tick % SLOTS]):
                now = time.monotonic()
                if now >= call.hangup_at or call.done:
                    call.stopping = True
                    self.slots[call.slot].discard(call)
                    self._spawn(self._stop(call))
                    continue
                ws, messages = call.ws, call.messages
                try:
                    for name in call.marks_due(now):
                        await ws.send(messages.mark(name))
                    payload, ends_utterance = call.next_frame(now)
                    await ws.send(messages.media(payload))
                except Exception:
                    self.slots[call.slot].discard(call)  # the receiver sees the close and retires it
                    continue
                sent = time.monotonic()
                lateness.add(sent - due)
                self.frames_sent += 1
                call.frames += 1
                if call.sent_at is not None:
                    call.sent_at.append(sent)
                if ends_utterance:
                    call.utterances.append(Utterance(sent, call.frames - 1, time.time()))
            tick += 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def fresh_http(self) -> None:
        """Drop pooled HTTP connections (so the server's open fds can be compared between snapshots)."""
        await self.http.aclose()
        self.http = httpx.AsyncClient(base_url=self.base, timeout=30, headers=API_HEADERS)
        await asyncio.sleep(0.5)

    async def warm_up(self, calls: int = 10, seconds: float = 5.0) -> None:
        """A few calls that speak at once and hang up after the reply: first-use costs (lazy imports, the
        first store write, the first detection) then land here, not in a measurement."""
        behaviour, self.behaviour = self.behaviour, Behaviour(greeting_s=(0.2, 0.4), gap_s=(30.0, 30.0),
                                                              call_s=(seconds, seconds))
        try:
            await self.grow(calls)
            await asyncio.sleep(seconds + 0.5)
            await self.wait_closed(20)
        finally:
            self.behaviour = behaviour

    async def server_stats(self, **query: str) -> dict[str, Any]:
        """``GET /bench/stats``."""
        response = await self.http.get("/bench/stats", params=query)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


# -- scenarios (caller process) ----------------------------------------------------------------


def _progress(fraction: float, text: str) -> None:
    print(f"{PROGRESS} {min(1.0, max(0.0, fraction)):.3f} {text}", file=sys.stderr, flush=True)


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def capacity(base: str, params: dict[str, Any], server_pid: int) -> dict[str, Any]:
    """Ramp calls in steps until p99 frame lateness exceeds the limit; bisect between the last two steps."""
    start, step, limit = params.get("start", 50), params.get("step", 50), params.get("max_calls", 800)
    settle, window = params.get("settle_s", 3.0), params.get("window_s", 5.0)
    lateness_limit_ms = params.get("lateness_p99_ms", 20.0)
    refine = params.get("refine", 2)
    audio = caller_audio()
    steps: list[dict[str, Any]] = []
    expected = max(1, math.ceil((limit - start) / step) + 1 + refine)

    async with Fleet(base, audio, Behaviour()) as fleet:
        await fleet.warm_up()
        idle = await fleet.server_stats()

        async def measure(target: int) -> dict[str, Any]:
            _progress(len(steps) / expected, f"{target} calls")
            failures_before = len(fleet.failures)
            await fleet.resize(target)
            await fleet.wait_closed(10)
            await asyncio.sleep(settle)
            before = await fleet.server_stats(reset="1")
            fleet.send_lateness.reset()
            sent_before, wall_before, cpu_before = fleet.frames_sent, time.monotonic(), _cpu_s()
            wait_before = run_queue_wait_s()
            await asyncio.sleep(window)
            after = await fleet.server_stats(cdf="1")
            wall = time.monotonic() - wall_before
            lateness = after["lateness"]
            failed = len(fleet.failures) - failures_before
            entry = {
                "calls": fleet.alive,
                "target": target,
                "lateness_ms": {k: v for k, v in lateness.items() if k != "count"},
                "frames_measured": lateness["count"],
                "frames_sent_per_s": round((fleet.frames_sent - sent_before) / wall, 1),
                "client_send_lateness_p99_ms": fleet.send_lateness.summary()["p99_ms"],
                "server_cpu_percent": round(100 * (after["cpu_s"] - before["cpu_s"]) / wall, 1),
                "server_waiting_for_cpu_percent": round(100 * (after["cpu_wait_s"] - before["cpu_wait_s"]) / wall, 1),
                "client_cpu_percent": round(100 * (_cpu_s() - cpu_before) / wall, 1),
                "client_waiting_for_cpu_percent": round(100 * (run_queue_wait_s() - wait_before) / wall, 1),
                "rss_mb": round(_rss_mb(server_pid), 2),
                "tasks": after["tasks"],
                "gc": after.get("gc"),
                "failed_calls": failed,
                "lateness_cdf_ms": after.get("lateness_cdf_ms", []),
            }
            entry["pass"] = bool(lateness["count"]) and lateness["p99_ms"] <= lateness_limit_ms and failed == 0 \
                and entry["calls"] >= target
            steps.append(entry)
            return entry

        passed, high = await ramp(measure, start=start, step=step, limit=limit, refine=refine)
        failures = fleet.failures[-10:]
    return {"max_calls": passed, "first_failing_calls": high, "idle_rss_mb": idle["rss_mb"], "steps": steps,
            "failures_sample": failures, "lateness_limit_ms": lateness_limit_ms, "audio": audio.source}


TURN_TIMINGS = ("stt_final", "llm_first_sentence", "tts_first_byte", "voice_to_voice")
"""What a turn's record must hold to be broken down (``llm_first_token`` is kept when there)."""


async def turns(base: str, params: dict[str, Any], server_pid: int) -> dict[str, Any]:
    """Calls that speak, wait for the reply and speak again; per turn, the caller's stamps joined to the
    timings our stages recorded in the call record (``GET /api/calls/{id}``)."""
    calls, per_call = params.get("calls", 10), params.get("turns", 5)
    behaviour = Behaviour(wait_for_reply=True, turns=per_call, record=True, greeting_s=(0.0, 0.0))
    audio = caller_audio()
    async with Fleet(base, audio, behaviour, seed=1) as fleet:
        await fleet.warm_up(calls=2)
        fleet.finished.clear()
        before, started = await fleet.server_stats(), time.monotonic()
        await fleet.grow(calls)
        deadline = time.monotonic() + per_call * 15 + 20
        while fleet.calls and time.monotonic() < deadline:
            spoken = sum(len(c.utterances) for c in fleet.calls) + sum(len(c.utterances) for c in fleet.finished)
            _progress(spoken / (calls * per_call), f"{spoken} turns")
            await asyncio.sleep(0.5)
        after, wall = await fleet.server_stats(), time.monotonic() - started
        await fleet.hang_up(len(fleet.calls))
        await fleet.wait_closed(20)
        finished = list(fleet.finished) + list(fleet.calls)
        records = {}
        for call in finished:  # a call's record is committed before its socket closes
            response = await fleet.http.get(f"/api/calls/{call.messages.call_sid}")
            if response.status_code == 200:
                records[call.messages.call_sid] = response.json()
        failures = fleet.failures[-10:]
    window_frames = round(after["end_of_turn_ms"] / (FRAME_S * 1000))
    rows, unmatched = join_turns(finished, records, window_frames, params.get("needs", TURN_TIMINGS))
    return {"calls": calls, "turns_per_call": per_call, "rows": rows, "unmatched_utterances": unmatched,
            "failures_sample": failures, "audio": audio.source, "end_of_turn_ms": after["end_of_turn_ms"],
            "server_waiting_for_cpu_percent": round(100 * (after["cpu_wait_s"] - before["cpu_wait_s"]) / wall, 1)}


def join_turns(calls: list[Call], records: dict[str, dict[str, Any]], window_frames: int,
               needs: Sequence[str] = TURN_TIMINGS) -> tuple[list[dict[str, float]], int]:
    """One row per utterance answered: the caller's monotonic stamps and the turn's timings (seconds).

    An utterance's turn is the record's turn that began (``at``, wall clock)
    within 3 s after the utterance ended; ``window_sent`` is when the caller
    sent the frame that completed the VAD's end-of-turn window
    (``window_frames`` 20 ms frames after the last frame of speech).
    """
    rows: list[dict[str, float]] = []
    unmatched = 0
    for call in calls:
        record = records.get(call.messages.call_sid, {})
        turns = [t for t in record.get("turns", []) if t.get("turn_id", 0) > 0 and t.get("user")]
        sent_at = call.sent_at
        for utterance in call.utterances:
            turn = next((t for t in turns if utterance.spoken_wall < t["at"] < utterance.spoken_wall + 3.0), None)
            window = utterance.frame + window_frames
            timings = turn.get("timings", {}) if turn is not None else {}
            if turn is None or utterance.reply_at is None or sent_at is None or utterance.frame < 0 \
                    or window >= len(sent_at) or any(name not in timings for name in needs):
                unmatched += 1
                continue
            turns.remove(turn)
            rows.append({"spoken_at": utterance.spoken_at, "window_sent": sent_at[window],
                         "reply_at": utterance.reply_at, **{name: float(timings[name]) for name in needs},
                         "llm_first_token": float(timings.get("llm_first_token",
                                                              timings.get("llm_first_sentence", math.nan)))})
    return rows, unmatched


async def ingress(base: str, params: dict[str, Any], server_pid: int) -> dict[str, Any]:
    """Calls speaking and pausing; per frame sent in the window, the delay until its audio reached the STT stage.

    Needs a server started with ``--probe-ingress``. Frames the VAD held back
    (pre-roll, the start of speech before it was confirmed) are returned apart.
    """
    calls, seconds = params.get("calls", 50), params.get("seconds", 8.0)
    settle = params.get("settle_s", 3.0)
    audio = caller_audio()
    async with Fleet(base, audio, Behaviour(greeting_s=(0.5, 1.5), gap_s=(0.8, 2.0), record=True),
                     seed=3) as fleet:
        await fleet.warm_up(calls=5, seconds=3.0)
        _progress(0.1, f"{calls} calls")
        await fleet.grow(calls)
        await asyncio.sleep(settle)
        begin = time.monotonic()
        step = seconds / 10
        for tick in range(10):
            await asyncio.sleep(step)
            _progress(0.1 + 0.09 * (tick + 1), f"{calls} calls, measuring")
        end = time.monotonic()
        measured = [call for call in fleet.calls if call.sent_at is not None]
        response = await fleet.http.get("/bench/ingress")
        response.raise_for_status()
        reached: dict[str, list[list[Any]]] = response.json()
        frames_sent = sum(1 for call in measured for sent in call.sent_at or () if begin <= sent <= end)
        failures = fleet.failures[-10:]
    live: list[float] = []
    held: list[float] = []
    in_server: list[float] = []  # live frames: the transport's arrival stamp -> the STT stage
    for call in measured:
        sent_at = call.sent_at
        assert sent_at is not None
        for number, at, was_held, since_stamp in reached.get(call.messages.call_sid, []):
            if 1 <= number <= len(sent_at) and begin <= sent_at[number - 1] <= end:
                (held if was_held else live).append(at - sent_at[number - 1])
                if not was_held:
                    in_server.append(since_stamp)
    return {"calls": len(measured), "seconds": round(end - begin, 1), "frames_sent": frames_sent, "live_s": live,
            "held_s": held, "in_server_s": in_server, "failures_sample": failures, "audio": audio.source}


async def soak(base: str, params: dict[str, Any], server_pid: int) -> dict[str, Any]:
    """A steady number of calls for a while, replaced as they hang up; resources idle before and after.

    A warm-up of short calls (about 3 s each) first takes the server's memory
    to its working size, so growth measured afterwards is not the allocator
    settling in.
    """
    calls, duration = params.get("calls", 100), params.get("duration_s", 60.0)
    call_s = tuple(params.get("call_s", (15.0, 30.0)))
    warmup = params.get("warmup_s", 12.0)
    sample_every = params.get("sample_s", 2.0)
    audio = caller_audio()
    timeline: list[dict[str, Any]] = []

    async def keep(fleet: Fleet, seconds: float, sample: bool) -> int:
        """Hold ``calls`` live calls for ``seconds``, placing a new one as each hangs up; return calls placed."""
        started = time.monotonic()
        placed = 0
        next_sample = started
        while (elapsed := time.monotonic() - started) < seconds:
            missing = calls - fleet.alive
            if missing > 0:
                placed += missing
                await fleet.grow(missing)
            if sample and time.monotonic() >= next_sample:
                stats = await fleet.server_stats()
                timeline.append({"t_s": round(elapsed, 1), "calls": stats["active_calls"], "rss_mb": stats["rss_mb"],
                                 "fds": stats["fds"], "tasks": stats["tasks"], "threads": stats["threads"]})
                next_sample += sample_every
                _progress(elapsed / seconds, f"{stats['active_calls']} calls, RSS {stats['rss_mb']:.0f} MB")
            await asyncio.sleep(0.1)
        return placed

    async def settle_idle(fleet: Fleet) -> dict[str, Any]:
        await fleet.hang_up(len(fleet.calls))
        await fleet.wait_closed(30)
        deadline = time.monotonic() + 30
        stats = await fleet.server_stats()
        while stats["active_calls"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            stats = await fleet.server_stats()
        await fleet.fresh_http()
        # anyio's idle worker threads (and their locks, queues, contexts) go after 10 s without work: wait
        # them out, so both idle snapshots hold the same thread pool and the object counts compare.
        await asyncio.sleep(11.0)
        return await fleet.server_stats(objects="1")

    async with Fleet(base, audio, Behaviour(greeting_s=(0.5, 1.0), gap_s=(1.0, 2.0), call_s=(2.0, 4.0)),
                     seed=2) as fleet:
        _progress(0.0, "warm-up")
        warmup_calls = await keep(fleet, warmup, sample=False)
        idle_start = await settle_idle(fleet)
        fleet.behaviour = Behaviour(call_s=(call_s[0], call_s[1]))
        frames_before_client, frames_before_server = fleet.frames_sent, idle_start["frames_in"]
        failures_before = len(fleet.failures)
        before = await fleet.server_stats(reset="1")
        started = time.monotonic()
        placed = await keep(fleet, duration, sample=True)
        loaded = await fleet.server_stats()
        wall = time.monotonic() - started
        lateness = loaded["lateness"]
        idle_end = await settle_idle(fleet)
        frames_sent = fleet.frames_sent - frames_before_client
        frames_received = idle_end["frames_in"] - frames_before_server
        failures = fleet.failures[failures_before:]
    return {"calls": calls, "duration_s": duration, "warmup_calls": warmup_calls, "calls_placed": placed,
            "failed_calls": len(failures), "failures_sample": failures[:10], "frames_sent": frames_sent,
            "frames_received": frames_received, "idle_start": idle_start, "idle_end": idle_end, "timeline": timeline,
            "lateness_ms": {k: v for k, v in lateness.items() if k != "count"}, "audio": audio.source,
            "server_cpu_percent": round(100 * (loaded["cpu_s"] - before["cpu_s"]) / wall, 1),
            "server_waiting_for_cpu_percent": round(100 * (loaded["cpu_wait_s"] - before["cpu_wait_s"]) / wall, 1)}


SCENARIOS = {"capacity": capacity, "turns": turns, "soak": soak, "ingress": ingress}


def main(argv: list[str] | None = None) -> int:
    """Caller process: run one scenario against ``--base`` and print its JSON result."""
    parser = argparse.ArgumentParser(description="benchmark callers")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--base", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--params", default="{}")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    result = asyncio.run(SCENARIOS[args.scenario](args.base, json.loads(args.params), args.server_pid))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
