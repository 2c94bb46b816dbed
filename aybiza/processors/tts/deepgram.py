"""Deepgram Aura text-to-speech over WebSocket (``/v1/speak``) through the async ``deepgram-sdk``.

One socket per call, opened at ``start``. Each :class:`AgentText` is sent as
a ``Speak`` the moment it arrives (Deepgram starts synthesising at sentence
boundaries), and the turn's :class:`AgentTurnDone` sends the turn's single
``Flush`` (Deepgram allows 20 flushes a minute and frequent flushes hurt the
audio). Audio comes back as binary frames and is pushed as
:class:`OutputAudio` tagged with its turn; the turn's ``Flushed`` pushes its
:class:`AgentTurnDone`. Server messages are dispatched on their ``type``
field (the SDK may hand a ``Cleared`` back as a ``Flushed`` model).

Barge-in (:class:`Interruption`) drops queued text, sends ``Clear`` and
ignores audio until Deepgram answers ``Cleared``; interrupted turns get no
``AgentTurnDone``. For Twilio (``encoding="mulaw"``) Deepgram sends μ-law 8 kHz
and it is decoded to PCM16 here, because frames carry PCM16; the Twilio
output re-encodes it losslessly (G.711 decode→encode is exact), at the cost
of one table lookup each way per chunk. A dropped socket is reopened with
backoff: the turn whose audio was playing is ended, turns not yet started are
sent again.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from ...codecs import ulaw2lin
from ...errors import CredentialsError, OverloadedError
from ...pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    Interruption,
    OutputAudio,
    Processor,
    Worker,
)
from ..stt.deepgram import api_error_is_credentials, connection_errors, deepgram_client

__all__ = ["DeepgramTTS"]


@dataclass(slots=True)
class _Turn:
    turn_id: int
    texts: list[str] = field(default_factory=list)
    flushed: bool = False
    audio_started: bool = False
    first_sent_at: float | None = None

    @property
    def empty(self) -> bool:
        return not self.texts


_Command = tuple[str, int, str]  # ("speak", turn_id, text) | ("flush", turn_id, "") | ("clear", 0, "")


class DeepgramTTS(Processor):
    """AgentText → OutputAudio (PCM16) through Deepgram Aura streaming TTS."""

    name = "tts-deepgram"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        voice: str = "aura-2-thalia-en",
        encoding: Literal["linear16", "mulaw"] = "linear16",
        sample_rate: int | None = None,
        connect_timeout: float = 3.0,
        max_reconnects: int = 5,
        backoff_s: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        super().__init__()
        if encoding not in ("linear16", "mulaw"):
            raise ValueError(f"encoding must be linear16 or mulaw, not {encoding!r}")
        self._client = deepgram_client(api_key, base_url)
        self.voice = voice
        self.encoding = encoding
        self.sample_rate = sample_rate or (8000 if encoding == "mulaw" else 24000)
        if encoding == "mulaw" and self.sample_rate not in (8000, 16000):
            raise ValueError("Deepgram sends μ-law only at 8000 or 16000 Hz")
        self.connect_timeout = connect_timeout
        self.max_reconnects = max_reconnects
        self.backoff_s = backoff_s
        self.connections = 0  # sockets opened so far (observability, tests)
        self._worker: Worker[_Command] = Worker(self._command, maxsize=0)
        self._turns: deque[_Turn] = deque()
        self._clearing = False
        self._conn: Any = None
        self._connected = anyio.Event()
        self._closing = False
        self._carry = b""

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        self._worker.start(tg, name=f"{self.name}-sender")
        tg.start_soon(self._run, name=self.name)

    async def stop(self) -> None:
        self._closing = True
        await self._worker.close()

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, AgentText):
            if frame.text.strip():
                await self._worker.put(("speak", frame.turn_id, frame.text))
        elif isinstance(frame, AgentTurnDone):
            await self._worker.put(("flush", frame.turn_id, ""))
        elif isinstance(frame, Interruption):
            self._interrupt()
            await self.push(frame)
        else:
            await self.push(frame)

    def _interrupt(self) -> None:
        self._worker.flush()
        in_flight = bool(self._turns)
        self._turns.clear()
        self._carry = b""
        if in_flight and self._conn is not None:
            self._clearing = True
            self._worker.put_nowait(("clear", 0, ""))

    # -- sending (worker) -----------------------------------------------------------

    async def _command(self, command: _Command) -> None:
        kind, turn_id, text = command
        if kind == "clear":
            conn = self._conn
            if conn is None:
                self._clearing = False
                return
            try:
                await conn.send_clear()
            except connection_errors():
                self._clearing = False
            return
        conn = await self._ready()
        if kind == "speak":
            turn = self._turn_for(turn_id)
            turn.texts.append(text)
            if turn.first_sent_at is None:
                turn.first_sent_at = time.monotonic()
            if self.ctx is not None:
                self.ctx.add_usage("tts_chars", len(text))
            await self._send(conn.send_text(_speak(text)))
        elif kind == "flush":
            last = self._turns[-1] if self._turns and self._turns[-1].turn_id == turn_id else None
            if last is not None and not last.flushed:
                last.flushed = True
                await self._send(conn.send_flush())
            elif last is None:
                # Nothing was said this turn: it is done once the turns before it are.
                self._turns.append(_Turn(turn_id, flushed=True))
                await self._complete_placeholders()

    async def _send(self, sending: Any) -> None:
        try:
            await sending
        except connection_errors():
            pass  # the receiver sees the drop; the reconnect sends the turn again

    def _turn_for(self, turn_id: int) -> _Turn:
        if self._turns and self._turns[-1].turn_id == turn_id and not self._turns[-1].flushed:
            return self._turns[-1]
        turn = _Turn(turn_id)
        self._turns.append(turn)
        return turn

    async def _ready(self) -> Any:
        while self._conn is None:
            await self._connected.wait()
        return self._conn

    # -- the socket ---------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        errors = connection_errors()
        while not self._closing:
            began = time.monotonic()
            connected = False
            try:
                async with AsyncExitStack() as stack:
                    with anyio.fail_after(self.connect_timeout):
                        conn = await stack.enter_async_context(
                            self._client.speak.v1.connect(
                                model=self.voice, encoding=self.encoding, sample_rate=self.sample_rate
                            )
                        )
                    connected = True
                    self.connections += 1
                    self._clearing = False
                    self._carry = b""
                    await self._resend(conn)
                    self._conn = conn
                    self._connected.set()
                    try:
                        await self._receive(conn)
                    finally:
                        self._conn = None
                        self._connected = anyio.Event()
            except errors as exc:
                if api_error_is_credentials(exc):
                    raise CredentialsError(
                        f"Deepgram refused the API key: {exc}", provider="deepgram"
                    ) from exc
                if self.ctx is not None:
                    self.ctx.log.warning("deepgram tts: socket failed (%s: %s)", type(exc).__name__, exc)
            if self._closing:
                return
            await self._after_drop()
            if connected and time.monotonic() - began >= 1.0:
                failures = 0
            failures += 1
            if failures > self.max_reconnects:
                raise OverloadedError(
                    f"Deepgram speak unreachable after {self.max_reconnects} attempts", provider="deepgram"
                )
            if self.ctx is not None:
                self.ctx.add_usage("tts_reconnects", 1)
            low, high = self.backoff_s
            await anyio.sleep(min(high, low * 2 ** (failures - 1)))

    async def _resend(self, conn: Any) -> None:
        for turn in self._turns:
            for text in turn.texts:
                await conn.send_text(_speak(text))
            if turn.flushed and turn.texts:
                await conn.send_flush()

    async def _after_drop(self) -> None:
        if self._turns and self._turns[0].audio_started:
            head = self._turns.popleft()
            if self.ctx is not None:
                self.ctx.log.warning(
                    "deepgram tts: socket dropped mid-turn %d; its audio is cut", head.turn_id
                )
            await self.push(AgentTurnDone(head.turn_id))
            await self._complete_placeholders()

    async def _receive(self, conn: Any) -> None:
        try:
            async for message in conn:
                if isinstance(message, bytes | bytearray):
                    await self._on_audio(bytes(message))
                    continue
                kind = message.get("type") if isinstance(message, dict) else getattr(message, "type", None)
                if kind == "Flushed":
                    if not self._clearing and self._turns:
                        head = self._turns.popleft()
                        await self.push(AgentTurnDone(head.turn_id))
                        await self._complete_placeholders()
                elif kind == "Cleared":
                    self._clearing = False
                elif kind == "Warning" and self.ctx is not None:
                    self.ctx.log.warning("deepgram tts warning: %s", getattr(message, "description", message))
        except connection_errors() as exc:
            if self.ctx is not None:
                self.ctx.log.warning("deepgram tts: socket dropped (%s)", exc)

    async def _on_audio(self, data: bytes) -> None:
        if self._clearing or not self._turns:
            return
        head = self._turns[0]
        if self.encoding == "mulaw":
            pcm = ulaw2lin(data)
        else:
            data = self._carry + data
            cut = len(data) - len(data) % 2
            pcm, self._carry = data[:cut], data[cut:]
        if not pcm:
            return
        now = time.monotonic()
        if not head.audio_started:
            head.audio_started = True
            if self.ctx is not None and head.first_sent_at is not None:
                self.ctx.record_timing("tts_first_audio", now - head.first_sent_at)
        await self.push(OutputAudio(pcm, self.sample_rate, head.turn_id, now))

    async def _complete_placeholders(self) -> None:
        while self._turns and self._turns[0].empty and self._turns[0].flushed:
            await self.push(AgentTurnDone(self._turns.popleft().turn_id))


def _speak(text: str) -> Any:
    from deepgram.speak.v1.types.speak_v1text import SpeakV1Text

    return SpeakV1Text(text=text)
