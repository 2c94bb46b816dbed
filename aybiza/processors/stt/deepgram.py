"""Deepgram streaming speech-to-text (Nova-3, ``/v1/listen``) through the async ``deepgram-sdk``.

One WebSocket per call, opened at ``start`` so the first words do not wait
for a handshake. Caller audio is sent as it arrives, 100 ms to a message
(linear16, or μ-law 8 kHz for Twilio; the socket offers no permessage-deflate,
see :mod:`~aybiza.processors.deepgram_ws`). Our VAD drives the stream: ``SpeechStopped``
sends ``Finalize`` (the final transcript comes back at once instead of after
Deepgram's own endpointing), and while the VAD gates silence a
``KeepAlive`` goes out every few seconds so Deepgram does not close the
socket (it does after 10 s without data).

A dropped socket is reopened with backoff without losing the turn: audio
Deepgram has not yet finalised (everything after the end of the last final
result) is kept and sent again on the new socket, and a ``Finalize`` that
had no answer is repeated. Transcripts are pushed as
:class:`Transcript` (interim and final); every other frame passes through.

Phone audio reaches Deepgram as the μ-law it arrived in (``InputAudio.ulaw``):
no decode/encode round trip. A ``LanguageChanged`` steered up the control
path by the language stage reconnects with the new ``language``, the
unsettled audio re-sent, so the utterance in progress is not lost.

Failure is bounded in time: when no socket has been up for
``outage_limit_s`` (a refused, unreachable or silent endpoint), or the key is
refused, the stage raises (``OverloadedError``/``CredentialsError``) and the
call's recogniser fallback takes over. The client comes from the process's
engines (:func:`deepgram_client` builds one; ``Settings.deepgram_url`` points
it at another base URL: a fake, a proxy, the EU endpoint).
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from ...codecs import lin2ulaw
from ...errors import CredentialsError, OverloadedError
from ...pipeline import (
    CallContext,
    Frame,
    HeardSoFar,
    InputAudio,
    LanguageChanged,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Stage,
    Transcript,
)
from ..deepgram_ws import without_compression

__all__ = [
    "DeepgramSTT",
    "api_error_is_credentials",
    "connection_errors",
    "deepgram_client",
    "deepgram_environment",
    "deepgram_language",
]


def deepgram_environment(base_url: str = "") -> Any:
    """A ``DeepgramClientEnvironment`` for ``base_url`` (``Settings.deepgram_url``); production when empty."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from deepgram.environment import DeepgramClientEnvironment

    url = base_url.strip().rstrip("/")
    if not url:
        return DeepgramClientEnvironment.PRODUCTION
    if url.startswith(("ws://", "wss://")):
        http = "http" + url[2:]
        ws = url
    elif url.startswith(("http://", "https://")):
        http = url
        ws = "ws" + url[4:]
    else:
        http, ws = f"https://{url}", f"wss://{url}"
    return DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)


def deepgram_client(api_key: str, base_url: str = "") -> Any:
    """A new ``AsyncDeepgramClient`` for this key and base URL (the process's engines keep one)."""
    if not api_key.strip():
        raise CredentialsError(
            "DEEPGRAM_API_KEY is not set: the Deepgram provider needs an API key", provider="deepgram"
        )
    environment = deepgram_environment(base_url)
    with warnings.catch_warnings():
        # deepgram-sdk 7 imports websockets' legacy client, deprecated in websockets 14+.
        warnings.simplefilter("ignore", DeprecationWarning)
        import deepgram.core.websocket_compat  # noqa: F401
        from deepgram import AsyncDeepgramClient

    without_compression()  # audio does not deflate: offer no permessage-deflate (see deepgram_ws)
    return AsyncDeepgramClient(api_key=api_key.strip(), environment=environment)


_REGIONAL_TAGS = frozenset({"en-US", "en-AU", "en-GB", "en-IN", "en-NZ", "es-419", "fr-CA", "de-CH", "pt-BR",
                            "pt-PT", "nl-BE"})


def deepgram_language(tag: str) -> str:
    """The ``language`` Deepgram accepts for a BCP-47 tag: a regional tag it knows, else the base language."""
    if tag in _REGIONAL_TAGS or tag == "multi":
        return tag
    return tag.replace("_", "-").split("-", 1)[0].lower() or "en"


def connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the socket failed; try again" (not credentials)."""
    from deepgram.core.api_error import ApiError
    from websockets.exceptions import WebSocketException

    return (OSError, TimeoutError, WebSocketException, ApiError, EOFError)


def api_error_is_credentials(exc: BaseException) -> bool:
    """True for a handshake refused with 401/403."""
    from deepgram.core.api_error import ApiError

    return isinstance(exc, ApiError) and exc.status_code in (401, 403)


