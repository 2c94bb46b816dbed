"""The Twilio Media Streams transport: thin glue between a WebSocket and the protocol object.

:class:`TwilioStream` is what a call's session needs from a phone call: its
``pump`` reads text messages, feeds them to
:class:`~aybiza.transports.twilio.TwilioProtocol` and pushes the events as
frames (caller audio carries the μ-law it arrived in). :class:`TwilioOutput`,
the pipeline's last stage, turns agent audio into ``media``/``mark``/``clear``
messages and steers :class:`~aybiza.pipeline.frames.AgentSpeaking` up the
control path when the caller starts and stops hearing the agent (Twilio's
mark echoes say when). :func:`accept_stream` runs a stream up to its
``start`` message. Any protocol error ends this call only, with a log line
saying why.

Twilio sends media all the time, silence too: a started stream with no
message for ``media_timeout_s`` is a silent or half-open peer and ends as
``media_timeout`` (one watchdog per call, not a timer per message). Inbound
media passes the call's :class:`~aybiza.transports.pacing.MediaPacer`: audio
far faster than real time is dropped, and a stream that keeps it up is closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..codecs import Resampler, lin2ulaw, ulaw2lin
from ..errors import CallEnded, EndReason, ProtocolError
from ..pipeline import (
    DTMF,
    AgentSpeaking,
    AgentTurnDone,
    CallContext,
    EndOfCall,
    Frame,
    InputAudio,
    Interruption,
    OutputAudio,
    Processor,
    Stage,
)
from ..session.transport import CallControl, Push
from .pacing import MediaPacer, Pace
from .twilio import ULAW_SAMPLE_RATE, Dtmf, MarkDone, Media, Started, Stopped, TwilioProtocol

__all__ = ["TwilioOutput", "TwilioStream", "accept_stream"]

TWILIO_RATE = 8000
MARK_EVERY_SAMPLES = TWILIO_RATE  # one mark per second of agent audio
EDGE_SAMPLE_EVERY = 50  # frames between two samples of the per-frame edge cost
log = logging.getLogger("aybiza.twilio")


class TwilioOutput(Processor):
    """Last stage of a phone call: agent audio -> μ-law ``media``, ``mark`` per turn, ``clear`` on barge-in."""

    name = "twilio-output"
    consumes = frozenset({OutputAudio, AgentTurnDone, Interruption})
    steers = frozenset({AgentSpeaking})

    def __init__(self, protocol: TwilioProtocol, send: Callable[[str], Awaitable[None]]) -> None:
        super().__init__()
        self.protocol = protocol
        self._send_text = send
        # Keeps a media message and its mark together when an announcement sends meanwhile; uncontended
        # (nearly always) it must not yield to the loop: it is taken for every chunk of agent audio.
        self._lock = anyio.Lock(fast_acquire=True)
        self._resampler: Resampler | None = None
        self._turn_open: int | None = None
        self._timed_turn = 0
        self._unmarked = 0
        self._segment = 0
        self._speaking = False
        self._idle = anyio.Event()
        self._idle.set()

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, OutputAudio):
            await self._audio(frame)
        elif isinstance(frame, AgentTurnDone):
            await self._turn_done(frame.turn_id)
        elif isinstance(frame, Interruption):
            await self._clear()
        await self.push(frame)

    @property
    def speaking(self) -> bool:
        """Whether agent audio is queued at Twilio or still being produced."""
        return self._turn_open is not None or self.protocol.audio_pending

    async def drained(self) -> None:
        """Return once every mark sent so far has been echoed (the caller heard it all)."""
        await self._idle.wait()

    async def _send(self, text: str) -> None:
        # The caller may hang up while agent audio (or a clear) is on its way:
        # that ends the call as a disconnect, never as a failure.
        try:
            await self._send_text(text)
        except (OSError, RuntimeError, WebSocketDisconnect) as error:
            raise CallEnded(EndReason.DISCONNECTED, f"send after the caller left: {error}") from error

    async def mark_done(self) -> None:
        """Twilio echoed a mark: the caller may have stopped hearing the agent."""
        await self._update_speaking()

    async def _audio(self, frame: OutputAudio) -> None:
        if self._turn_open != frame.turn_id:
            self._turn_open = frame.turn_id
            self._resampler = None
            self._segment = 0
        if frame.ulaw is not None and frame.sample_rate == TWILIO_RATE:
            ulaw = frame.ulaw  # already phone audio (Aura): sent as is
        else:
            if self._resampler is None or self._resampler.from_rate != frame.sample_rate:
                self._resampler = Resampler(frame.sample_rate, TWILIO_RATE)
            pcm = frame.pcm if frame.pcm or frame.ulaw is None else ulaw2lin(frame.ulaw)
            ulaw = lin2ulaw(self._resampler.process(pcm))
        ctx = self.ctx
        if ctx is not None and frame.turn_id > self._timed_turn:
            self._timed_turn = frame.turn_id
            if ctx.user_turn_ended_at is not None:
                ctx.ledger.time(Stage.VOICE_TO_VOICE, time.monotonic() - ctx.user_turn_ended_at)
                ctx.user_turn_ended_at = None
        if not self._speaking:
            self._speaking = True
            self._idle = anyio.Event()
            await self.steer(AgentSpeaking(True))
        if ulaw:
            async with self._lock:
                await self._send(self.protocol.send_media(ulaw))
                # A mark about every second of audio tells us, after a barge-in,
                # how much of the reply the caller actually heard.
                self._unmarked += len(ulaw)
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
        await self._update_speaking()

    async def _clear(self) -> None:
        self._unmarked = 0
        self._resampler = None
        self._turn_open = None
        async with self._lock:
            await self._send(self.protocol.send_clear())
        await self._update_speaking(cleared=True)

    async def _update_speaking(self, *, cleared: bool = False) -> None:
        speaking = not cleared and self.speaking
        if self._speaking and not speaking:
            self._speaking = False
            self._idle.set()
            await self.steer(AgentSpeaking(False))


class TwilioStream:
    """A call's transport over one bidirectional Media Stream (after ``start``)."""

    kind = "twilio"
    sources: frozenset[type[Frame]] = frozenset({InputAudio, DTMF, EndOfCall})

    def __init__(self, websocket: WebSocket, protocol: TwilioProtocol, ctx: CallContext, *,
                 control: CallControl | None = None, media_timeout_s: float | None = None,
                 pacer: MediaPacer | None = None) -> None:
        self.websocket = websocket
        self.protocol = protocol
        self.ctx = ctx
        self.media_timeout_s = media_timeout_s
        self.pacer = pacer
        self._control = control
        self._output = TwilioOutput(protocol, websocket.send_text)
        self._gone = False
        self._closed = False
        self._heard_at = time.monotonic()

    @property
    def output(self) -> TwilioOutput:
        """The pipeline's last stage."""
        return self._output

    @property
    def control(self) -> CallControl | None:
        """Call control over Twilio's REST API, when configured."""
        return self._control

    @property
    def open(self) -> bool:
        """The caller is still on the stream."""
        return not (self._gone or self._closed or self.protocol.stopped or self.protocol.failed)

    def arrange(self, stages: Sequence[Processor]) -> list[Processor]:
        """The stages as they are."""
        return list(stages)

    async def pump(self, push: Push) -> EndReason:
        """Push caller audio and keys until ``stop``, a disconnect or a media timeout.

        Raises ProtocolError on a bad message or media sent far faster than real time.
        """
        timeout = self.media_timeout_s
        if timeout is None:
            return await self._read(push)
        self._heard_at = time.monotonic()
        reason = EndReason.MEDIA_TIMEOUT
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, timeout, tg.cancel_scope)
                reason = await self._read(push)
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the reader's own error, as it was raised
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        if reason is EndReason.MEDIA_TIMEOUT:
            self.ctx.log.info("no media from Twilio for %g s", timeout)
        return reason

    async def _watch(self, limit_s: float, scope: anyio.CancelScope) -> None:
        """Cancel the reader once nothing arrived for ``limit_s`` seconds (it stamps every message)."""
        while True:
            idle = time.monotonic() - self._heard_at
            if idle >= limit_s:
                scope.cancel()
                return
            await anyio.sleep(limit_s - idle)

    async def _read(self, push: Push) -> EndReason:
        websocket, protocol, output, ledger = self.websocket, self.protocol, self._output, self.ctx.ledger
        pacer = self.pacer
        frames = 0
        while True:
            try:
                message = await _receive_text(websocket)
            except WebSocketDisconnect:
                self._gone = True
                return EndReason.DISCONNECTED
            arrived = self._heard_at = time.monotonic()
            for event in protocol.receive(message):
                if isinstance(event, Media):
                    if pacer is not None and not self._paced(pacer, len(event.payload) / ULAW_SAMPLE_RATE, arrived):
                        continue
                    await push(InputAudio(ulaw2lin(event.payload), TWILIO_RATE, arrived, None, event.payload))
                    frames += 1
                    if frames % EDGE_SAMPLE_EVERY == 0:  # one sample a second keeps the histogram cheap
                        ledger.time(Stage.EDGE_FRAME, time.monotonic() - arrived)
                elif isinstance(event, MarkDone):
                    await output.mark_done()
                elif isinstance(event, Dtmf):
                    if pacer is None or self._paced(pacer, 0.0, arrived):
                        await push(DTMF(event.digit))
                elif isinstance(event, Stopped):
                    return EndReason.HANGUP

    def _paced(self, pacer: MediaPacer, seconds: float, arrived: float) -> bool:
        """Whether the message may go on; raises ProtocolError once the stream is plainly not a phone."""
        pace = pacer.admit(seconds, arrived)
        if pace is Pace.ACCEPT:
            return True
        if pace is Pace.CLOSE:
            raise ProtocolError(f"media arrives far faster than real time ({pacer.dropped_s:.1f} s of audio "
                                f"over {pacer.rate:g}x dropped)")
        return False

    async def drained(self) -> None:
        """The caller has heard everything sent so far."""
        await self._output.drained()

    async def close(self, reason: EndReason, detail: str) -> None:
        """Close the socket with a code that says whose fault it was, and the reason."""
        if self._closed:
            return
        self._closed = True
        if reason.peer_fault:
            code = 1008
        elif reason is EndReason.INTERNAL_ERROR:
            code = 1011
        else:
            code = 1000
        text = reason.value if not detail or reason.normal else f"{reason.value}: {detail}"
        await close_websocket(self.websocket, code, text)


