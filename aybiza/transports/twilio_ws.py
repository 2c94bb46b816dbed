"""The Twilio Media Streams endpoint: thin glue between a WebSocket and the protocol object.

``serve_stream`` reads text messages, feeds them to
:class:`~aybiza.transports.twilio.TwilioProtocol`, turns its events into
frames for the call's pipeline, and :class:`TwilioOutput` (the pipeline's
last stage) turns agent audio into ``media``/``mark``/``clear`` messages.
Any protocol error ends this call only, with a log line saying why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..codecs import Resampler, lin2ulaw, ulaw2lin
from ..errors import AuthError, CallError, ProtocolError
from ..pipeline import (
    DTMF,
    AgentTurnDone,
    CallContext,
    EndOfCall,
    Frame,
    InputAudio,
    Interruption,
    OutputAudio,
    Pipeline,
    Processor,
)
from .twilio import Dtmf, MarkDone, Media, Started, Stopped, TwilioProtocol

__all__ = ["TwilioOutput", "serve_stream", "CallSetup"]

TWILIO_RATE = 8000
MARK_EVERY_SAMPLES = TWILIO_RATE  # one mark per second of agent audio
EDGE_SAMPLE_EVERY = 50  # frames between two samples of the per-frame edge cost
log = logging.getLogger("aybiza.twilio")


class TwilioOutput(Processor):
    """Last stage of a phone call: agent audio -> μ-law ``media``, ``mark`` per turn, ``clear`` on barge-in."""

    name = "twilio-output"

    def __init__(self, protocol: TwilioProtocol, send: Callable[[str], Awaitable[None]]) -> None:
        super().__init__()
        self.protocol = protocol
        self._send_text = send
        self._lock = anyio.Lock()
        self._resampler: Resampler | None = None
        self._turn_open: int | None = None
        self._first_audio_turn = -1
        self._unmarked = 0
        self._segment = 0

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, OutputAudio):
            await self._audio(frame)
        elif isinstance(frame, AgentTurnDone):
            await self._turn_done(frame.turn_id)
        elif isinstance(frame, Interruption):
            await self._clear()
        await self.push(frame)

    async def _send(self, text: str) -> None:
        # The caller may hang up while agent audio (or a clear) is on its way:
        # that ends the call as a disconnect, never as a failure.
        try:
            await self._send_text(text)
        except (OSError, RuntimeError) as error:
            raise WebSocketDisconnect(1006, f"send after the peer left: {error}") from error

    def mark_done(self) -> None:
        """Called when Twilio echoes a mark: the caller may have stopped hearing the agent."""
        self._update_speaking()

    async def _audio(self, frame: OutputAudio) -> None:
        ctx = self.ctx
        if self._turn_open != frame.turn_id:
            self._turn_open = frame.turn_id
            self._resampler = None
            self._segment = 0
        if self._resampler is None or self._resampler.from_rate != frame.sample_rate:
            self._resampler = Resampler(frame.sample_rate, TWILIO_RATE)
        pcm = self._resampler.process(frame.pcm)
        if ctx is not None:
            ctx.agent_speaking = True
            if frame.turn_id != self._first_audio_turn:
                self._first_audio_turn = frame.turn_id
                if frame.turn_id > 0 and ctx.user_turn_ended_at is not None:
                    ctx.record_timing("voice_to_voice", time.monotonic() - ctx.user_turn_ended_at)
                    ctx.user_turn_ended_at = None
        if pcm:
            async with self._lock:
                await self._send(self.protocol.send_media(lin2ulaw(pcm)))
                # A mark about every second of audio tells us, after a barge-in,
                # how much of the reply the caller actually heard.
                self._unmarked += len(pcm) // 2
                if self._unmarked >= MARK_EVERY_SAMPLES:
                    self._unmarked = 0
                    self._segment += 1
                    await self._send(self.protocol.send_mark(f"turn-{frame.turn_id}.{self._segment}"))

    async def _turn_done(self, turn_id: int) -> None:
        tail = self._resampler.flush() if self._resampler is not None else b""
        self._resampler = None
        self._turn_open = None
        async with self._lock:
            if tail:
                await self._send(self.protocol.send_media(lin2ulaw(tail)))
            await self._send(self.protocol.send_mark(f"turn-{turn_id}"))
            self._unmarked = 0
        self._update_speaking()

    async def _clear(self) -> None:
        self._unmarked = 0
        self._resampler = None
        self._turn_open = None
        async with self._lock:
            await self._send(self.protocol.send_clear())
        if self.ctx is not None:
            self.ctx.agent_speaking = False

    def _update_speaking(self) -> None:
        if self.ctx is not None:
            self.ctx.agent_speaking = self._turn_open is not None or self.protocol.audio_pending


@dataclass(frozen=True, slots=True)
class CallSetup:
    """What the endpoint needs from the server to run one call."""

    check_token: Callable[[dict[str, str]], bool]
    build: Callable[[CallContext, Started], Awaitable[tuple[list[Processor], list[Frame]]]]
    context: Callable[[Started], CallContext]
    on_end: Callable[[CallContext, str], Awaitable[None]]
    max_message_bytes: int = 64 * 1024
    start_timeout_s: float = 10.0


async def serve_stream(websocket: WebSocket, setup: CallSetup) -> None:
    """Run one Media Stream from ``connected`` to ``stop`` (or a disconnect)."""
    await websocket.accept()
    protocol = TwilioProtocol(check_token=setup.check_token, max_message_bytes=setup.max_message_bytes)
    try:
        with anyio.fail_after(setup.start_timeout_s):
            started = await _wait_for_start(websocket, protocol)
    except (ProtocolError, TimeoutError) as error:
        reason = str(error) or "no start message in time"
        log.warning("stream refused: %s", reason)
        await _close(websocket, 1008, reason)
        return
    except WebSocketDisconnect:
        return
    try:
        ctx = setup.context(started)
    except CallError as error:
        log.warning("call refused: %s", error)
        await _close(websocket, 1011, str(error))
        return
    output = TwilioOutput(protocol, websocket.send_text)
    try:
        processors, opening = await setup.build(ctx, started)
    except Exception as error:  # a broken agent file, an unreachable store: this call only
        ctx.log.error("call not built: %s: %s", type(error).__name__, error)
        with anyio.CancelScope(shield=True):
            await setup.on_end(ctx, f"error: {error}")
        await _close(websocket, 1011, "call setup failed")
        return
    pipeline = Pipeline([*processors, output])
    reason = "stopped"

    async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
        nonlocal reason
        for frame in opening:
            await pipe.push(frame)
        reason = await _pump(websocket, protocol, pipe, output, ctx.on_timing)
        await pipe.push(EndOfCall(reason))

    code = 1000
    try:
        await pipeline.run(ctx, feed)
    except* AuthError as group:
        reason, code = f"auth: {group.exceptions[0]}", 1008
    except* ProtocolError as group:
        reason, code = f"protocol: {group.exceptions[0]}", 1008
    except* WebSocketDisconnect:
        reason = "disconnected"
    except* Exception as group:
        reason, code = f"error: {type(group.exceptions[0]).__name__}: {group.exceptions[0]}", 1011
        ctx.log.error("call failed", exc_info=group.exceptions[0])
    if code != 1000:
        ctx.log.warning("call ended: %s", reason)
    else:
        ctx.log.info("call ended: %s", reason)
    with anyio.CancelScope(shield=True):  # the record is committed before the socket closes
        await setup.on_end(ctx, reason)
    await _close(websocket, code, reason)


async def _wait_for_start(websocket: WebSocket, protocol: TwilioProtocol) -> Started:
    while True:
        for event in protocol.receive(await _receive_text(websocket)):
            if isinstance(event, Started):
                return event


async def _pump(websocket: WebSocket, protocol: TwilioProtocol, pipe: Pipeline, output: TwilioOutput,
                on_timing: Callable[[str, float], None]) -> str:
    push = pipe.push
    frames = 0
    while True:
        try:
            message = await _receive_text(websocket)
        except WebSocketDisconnect:
            return "disconnected"
        for event in protocol.receive(message):
            if isinstance(event, Media):
                arrived = time.monotonic()
                await push(InputAudio(ulaw2lin(event.payload), TWILIO_RATE, arrived))
                frames += 1
                if frames % EDGE_SAMPLE_EVERY == 0:  # one sample a second keeps the histogram cheap
                    on_timing("edge_frame", time.monotonic() - arrived)
            elif isinstance(event, MarkDone):
                output.mark_done()
            elif isinstance(event, Dtmf):
                await push(DTMF(event.digit))
            elif isinstance(event, Stopped):
                return "stopped"


async def _receive_text(websocket: WebSocket) -> str:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise ProtocolError("binary WebSocket message; Twilio sends JSON text")
    return str(text)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code=code, reason=reason[:120])
    except Exception:  # the peer may be gone already; nothing else to do
        return
