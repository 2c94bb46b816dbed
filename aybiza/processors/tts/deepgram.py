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
and it goes on as such (``OutputAudio.ulaw``): the phone output sends it
without a decode/encode round trip. A dropped socket is reopened with
backoff: the turn whose audio was playing is ended, turns not yet started are
sent again. When no socket has been up for ``outage_limit_s``, or the key is
refused, the stage raises and the call's voice fallback (the local voice)
takes over.

The voice follows the call's language: a ``LanguageChanged`` for a language
with a voice in ``voices`` reconnects with that voice once the turns in
flight are done. The characters sent are counted on the call's ledger under
the voice's model (``aura-2``), which is what Deepgram bills.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
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
    LanguageChanged,
    OutputAudio,
    Processor,
    Stage,
    Worker,
)
from ..stt.deepgram import api_error_is_credentials, connection_errors

__all__ = ["DeepgramTTS", "voice_model"]


def voice_model(voice: str) -> str:
    """The model a voice belongs to, as priced: ``aura-2-thalia-en`` -> ``aura-2``."""
    parts = voice.split("-")
    return "-".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


def _primary(language: str) -> str:
    return language.replace("_", "-").split("-", 1)[0].lower()


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
    consumes = frozenset({AgentText, AgentTurnDone, Interruption, LanguageChanged})
    produces = frozenset({OutputAudio, AgentTurnDone})

    def __init__(
        self,
        client: Any,
        *,
        voice: str = "aura-2-thalia-en",
        voices: Mapping[str, str] | None = None,
        encoding: Literal["linear16", "mulaw"] = "linear16",
        sample_rate: int | None = None,
        connect_timeout: float = 1.0,
        outage_limit_s: float = 1.5,
        backoff_s: tuple[float, float] = (0.1, 1.0),
    ) -> None:
        super().__init__()
        if encoding not in ("linear16", "mulaw"):
            raise ValueError(f"encoding must be linear16 or mulaw, not {encoding!r}")
        self._client = client
        self.voice = voice
        self.voices = dict(voices or {})
        self.encoding = encoding
        self.sample_rate = sample_rate or (8000 if encoding == "mulaw" else 24000)
        if encoding == "mulaw" and self.sample_rate not in (8000, 16000):
            raise ValueError("Deepgram sends μ-law only at 8000 or 16000 Hz")
        self.connect_timeout = connect_timeout
        self.outage_limit_s = outage_limit_s
        self.backoff_s = backoff_s
        self.connections = 0  # sockets opened so far (observability, tests)
        self._worker: Worker[_Command] = Worker(self._command, maxsize=0)
        self._turns: deque[_Turn] = deque()
        self._clearing = False
        self._conn: Any = None
        self._connected = anyio.Event()
        self._closing = False
        self._carry = b""
        self._next_voice: str | None = None
        self._session_scope: anyio.CancelScope | None = None

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
            if isinstance(frame, LanguageChanged):
                self._change_voice(frame.language)
            await self.push(frame)

    def _change_voice(self, language: str) -> None:
        voice = self.voices.get(language) or self.voices.get(_primary(language))
        if voice is None or voice == self.voice:
            if voice is None and self.ctx is not None:
                self.ctx.log.info("deepgram tts: no voice for %s; keeping %s", language, self.voice)
            return
        self._next_voice = voice
        self._maybe_switch_voice()

    def _maybe_switch_voice(self) -> None:
        """Reconnect with the next voice once no turn is in flight (a voice is a connection setting)."""
        if self._next_voice is None or self._turns:
            return
        self.voice, self._next_voice = self._next_voice, None
        if self._session_scope is not None:
            self._session_scope.cancel()

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
                self.ctx.ledger.add_tts(voice_model(self.voice), len(text))
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
        down_since = time.monotonic()
        while not self._closing:
            began = time.monotonic()
            switching = False
            try:
                async with AsyncExitStack() as stack:
                    budget = max(0.05, min(self.connect_timeout, down_since + self.outage_limit_s - began))
                    with anyio.fail_after(budget):
                        conn = await stack.enter_async_context(
                            self._client.speak.v1.connect(
                                model=self.voice, encoding=self.encoding, sample_rate=self.sample_rate
                            )
                        )
                    self.connections += 1
                    self._clearing = False
                    self._carry = b""
                    await self._resend(conn)
                    self._conn = conn
                    self._connected.set()
                    try:
                        with anyio.CancelScope() as scope:
                            self._session_scope = scope
                            await self._receive(conn)
                        switching = scope.cancelled_caught
                    finally:
                        self._session_scope = None
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
            if switching:  # a new voice: reconnect at once
                down_since = time.monotonic()
                continue
            await self._after_drop()
            now = time.monotonic()
            if self.connections and now - began >= 1.0:
                failures, down_since = 0, now  # it was up for a while: a fresh outage starts now
            if now - down_since >= self.outage_limit_s:
                raise OverloadedError(
                    f"Deepgram speak unreachable for {now - down_since:.1f} s", provider="deepgram"
                )
            failures += 1
            low, high = self.backoff_s
            await anyio.sleep(min(high, low * 2 ** (failures - 1), max(0.0, down_since + self.outage_limit_s - now)))

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
                        self._maybe_switch_voice()
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
        ulaw: bytes | None = None
        if self.encoding == "mulaw":
            if self.sample_rate == 8000:
                pcm, ulaw = b"", data  # phone audio as is: the Twilio output sends it without re-encoding
            else:
                pcm = ulaw2lin(data)
        else:
            data = self._carry + data
            cut = len(data) - len(data) % 2
            pcm, self._carry = data[:cut], data[cut:]
        if not pcm and not ulaw:
            return
        now = time.monotonic()
        if not head.audio_started:
            head.audio_started = True
            if self.ctx is not None and head.first_sent_at is not None:
                self.ctx.ledger.time(Stage.TTS_FIRST_BYTE, now - head.first_sent_at)
        await self.push(OutputAudio(pcm, self.sample_rate, head.turn_id, now, ulaw))

    async def _complete_placeholders(self) -> None:
        while self._turns and self._turns[0].empty and self._turns[0].flushed:
            await self.push(AgentTurnDone(self._turns.popleft().turn_id))


def _speak(text: str) -> Any:
    from deepgram.speak.v1.types.speak_v1text import SpeakV1Text

    return SpeakV1Text(text=text)