class DeepgramSTT(Processor):
    """InputAudio → Transcript through Deepgram's streaming recogniser."""

    name = "stt-deepgram"
    consumes = frozenset({InputAudio, SpeechStarted, SpeechStopped, LanguageChanged})
    steers = frozenset({HeardSoFar})
    produces = frozenset({Transcript})

    def __init__(
        self,
        client: Any,
        *,
        model: str = "nova-3",
        encoding: Literal["linear16", "mulaw"] = "linear16",
        sample_rate: int | None = None,
        language: str | None = None,
        interim_results: bool = True,
        endpointing_ms: int | None = 300,
        utterance_end_ms: int | None = 1000,
        smart_format: bool = True,
        keyterms: tuple[str, ...] = (),
        keepalive_s: float = 4.0,
        connect_timeout: float = 1.0,
        outage_limit_s: float = 1.5,
        backoff_s: tuple[float, float] = (0.1, 1.0),
        max_buffer_s: float = 30.0,
        send_every_s: float = 0.1,
        caller_quiet_s: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        if encoding not in ("linear16", "mulaw"):
            raise ValueError(f"encoding must be linear16 or mulaw, not {encoding!r}")
        self._client = client
        self.model = model
        self.encoding = encoding
        self.sample_rate = sample_rate or (8000 if encoding == "mulaw" else 16000)
        self.fixed_language = language
        self.interim_results = interim_results
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.smart_format = smart_format
        self.keyterms = keyterms
        self.keepalive_s = keepalive_s
        self.connect_timeout = connect_timeout
        self.outage_limit_s = outage_limit_s
        self.backoff_s = backoff_s
        self.max_buffer_s = max_buffer_s
        self.send_every_s = send_every_s
        self._quiet = False  # the caller is quiet (per the VAD)
        self._flush_now = False  # ... since this frame: send what is pending at once
        self.caller_quiet_s = caller_quiet_s
        """How long the call's VAD has heard the caller quiet (given by the stack): inside a speech segment the
        frames stay ``voiced`` through the VAD's stop window, but a word's end should reach Deepgram at once."""
        self.language = language or "en"
        self.connections = 0  # sockets opened so far (observability, tests)
        self._width = 1 if encoding == "mulaw" else 2
        # Audio not yet finalised by Deepgram: logical byte offsets over the call's stream.
        self._buf = bytearray()
        self._buf_start = 0
        self._sent = 0
        self._conn_base = 0
        # (stream offset after a frame, its capture end): which audio a result's words cover, in call time
        self._captured: deque[tuple[int, float]] = deque(maxlen=int(self.max_buffer_s * 100) + 1)
        self._wake = anyio.Event()
        self._finalize_due = False
        self._finalize_outstanding = False
        self._keepalive_due = False
        self._last_send = 0.0  # monotonic time anything last went out on the socket
        self._reconnect = False
        self._closing = False
        self._session_scope: anyio.CancelScope | None = None
        self._stopped_at: float | None = None
        self._stop_seen_at: float | None = None
        self._down_since: float | None = None

    @property
    def bytes_per_second(self) -> int:
        """Bytes of encoded audio per second at the current rate."""
        return self.sample_rate * self._width

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        if self.fixed_language is None:
            self.language = ctx.language or "en"
        tg.start_soon(self._run, name=self.name)

    async def stop(self) -> None:
        self._closing = True

    async def control(self, frame: Frame) -> None:
        """A language switch steered by the language stage: reconnect in the new language."""
        if isinstance(frame, LanguageChanged):
            self._change_language(frame.language)
        await self.steer(frame)

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, InputAudio):
            self._audio(frame)
            return
        if isinstance(frame, SpeechStarted):
            self._stopped_at = None
            self._stop_seen_at = None
        elif isinstance(frame, SpeechStopped):
            self._stopped_at = frame.at
            self._stop_seen_at = time.monotonic()
            self._finalize_due = True
            self._wake.set()
        await self.push(frame)

    # -- audio in -----------------------------------------------------------------

    def _audio(self, frame: InputAudio) -> None:
        if frame.sample_rate != self.sample_rate:
            self._change_rate(frame.sample_rate)
        if self._width == 2:
            self._buf += frame.pcm
        else:
            self._buf += frame.ulaw if frame.ulaw is not None else lin2ulaw(frame.pcm)
        self._captured.append((self._buf_start + len(self._buf), frame.captured_at + frame.duration))
        if self.ctx is not None:
            self.ctx.ledger.add_stt(self.model, frame.duration)
        excess = len(self._buf) - int(self.max_buffer_s * self.bytes_per_second)
        if excess > 0:
            excess += excess % self._width
            del self._buf[:excess]
            self._buf_start += excess
            self._sent = max(self._sent, self._buf_start)
        quiet = frame.voiced is False or (self.caller_quiet_s is not None and self.caller_quiet_s() > 0)
        if quiet and not self._quiet:
            self._flush_now = True  # until the sender has sent it
        self._quiet = quiet
        if self._unsent() >= self._send_at():
            self._wake.set()

    def _send_at(self) -> int:
        """Unsent bytes that make a message: ``send_every_s`` of audio; any at all on the frame where the VAD
        first hears quiet (the end of a word reaches Deepgram at once, so its interim and endpointing are not
        held back; the pause that follows goes in whole messages again)."""
        return self._width if self._flush_now else self._batch_bytes()

    def _unsent(self) -> int:
        return self._buf_start + len(self._buf) - self._sent

    def _batch_bytes(self) -> int:
        """Audio sent in one message while the caller speaks (``send_every_s``; the VAD's stop flushes the rest).

        Deepgram recommends 20-100 ms per message; every message costs a
        frame, a mask and a task switch on both ends, so 100 ms rather than
        each 20 ms phone frame. The final transcript does not wait for it: a
        ``SpeechStopped`` sends what is pending, then ``Finalize``.
        """
        return max(self._width, int(self.send_every_s * self.bytes_per_second) // self._width * self._width)

    def _change_rate(self, rate: int) -> None:
        if self.ctx is not None:
            self.ctx.log.info(
                "deepgram stt: audio rate changed %d -> %d Hz; reconnecting", self.sample_rate, rate
            )
        self.sample_rate = rate
        self._buf_start += len(self._buf)
        self._buf.clear()
        self._sent = self._buf_start
        self._request_reconnect()

    def _change_language(self, language: str) -> None:
        if self.fixed_language is not None or not language or language == self.language:
            return
        if self.ctx is not None:
            self.ctx.log.info("deepgram stt: language %s -> %s; reconnecting", self.language, language)
        self.language = language
        self._request_reconnect()

    def _request_reconnect(self) -> None:
        self._reconnect = True
        if self._session_scope is not None:
            self._session_scope.cancel()

    # -- the socket ---------------------------------------------------------------

    def _connect_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "encoding": self.encoding,
            "sample_rate": self.sample_rate,
            "channels": 1,
            "interim_results": self.interim_results,
            "smart_format": self.smart_format,
            "language": deepgram_language(self.language),
        }
        if self.endpointing_ms is not None:
            params["endpointing"] = self.endpointing_ms
        if self.utterance_end_ms is not None and self.interim_results:
            params["utterance_end_ms"] = self.utterance_end_ms
        if self.keyterms:
            params["keyterm"] = list(self.keyterms)
        return params

    async def _run(self) -> None:
        errors = connection_errors()
        failures = 0
        self._down_since = time.monotonic()
        while not self._closing:
            began = time.monotonic()
            try:
                await self._session()
            except errors as exc:
                if api_error_is_credentials(exc):
                    raise CredentialsError(
                        f"Deepgram refused the API key: {exc}", provider="deepgram"
                    ) from exc
                if self.ctx is not None:
                    self.ctx.log.warning("deepgram stt: socket failed (%s: %s)", type(exc).__name__, exc)
            if self._closing:
                return
            if self._reconnect:
                self._reconnect = False
                continue
            now = time.monotonic()
            if self._down_since is None:  # a session that was up has just dropped
                self._down_since = now
                failures = 0
            if now - began >= 1.0 and self.connections:
                failures = 0
            if now - self._down_since >= self.outage_limit_s:
                raise OverloadedError(
                    f"Deepgram listen unreachable for {now - self._down_since:.1f} s", provider="deepgram"
                )
            failures += 1
            if self.ctx is not None:
                self.ctx.ledger.stt_reconnects += 1
            low, high = self.backoff_s
            left = max(0.0, self._down_since + self.outage_limit_s - now)
            await anyio.sleep(min(high, low * 2 ** (failures - 1), left))

    async def _session(self) -> None:
        down_since = self._down_since
        budget = self.connect_timeout
        if down_since is not None:  # never wait past the outage limit for one handshake
            budget = max(0.05, min(budget, down_since + self.outage_limit_s - time.monotonic()))
        async with AsyncExitStack() as stack:
            with anyio.fail_after(budget):
                conn = await stack.enter_async_context(
                    self._client.listen.v1.connect(**self._connect_params())
                )
            self.connections += 1
            self._down_since = None
            # Resend what Deepgram has not finalised, and an unanswered Finalize.
            self._conn_base = self._buf_start
            self._sent = self._buf_start
            if self._finalize_outstanding:
                self._finalize_due = True
            self._last_send = time.monotonic()
            self._wake.set()
            try:
                async with anyio.create_task_group() as tg:
                    self._session_scope = tg.cancel_scope
                    if self._reconnect:
                        tg.cancel_scope.cancel()
                    tg.start_soon(self._sender, conn, tg.cancel_scope)
                    tg.start_soon(self._keepalive_ticker)
                    await self._receiver(conn)
                    tg.cancel_scope.cancel()
            finally:
                self._session_scope = None

    def _sender_has_work(self) -> bool:
        return self._unsent() >= self._send_at() or self._finalize_due or self._keepalive_due

    async def _sender(self, conn: Any, scope: anyio.CancelScope) -> None:
        """Send what accumulated since it last ran, then sleep until a frame, a stop or the ticker wakes it.

        It runs once per ``send_every_s`` of voiced audio while the caller speaks, so it sleeps on a
        plain event (made only when it goes to sleep) and keeps no timeout of
        its own: the keepalive has a ticker that wakes once per ``keepalive_s``.
        """
        chunk = max(self._width, (self.bytes_per_second // 4) // self._width * self._width)
        try:
            while True:
                if not self._sender_has_work():
                    wake = self._wake = anyio.Event()
                    await wake.wait()
                    continue
                sent_audio = False
                while self._sent < self._buf_start + len(self._buf):
                    lo = self._sent - self._buf_start
                    piece = bytes(self._buf[lo : lo + chunk])
                    await conn.send_media(piece)
                    self._sent += len(piece)
                    sent_audio = True
                self._flush_now = False
                if sent_audio:
                    self._last_send = time.monotonic()
                if self._finalize_due:
                    self._finalize_due = False
                    self._finalize_outstanding = True
                    self._keepalive_due = False
                    await conn.send_finalize()
                    self._last_send = time.monotonic()
                elif self._keepalive_due:
                    self._keepalive_due = False
                    if not sent_audio:
                        await conn.send_keep_alive()
                        self._last_send = time.monotonic()
        except connection_errors():
            scope.cancel()

    async def _keepalive_ticker(self) -> None:
        """Wake the sender for a ``KeepAlive`` once nothing has gone out for ``keepalive_s`` (the VAD gates silence)."""
        while True:
            idle_for = time.monotonic() - self._last_send
            if idle_for >= self.keepalive_s:
                self._keepalive_due = True
                self._wake.set()
                idle_for = 0.0
            await anyio.sleep(self.keepalive_s - idle_for)

    async def _receiver(self, conn: Any) -> None:
        try:
            async for message in conn:
                await self._on_message(message)
        except connection_errors() as exc:
            if self.ctx is not None:
                self.ctx.log.warning("deepgram stt: socket dropped (%s)", exc)

    async def _on_message(self, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else getattr(message, "type", None)
        if kind == "Results":
            await self._on_results(message)
        elif kind == "Error" and self.ctx is not None:
            self.ctx.log.warning("deepgram stt error: %s", getattr(message, "description", message))

    async def _on_results(self, msg: Any) -> None:
        final = bool(getattr(msg, "is_final", False))
        if final:
            end = float(msg.start) + float(msg.duration)
            self._settle(self._conn_base + int(end * self.sample_rate) * self._width)
            if getattr(msg, "from_finalize", False):
                self._finalize_outstanding = False
        alternatives = msg.channel.alternatives if msg.channel is not None else []
        if not alternatives:
            return
        best = alternatives[0]
        text = (best.transcript or "").strip()
        if not text:
            return
        language = self.language
        languages = getattr(best, "languages", None)
        if language == "multi" and languages:
            language = str(languages[0])
        # its last word tells the end of turn whether a pause is one (if the words reach the caller's last sound)
        await self.steer(HeardSoFar(text, language, self._captured_upto(msg)))
        ended_at = self._stopped_at if final else None
        ctx = self.ctx
        if final and ctx is not None and self._stop_seen_at is not None:
            ctx.ledger.time(Stage.STT_FINAL, time.monotonic() - self._stop_seen_at)
            self._stop_seen_at = None
        await self.push(
            Transcript(
                text=text,
                final=final,
                language=language,
                confidence=float(best.confidence) if best.confidence is not None else None,
                speech_ended_at=ended_at,
                alternatives=tuple(t for t in ((getattr(a, "transcript", "") or "").strip()
                                               for a in alternatives[1:]) if t),
            )
        )

    def _captured_upto(self, msg: Any) -> float | None:
        """The capture time of the end of the audio a result covers (None: the result does not say)."""
        start, duration = getattr(msg, "start", None), getattr(msg, "duration", None)
        if start is None or duration is None:
            return None
        end = self._conn_base + int((float(start) + float(duration)) * self.sample_rate) * self._width
        for offset, captured in reversed(self._captured):
            if offset <= end:
                return captured
        return 0.0  # before all the audio remembered: covers nothing recent

    def _settle(self, offset: int) -> None:
        """Deepgram finalised the stream up to ``offset``: forget the audio before it."""
        cut = min(offset, self._sent) - self._buf_start
        if cut > 0:
            del self._buf[:cut]
            self._buf_start += cut
