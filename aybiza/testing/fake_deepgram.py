"""A fake Deepgram: ``/v1/listen`` (streaming STT) and ``/v1/speak`` (Aura TTS) over WebSocket.

It speaks the real wire protocol (JSON text frames and binary audio), so the
real ``deepgram-sdk`` can be pointed at it (``AYBIZA_DEEPGRAM_URL=dg.url``).
Transcripts are scripted, not recognised: each utterance (the audio between
two finals) is given the next text of ``transcripts`` (or what a callable
returns for its audio). Behaviour:

* listen: interim ``Results`` every ``interim_every_s`` of audio; on
  ``Finalize`` a final with ``from_finalize: true``; on ``CloseStream`` a
  ``speech_final`` result, ``UtteranceEnd``, ``Metadata``, close 1000;
  ``KeepAlive`` is swallowed; ``drop_after_s`` drops the TCP connection once
  that much audio arrived (on the first ``drop_connections`` connections).
* speak: ``Metadata`` first; each ``Speak`` is synthesised at once (a tone,
  ``seconds_per_char`` long) in ``chunk_s`` binary frames; ``Flush`` →
  ``Flushed``; ``Clear`` drops queued audio → ``Cleared`` (``clear_delay_s``
  late, audio still flowing meanwhile, like a slow network); ``Close`` closes;
  ``speak_drop_after_s`` drops the first speak connection after that much audio.
* without ``Authorization: Token <api_key>`` the upgrade is refused with 401
  (and so is every upgrade after the first ``accept_connections``: a key
  revoked mid-call); ``GET /v1/projects`` answers 200 for the key, 401
  otherwise (what ``aybiza serve`` asks at startup).

    async with FakeDeepgram(transcripts=["hello there"]) as dg:
        stt = DeepgramSTT(api_key="test-key", base_url=dg.url)
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from ..codecs import lin2ulaw
from ._server import LoopbackServer

__all__ = ["FakeDeepgram", "ListenSession", "SpeakSession", "tone"]

Transcripts = Sequence[str] | Callable[[bytes], str]


@dataclass(slots=True)
class ListenSession:
    """One ``/v1/listen`` connection as the fake saw it."""

    query: dict[str, str]
    headers: dict[str, str]
    audio: bytearray = field(default_factory=bytearray)
    messages: list[dict[str, Any]] = field(default_factory=list)  # client text frames, in order
    sent: list[dict[str, Any]] = field(default_factory=list)  # server JSON frames, in order
    events: list[str] = field(default_factory=list)  # "audio:<n>" and message types, in arrival order
    dropped: bool = False
    closed: bool = False

    def types(self) -> list[str]:
        """The ``type`` of every text frame the client sent."""
        return [str(message.get("type")) for message in self.messages]


@dataclass(slots=True)
class SpeakSession:
    """One ``/v1/speak`` connection as the fake saw it."""

    query: dict[str, str]
    headers: dict[str, str]
    messages: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes_sent: int = 0
    dropped: bool = False
    closed: bool = False

    def types(self) -> list[str]:
        """The ``type`` of every text frame the client sent."""
        return [str(message.get("type")) for message in self.messages]

    @property
    def texts(self) -> list[str]:
        """The text of every ``Speak`` message."""
        return [str(m.get("text", "")) for m in self.messages if m.get("type") == "Speak"]


def tone(seconds: float, sample_rate: int, encoding: str = "linear16", frequency: float = 440.0) -> bytes:
    """A sine tone as linear16 or μ-law bytes (the fake's synthetic speech)."""
    n = max(0, int(round(seconds * sample_rate)))
    t = np.arange(n, dtype=np.float64) / sample_rate
    pcm = (np.sin(2 * math.pi * frequency * t) * 8000).astype("<i2").tobytes()
    return lin2ulaw(pcm) if encoding == "mulaw" else pcm


def _bytes_per_second(query: dict[str, str], default_rate: int) -> tuple[int, int, str]:
    encoding = query.get("encoding", "linear16")
    rate = int(query.get("sample_rate", default_rate))
    width = 1 if encoding in ("mulaw", "alaw") else 2
    return rate * width, rate, encoding


class FakeDeepgram(LoopbackServer):
    """Deepgram listen + speak WebSockets on a free loopback port (``.url`` is the base URL)."""

    def __init__(
        self,
        transcripts: Transcripts = ("hello there",),
        *,
        api_key: str | None = "test-key",
        interim_every_s: float = 0.25,
        min_speech_s: float = 0.1,
        drop_after_s: float | None = None,
        drop_connections: int = 1,
        language: str = "en",
        seconds_per_char: float = 0.01,
        chunk_s: float = 0.1,
        chunk_delay_s: float = 0.0,
        clear_delay_s: float = 0.0,
        speak_drop_after_s: float | None = None,
        accept_connections: int | None = None,
        speak_status: int | None = None,
    ) -> None:
        super().__init__()
        self.transcripts = transcripts
        self.api_key = api_key
        self.interim_every_s = interim_every_s
        self.min_speech_s = min_speech_s
        self.drop_after_s = drop_after_s
        self.drop_connections = drop_connections
        self.language = language
        self.seconds_per_char = seconds_per_char
        self.chunk_s = chunk_s
        self.chunk_delay_s = chunk_delay_s
        self.clear_delay_s = clear_delay_s
        self.speak_drop_after_s = speak_drop_after_s
        self.accept_connections = accept_connections
        self.accepted = 0
        self.speak_status = speak_status  # answer speak upgrades with this HTTP status (a TTS outage)
        self.listens: list[ListenSession] = []
        self.speaks: list[SpeakSession] = []
        self.rejected = 0
        self._cursor = 0

    def rescript(self, transcripts: Transcripts) -> None:
        """Answer the next utterances with ``transcripts`` (from the first)."""
        self.transcripts = transcripts
        self._cursor = 0

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/listen", self._listen)
        app.router.add_get("/v1/speak", self._speak)
        app.router.add_get("/v1/projects", self._projects)
        return app

    async def _projects(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            self.rejected += 1
            return web.json_response({"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}, status=401)
        return web.json_response({"projects": [{"project_id": "fake", "name": "aybiza tests"}]})

    # -- shared ---------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("Authorization", "") in (f"Token {self.api_key}", f"token {self.api_key}")

    def _admit(self, request: web.Request) -> bool:
        """A WebSocket upgrade with the key, while the key is still accepted."""
        if not self._authorized(request) or (
                self.accept_connections is not None and self.accepted >= self.accept_connections):
            self.rejected += 1
            return False
        self.accepted += 1
        return True

    def _text_for(self, audio: bytes, *, consume: bool) -> str:
        if callable(self.transcripts):
            return self.transcripts(audio)
        if not self.transcripts:
            return ""
        text = self.transcripts[min(self._cursor, len(self.transcripts) - 1)]
        if consume:
            self._cursor += 1
        return text

    # -- listen ---------------------------------------------------------------

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        if not self._admit(request):
            return web.Response(status=401, text="invalid credentials")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.track(ws)
        try:
            return await self._listen_session(request, ws)
        finally:
            self.untrack(ws)

    async def _listen_session(self, request: web.Request, ws: web.WebSocketResponse) -> web.WebSocketResponse:
        session = ListenSession(query=dict(request.query), headers=dict(request.headers))
        index = len(self.listens)
        self.listens.append(session)
        bps, _, _ = _bytes_per_second(session.query, 16000)
        state = _Utterance(start_s=0.0)
        request_id = str(uuid.uuid4())

        async def send(obj: dict[str, Any]) -> None:
            session.sent.append(obj)
            await ws.send_str(json.dumps(obj))

        async def results(*, final: bool, speech_final: bool, from_finalize: bool) -> None:
            seconds = len(state.audio) / bps
            if final:
                text = self._text_for(bytes(state.audio), consume=seconds >= self.min_speech_s)
                if seconds < self.min_speech_s:
                    text = ""
            else:
                words = self._text_for(bytes(state.audio), consume=False).split()
                text = " ".join(words[: min(len(words), state.interims + 1)])
            await send(
                _results(
                    request_id,
                    text,
                    state.start_s,
                    seconds,
                    final=final,
                    speech_final=speech_final,
                    from_finalize=from_finalize,
                    language=self.language,
                    multi=session.query.get("language") == "multi",
                )
            )
            if final:
                state.start_s += seconds
                state.audio.clear()
                state.interims = 0

        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                data: bytes = msg.data
                session.audio.extend(data)
                session.events.append(f"audio:{len(data)}")
                state.audio.extend(data)
                if (
                    self.drop_after_s is not None
                    and index < self.drop_connections
                    and len(session.audio) >= self.drop_after_s * bps
                ):
                    session.dropped = True
                    if request.transport is not None:
                        request.transport.abort()
                    break
                if self.interim_every_s > 0:
                    while len(state.audio) >= (state.interims + 1) * self.interim_every_s * bps:
                        await results(final=False, speech_final=False, from_finalize=False)
                        state.interims += 1
            elif msg.type == WSMsgType.TEXT:
                obj = json.loads(msg.data)
                session.messages.append(obj)
                kind = obj.get("type")
                session.events.append(str(kind))
                if kind == "Finalize":
                    await results(final=True, speech_final=False, from_finalize=True)
                elif kind == "CloseStream":
                    await results(final=True, speech_final=True, from_finalize=False)
                    await send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": state.start_s})
                    await send(
                        {
                            "type": "Metadata",
                            "transaction_key": "deprecated",
                            "request_id": request_id,
                            "sha256": "0" * 64,
                            "created": "2026-01-01T00:00:00.000Z",
                            "duration": len(session.audio) / bps,
                            "channels": 1,
                        }
                    )
                    await ws.close(code=1000)
                    break
                elif kind not in ("KeepAlive", "Configure"):
                    await send(
                        {
                            "type": "Error",
                            "variant": "SchemaError",
                            "description": f"unknown message type {kind!r}",
                            "message": msg.data,
                        }
                    )
            else:
                break
        session.closed = True
        return ws

    # -- speak ----------------------------------------------------------------

    async def _speak(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            self.rejected += 1
            return web.Response(status=401, text="invalid credentials")
        if self.speak_status is not None:
            return web.Response(status=self.speak_status, text="speak is unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.track(ws)
        try:
            return await self._speak_session(request, ws)
        finally:
            self.untrack(ws)

    async def _speak_session(self, request: web.Request, ws: web.WebSocketResponse) -> web.WebSocketResponse:
        session = SpeakSession(query=dict(request.query), headers=dict(request.headers))
        drop_at = None
        if self.speak_drop_after_s is not None and not self.speaks:
            drop_at = self.speak_drop_after_s  # only the first connection drops
        self.speaks.append(session)
        bps, rate, encoding = _bytes_per_second(session.query, 24000)
        chunk = max(1, int(self.chunk_s * bps))
        if encoding == "linear16":
            chunk -= chunk % 2
        jobs: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        sequence = 0

        async def synthesise() -> None:
            nonlocal sequence
            while True:
                kind, text = await jobs.get()
                if kind == "speak":
                    audio = tone(len(text) * self.seconds_per_char, rate, encoding)
                    for start in range(0, len(audio), chunk):
                        if drop_at is not None and session.audio_bytes_sent >= drop_at * bps:
                            session.dropped = True
                            if request.transport is not None:
                                request.transport.abort()
                            return
                        await ws.send_bytes(audio[start : start + chunk])
                        session.audio_bytes_sent += len(audio[start : start + chunk])
                        if self.chunk_delay_s:
                            await asyncio.sleep(self.chunk_delay_s)
                else:
                    await ws.send_str(json.dumps({"type": "Flushed", "sequence_id": sequence}))
                    sequence += 1

        await ws.send_str(
            json.dumps(
                {
                    "type": "Metadata",
                    "request_id": str(uuid.uuid4()),
                    "model_name": session.query.get("model", "aura-2-thalia-en"),
                    "model_version": "fake",
                    "model_uuid": str(uuid.uuid4()),
                }
            )
        )
        worker = asyncio.create_task(synthesise())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                obj = json.loads(msg.data)
                session.messages.append(obj)
                kind = obj.get("type")
                if kind == "Speak":
                    jobs.put_nowait(("speak", str(obj.get("text", ""))))
                elif kind == "Flush":
                    jobs.put_nowait(("flush", ""))
                elif kind == "Clear":
                    if self.clear_delay_s:  # a slow network: audio keeps flowing meanwhile
                        await asyncio.sleep(self.clear_delay_s)
                    worker.cancel()
                    await asyncio.gather(worker, return_exceptions=True)
                    while not jobs.empty():
                        jobs.get_nowait()
                    await ws.send_str(json.dumps({"type": "Cleared", "sequence_id": sequence}))
                    worker = asyncio.create_task(synthesise())
                elif kind == "Close":
                    await ws.close(code=1000)
                    break
                else:
                    await ws.send_str(
                        json.dumps(
                            {
                                "type": "Warning",
                                "code": "UNKNOWN_MESSAGE_TYPE",
                                "description": f"unknown message type {kind!r}",
                            }
                        )
                    )
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            session.closed = True
        return ws


@dataclass(slots=True)
class _Utterance:
    start_s: float
    audio: bytearray = field(default_factory=bytearray)
    interims: int = 0


def _results(
    request_id: str,
    text: str,
    start: float,
    duration: float,
    *,
    final: bool,
    speech_final: bool,
    from_finalize: bool,
    language: str,
    multi: bool,
) -> dict[str, Any]:
    words = text.split()
    step = duration / len(words) if words else 0.0
    alternative: dict[str, Any] = {
        "transcript": text,
        "confidence": 0.98 if words else 0.0,
        "words": [
            {
                "word": w.lower().strip(".,!?"),
                "start": start + i * step,
                "end": start + (i + 1) * step,
                "confidence": 0.98,
                "punctuated_word": w,
            }
            for i, w in enumerate(words)
        ],
    }
    if multi:
        alternative["languages"] = [language]
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": duration,
        "start": start,
        "is_final": final,
        "speech_final": speech_final,
        "from_finalize": from_finalize,
        "channel": {"alternatives": [alternative]},
        "metadata": {
            "request_id": request_id,
            "model_info": {"name": "nova-3", "version": "fake", "arch": "fake"},
            "model_uuid": "00000000-0000-0000-0000-000000000000",
        },
    }
