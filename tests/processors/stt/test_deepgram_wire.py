"""What our Deepgram sockets cost on the wire: no permessage-deflate, caller audio in 100 ms messages."""

from __future__ import annotations

import functools
import importlib
import time

import anyio
import pytest
from anyio.abc import TaskGroup

from aybiza.pipeline import InputAudio, Pipeline, SpeechStarted, SpeechStopped
from aybiza.processors.deepgram_ws import without_compression
from aybiza.processors.stt.deepgram import deepgram_client
from aybiza.testing import FakeDeepgram, wait_until

from .test_deepgram import Sink, listening, run, say, speech


@pytest.mark.anyio
async def test_the_listen_socket_offers_no_compression() -> None:
    async with FakeDeepgram(transcripts=["hello"], interim_every_s=0) as dg:
        stt = listening(dg.url)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await say(p.push, 0.3)
            await wait_until(lambda: bool(sink.transcripts(final=True)))

        await run(stt, sink, feed)
    headers = {k.lower(): v for k, v in dg.listens[0].headers.items()}
    assert headers["upgrade"].lower() == "websocket"
    assert "sec-websocket-extensions" not in headers, headers.get("sec-websocket-extensions")


@pytest.mark.anyio
async def test_the_speak_socket_offers_no_compression() -> None:
    async with FakeDeepgram() as dg:
        client = deepgram_client("test-key", dg.url)
        async with client.speak.v1.connect(model="aura-2-thalia-en", encoding="mulaw", sample_rate=8000):
            await wait_until(lambda: bool(dg.speaks))
    headers = {k.lower(): v for k, v in dg.speaks[0].headers.items()}
    assert "sec-websocket-extensions" not in headers


def test_without_compression_is_idempotent() -> None:
    without_compression()
    listen = importlib.import_module("deepgram.listen.v1.client")
    before = listen.websockets_client_connect
    assert without_compression() == []
    assert listen.websockets_client_connect is before
    assert isinstance(before, functools.partial) and before.keywords == {"compression": None}


@pytest.mark.anyio
async def test_caller_audio_goes_out_in_100_ms_messages_and_the_stop_flushes_the_rest() -> None:
    async with FakeDeepgram(transcripts=["book a table for two"], interim_every_s=0) as dg:
        stt = listening(dg.url)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await say(p.push, 1.03, pace=0.02)  # 51 phone-paced 20 ms frames at 16 kHz
            await wait_until(lambda: bool(sink.transcripts(final=True)))

        await run(stt, sink, feed)
    session = dg.listens[0]
    sizes = [int(e.split(":")[1]) for e in session.events if e.startswith("audio:")]
    assert sum(sizes) == len(session.audio) == 51 * 640, "every byte went out"
    per_100_ms = 16000 * 2 // 10
    assert all(per_100_ms <= n <= 2 * per_100_ms for n in sizes[:-1]), sizes
    assert len(sizes) <= 11, f"{len(sizes)} messages for 1.02 s of audio"
    assert sizes[-1] <= 2 * per_100_ms
    assert session.events[-1] == "Finalize", "the stop flushed the pending audio, then finalised"
    assert [t.text for t in sink.transcripts(final=True)] == ["book a table for two"]


@pytest.mark.anyio
async def test_the_first_quiet_frame_sends_the_pending_speech_at_once() -> None:
    """The end of a word is not held back for a full message: Deepgram's interim and endpointing hear it now."""
    async with FakeDeepgram(transcripts=["hello"], interim_every_s=0) as dg:
        stt = listening(dg.url)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(SpeechStarted(at=time.monotonic()))
            for pcm in speech(0.06, 16000):  # three voiced frames: less than one 100 ms message
                await p.push(InputAudio(pcm, 16000, time.monotonic(), voiced=True))
            await anyio.sleep(0.2)
            assert not dg.listens or not dg.listens[0].audio, "speech waits for a whole message"
            await p.push(InputAudio(bytes(640), 16000, time.monotonic(), voiced=False))
            await wait_until(lambda: bool(dg.listens) and len(dg.listens[0].audio) == 4 * 640, limit_s=0.5)
            await p.push(SpeechStopped(at=time.monotonic()))

        await run(stt, sink, feed)
