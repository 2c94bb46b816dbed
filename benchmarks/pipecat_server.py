"""A pipecat-ai Twilio server built the way pipecat's own Twilio examples build it, for ``aybiza bench compare``.

It runs in pipecat's own virtual environment (``benchmarks.compare`` makes
it), never in ours, and imports nothing of aybiza. The shape is that of
pipecat's ``twilio-chatbot`` example: FastAPI, a ``POST`` webhook answering
TwiML ``<Connect><Stream>``, a WebSocket endpoint that reads Twilio's first
messages with ``parse_telephony_websocket``, a ``TwilioFrameSerializer`` and a
``FastAPIWebsocketTransport`` at 8 kHz, a ``Pipeline`` run by a
``PipelineTask`` under a ``PipelineRunner``, one per call. The VAD is
pipecat's default Silero model in a ``VADProcessor`` (``--no-vad`` leaves it
out: the figure the issue quotes for pipecat "without VAD").

What differs from the example, and why:

* no STT, LLM or TTS service (they would call the internet). In the
  ``--talk`` mode a :class:`Replier` stands in for the whole
  STT→LLM→TTS chain: when the VAD reports the caller stopped speaking it
  pushes a canned reply (``--reply-s`` of a quiet 220 Hz tone, 8 kHz PCM; the
  same audio greets the caller on connect, as the example's bot introduces
  itself) to the output transport, which paces it to Twilio as it would a TTS's audio;
  when the caller starts speaking over it, it interrupts (pipecat's
  barge-in: the output is dropped and the serializer sends ``clear``).
  It is less work than any real chain — so pipecat's talking figure here is
  an upper bound;
* :class:`FrameClock`, last before the output transport, measures each
  inbound audio frame's lateness exactly as aybiza's bench server does
  (arrival at that point against a real-time schedule anchored at the
  call's most punctual frame) into ``GET /bench/stats``, with the process's
  RSS and CPU — what the shared load generator reads;
* signatures are not checked (pipecat's example does not check them).

    <pipecat venv>/bin/python benchmarks/pipecat_server.py --port P [--talk] [--no-vad] [--cpu N]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import threading
import time
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

PAGE = os.sysconf("SC_PAGE_SIZE")


class Histogram:
    """Lateness samples in 0.1 ms bins up to 5 s (the same bins as aybiza's LatencyHistogram)."""

    def __init__(self) -> None:
        self.counts = [0] * 50_001
        self.count = 0
        self.max_ms = 0.0

    def add(self, seconds: float) -> None:
        ms = seconds * 1000
        self.counts[min(max(int(ms / 0.1), 0), 50_000)] += 1
        self.count += 1
        self.max_ms = max(self.max_ms, ms)

    def percentile(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * q / 100))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return (index + 1) * 0.1
        return self.max_ms

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count}
        for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p99_9_ms", 99.9)):
            out[name] = round(self.percentile(q), 2) if self.count else None
        out["max_ms"] = round(self.max_ms, 2)
        return out


LATENESS = Histogram()
FRAMES_IN = [0]
CALLS = [0]


class FrameClock(FrameProcessor):
    """Counts inbound audio frames and measures how late each reaches this point of the pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self._audio_s = 0.0
        self._anchor = math.inf

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            FRAMES_IN[0] += 1
            offset = time.monotonic() - self._audio_s
            self._audio_s += len(frame.audio) / 2 / frame.sample_rate
            self._anchor = min(self._anchor, offset)
            LATENESS.add(offset - self._anchor)
        await self.push_frame(frame, direction)


class Replier(FrameProcessor):
    """Stands in for STT→LLM→TTS: a canned reply when the caller stops, an interruption when they talk over it."""

    def __init__(self, reply: bytes) -> None:
        super().__init__()
        self._reply = reply
        self._speaking_until = 0.0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking_until = time.monotonic() + len(self._reply) / 2 / 8000
            await self.push_frame(OutputAudioRawFrame(audio=self._reply, sample_rate=8000, num_channels=1))
        elif isinstance(frame, VADUserStartedSpeakingFrame) and time.monotonic() < self._speaking_until:
            self._speaking_until = 0.0
            await self.broadcast_interruption()


def _tone(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * 220 * t) * 3000).astype("<i2").tobytes()


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


def _cpu_wait_s() -> float:
    try:
        with open("/proc/self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except OSError:
        return 0.0


def build_app(*, talk: bool, vad: bool, reply_s: float) -> FastAPI:
    """The FastAPI app: webhook, media stream, bench stats."""
    app = FastAPI()
    reply = _tone(reply_s)

    @app.post("/twiml")
    async def twiml(request: Request) -> HTMLResponse:
        host = request.headers.get("host", "127.0.0.1")
        return HTMLResponse(f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
                            f'<Stream url="ws://{host}/twilio/stream"></Stream></Connect></Response>',
                            media_type="application/xml")

    @app.websocket("/twilio/stream")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        serializer = TwilioFrameSerializer(stream_sid=call_data["stream_id"], call_sid=call_data["call_id"],
                                           account_sid="", auth_token="",
                                           params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
        transport = FastAPIWebsocketTransport(websocket=websocket, params=FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=serializer))
        processors: list[FrameProcessor] = [transport.input()]
        if vad:
            processors.append(VADProcessor(vad_analyzer=SileroVADAnalyzer()))
        if talk:
            processors.append(Replier(reply))
        processors += [FrameClock(), transport.output()]
        task = PipelineTask(Pipeline(processors), params=PipelineParams(audio_in_sample_rate=8000,
                                                                        audio_out_sample_rate=8000))

        if talk:
            @transport.event_handler("on_client_connected")
            async def on_client_connected(transport: Any, client: Any) -> None:
                await task.queue_frames([OutputAudioRawFrame(audio=reply, sample_rate=8000, num_channels=1)])

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport: Any, client: Any) -> None:
            await task.cancel()

        CALLS[0] += 1
        try:
            await PipelineRunner(handle_sigint=False).run(task)
        finally:
            CALLS[0] -= 1

    @app.get("/bench/stats")
    async def stats(request: Request) -> JSONResponse:
        times = os.times()
        body: dict[str, Any] = {"rss_mb": round(_rss_mb(), 2), "cpu_s": round(times.user + times.system, 3),
                                "cpu_wait_s": round(_cpu_wait_s(), 3), "tasks": len(asyncio.all_tasks()),
                                "threads": threading.active_count(), "active_calls": CALLS[0],
                                "frames_in": FRAMES_IN[0], "lateness": LATENESS.summary(), "end_of_turn_ms": 0}
        if request.query_params.get("cdf") and LATENESS.count:
            body["lateness_cdf_ms"] = [round(LATENESS.percentile(q), 2) if q else 0.0 for q in range(101)]
        if request.query_params.get("reset"):
            LATENESS.__init__()  # type: ignore[misc]
        return JSONResponse(body)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description="pipecat Twilio server for aybiza bench compare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--talk", action="store_true", help="answer each utterance with a canned reply")
    parser.add_argument("--no-vad", action="store_true", help="leave Silero VAD out")
    parser.add_argument("--reply-s", type=float, default=1.6)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import sys
    import warnings

    from loguru import logger

    # PipelineTask/PipelineRunner, as the Twilio example uses them, warn that 2.0 renames them: not news here.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")  # pipecat logs every frame event at DEBUG: not what production runs
    app = build_app(talk=args.talk, vad=not args.no_vad, reply_s=args.reply_s)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", ws_ping_interval=None,
                ws_max_size=2**20, timeout_keep_alive=5)


if __name__ == "__main__":
    main()
