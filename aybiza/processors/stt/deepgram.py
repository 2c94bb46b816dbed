"""Deepgram streaming speech-to-text (Nova-3, ``/v1/listen``) through the async ``deepgram-sdk``.

One WebSocket per call, opened at ``start`` so the first words do not wait
for a handshake. Caller audio is sent as it arrives (linear16, or μ-law
8 kHz for Twilio — the PCM16 frames are re-encoded, which is lossless for
audio that came in as μ-law). Our VAD drives the stream: ``SpeechStopped``
sends ``Finalize`` (the final transcript comes back at once instead of after
Deepgram's own endpointing), and while the VAD gates silence a
``KeepAlive`` goes out every few seconds so Deepgram does not close the
socket (it does after 10 s without data).

A dropped socket is reopened with backoff without losing the turn: audio
Deepgram has not yet finalised (everything after the end of the last final
result) is kept and sent again on the new socket, and a ``Finalize`` that
had no answer is repeated. A ``LanguageChanged`` frame reopens the socket
with the new language the same way. Transcripts are pushed as
:class:`Transcript` (interim and final); every other frame passes through.

The Deepgram client helpers here (:func:`deepgram_client`) are shared with
the Aura TTS stage. ``AYBIZA_DEEPGRAM_URL`` points both at another base URL
(a fake, a proxy, a self-hosted or EU endpoint).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from contextlib import AsyncExitStack
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from ...codecs import lin2ulaw
from ...errors import CredentialsError, OverloadedError
from ...pipeline import (
    CallContext,
    Frame,
    InputAudio,
    LanguageChanged,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)

__all__ = [
    "DEEPGRAM_URL_ENV",
    "DeepgramSTT",
    "connection_errors",
    "deepgram_client",
    "deepgram_environment",
    "resolve_api_key",
]

DEEPGRAM_URL_ENV = "AYBIZA_DEEPGRAM_URL"
"""One base URL for both listen and speak (``https://…``/``http://…``; ``wss://``/``ws://`` also accepted)."""

_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


def resolve_api_key(api_key: str | None = None) -> str:
    """The Deepgram API key (argument, else ``DEEPGRAM_API_KEY``); :class:`CredentialsError` if none."""
    key = api_key or os.environ.get("DEEPGRAM_API_KEY", "")
    if not key.strip():
        raise CredentialsError(
            "DEEPGRAM_API_KEY is not set: the Deepgram provider needs an API key", provider="deepgram"
        )
    return key.strip()


def deepgram_environment(base_url: str | None = None) -> Any:
    """A ``DeepgramClientEnvironment`` for ``base_url`` (or ``AYBIZA_DEEPGRAM_URL``; else production)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from deepgram.environment import DeepgramClientEnvironment

    url = (base_url or os.environ.get(DEEPGRAM_URL_ENV) or "").strip().rstrip("/")
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


def deepgram_client(api_key: str | None = None, base_url: str | None = None) -> Any:
    """The process's ``AsyncDeepgramClient`` for this key and base URL (created once)."""
    key = resolve_api_key(api_key)
    environment = deepgram_environment(base_url)
    cache_key = (key, environment.production)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            with warnings.catch_warnings():
                # deepgram-sdk 7 imports websockets' legacy client, deprecated in websockets 14+.
                warnings.simplefilter("ignore", DeprecationWarning)
                import deepgram.core.websocket_compat  # noqa: F401
                from deepgram import AsyncDeepgramClient

            client = AsyncDeepgramClient(api_key=key, environment=environment)
            _clients[cache_key] = client
        return client


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

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
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
        connect_timeout: float = 3.0,
        max_reconnects: int = 5,
        backoff_s: tuple[float, float] = (0.1, 2.0),
        max_buffer_s: float = 30.0,
    ) -> None:
        super().__init__()
        if encoding not in ("linear16", "mulaw"):
            raise ValueError(f"encoding must be linear16 or mulaw, not {encoding!r}")
        self._client = deepgram_client(api_key, base_url)
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
        self.max_reconnects = max_reconnects
        self.backoff_s = backoff_s
        self.max_buffer_s = max_buffer_s
        self.language = language or "en"
        self.connections = 0  # sockets opened so far (observability, tests)
        self._width = 1 if encoding == "mulaw" else 2
        # Audio not yet finalised by Deepgram: logical byte offsets over the call's stream.
        self._buf = bytearray()
        self._buf_start = 0
        self._sent = 0
        self._conn_base = 0
        self._wake = anyio.Event()
        self._finalize_due = False
        self._finalize_outstanding = False
        self._reconnect = False
        self._closing = False
        self._session_scope: anyio.CancelScope | None = None
        self._stopped_at: float | None = None
        self._stop_seen_at: float | None = None

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
        elif isinstance(frame, LanguageChanged):
            self._change_language(frame.language)
        await self.push(frame)

    # -- audio in -----------------------------------------------------------------

    def _audio(self, frame: InputAudio) -> None:
        if frame.sample_rate != self.sample_rate:
            self._change_rate(frame.sample_rate)
        self._buf += lin2ulaw(frame.pcm) if self._width == 1 else frame.pcm
        if self.ctx is not None:
            self.ctx.add_usage("stt_seconds", frame.duration)
        excess = len(self._buf) - int(self.max_buffer_s * self.bytes_per_second)
        if excess > 0:
            excess += excess % self._width
            del self._buf[:excess]
            self._buf_start += excess
            self._sent = max(self._sent, self._buf_start)
        self._wake.set()

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
            "language": self.language,
        }
        if self.endpointing_ms is not None:
            params["endpointing"] = self.endpointing_ms
        if self.utterance_end_ms is not None and self.interim_results:
            params["utterance_end_ms"] = self.utterance_end_ms
        if self.keyterms:
            params["keyterm"] = list(self.keyterms)
        return params

    async def _run(self) -> None:
        failures = 0
        errors = connection_errors()
        while not self._closing:
            began = time.monotonic()
            connected = False
            try:
                connected = await self._session()
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
            if connected and time.monotonic() - began >= 1.0:
                failures = 0
            failures += 1
            if failures > self.max_reconnects:
                raise OverloadedError(
                    f"Deepgram listen unreachable after {self.max_reconnects} attempts", provider="deepgram"
                )
            if self.ctx is not None:
                self.ctx.add_usage("stt_reconnects", 1)
            low, high = self.backoff_s
            await anyio.sleep(min(high, low * 2 ** (failures - 1)))

    async def _session(self) -> bool:
        async with AsyncExitStack() as stack:
            with anyio.fail_after(self.connect_timeout):
                conn = await stack.enter_async_context(
                    self._client.listen.v1.connect(**self._connect_params())
                )
            self.connections += 1
            # Resend what Deepgram has not finalised, and an unanswered Finalize.
            self._conn_base = self._buf_start
            self._sent = self._buf_start
            if self._finalize_outstanding:
                self._finalize_due = True
            self._wake.set()
            try:
                async with anyio.create_task_group() as tg:
                    self._session_scope = tg.cancel_scope
                    if self._reconnect:
                        tg.cancel_scope.cancel()
                    tg.start_soon(self._sender, conn, tg.cancel_scope)
                    await self._receiver(conn)
                    tg.cancel_scope.cancel()
            finally:
                self._session_scope = None
        return True

    async def _sender(self, conn: Any, scope: anyio.CancelScope) -> None:
        chunk = max(self._width, (self.bytes_per_second // 4) // self._width * self._width)
        try:
            while True:
                with anyio.move_on_after(self.keepalive_s) as idle:
                    await self._wake.wait()
                self._wake = anyio.Event()
                sent_audio = False
                while self._sent < self._buf_start + len(self._buf):
                    lo = self._sent - self._buf_start
                    piece = bytes(self._buf[lo : lo + chunk])
                    await conn.send_media(piece)
                    self._sent += len(piece)
                    sent_audio = True
                if self._finalize_due:
                    self._finalize_due = False
                    self._finalize_outstanding = True
                    await conn.send_finalize()
                elif idle.cancelled_caught and not sent_audio:
                    await conn.send_keep_alive()
        except connection_errors():
            scope.cancel()

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
        ended_at = self._stopped_at if final else None
        ctx = self.ctx
        if final and ctx is not None and self._stop_seen_at is not None:
            ctx.record_timing("stt_final", time.monotonic() - self._stop_seen_at)
            self._stop_seen_at = None
        await self.push(
            Transcript(
                text=text,
                final=final,
                language=language,
                confidence=float(best.confidence) if best.confidence is not None else None,
                speech_ended_at=ended_at,
            )
        )

    def _settle(self, offset: int) -> None:
        """Deepgram finalised the stream up to ``offset``: forget the audio before it."""
        cut = min(offset, self._sent) - self._buf_start
        if cut > 0:
            del self._buf[:cut]
            self._buf_start += cut