async def accept_stream(websocket: WebSocket, *, check_token: Callable[[dict[str, str]], bool],
                        max_message_bytes: int, start_timeout_s: float = 10.0) -> tuple[TwilioProtocol, Started] | None:
    """Accept the WebSocket and read it up to ``start`` (the call token is checked there).

    Returns None (the socket closed with a reason) when no valid ``start`` came in time.
    """
    await websocket.accept()
    protocol = TwilioProtocol(check_token=check_token, max_message_bytes=max_message_bytes)
    try:
        with anyio.fail_after(start_timeout_s):
            while True:
                for event in protocol.receive(await _receive_text(websocket)):
                    if isinstance(event, Started):
                        return protocol, event
    except (ProtocolError, TimeoutError) as error:
        reason = str(error) or "no start message in time"
        log.warning("stream refused: %s", reason)
        await close_websocket(websocket, 1008, reason)
    except WebSocketDisconnect:
        pass
    return None


async def _receive_text(websocket: WebSocket) -> str:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise ProtocolError("binary WebSocket message; Twilio sends JSON text")
    return str(text)


async def close_websocket(websocket: WebSocket, code: int, reason: str) -> None:
    """Close with ``code`` and a reason cut to what a close frame carries; quiet if the peer is gone."""
    try:
        await websocket.close(code=code, reason=reason[:120])
    except Exception:  # the peer may be gone already; nothing else to do
        return
