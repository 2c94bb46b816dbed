"""Deepgram streaming STT through the real deepgram-sdk against the fake Deepgram server."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import numpy as np
import pytest
from anyio.abc import TaskGroup

from aybiza.codecs import lin2ulaw
from aybiza.errors import CredentialsError, OverloadedError
from aybiza.pipeline import (
    DTMF,
    CallContext,
    Frame,
    HeardSoFar,
    InputAudio,
    LanguageChanged,
    Pipeline,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Stage,
    Transcript,
)
from aybiza.processors.stt.deepgram import DeepgramSTT, deepgram_client
from aybiza.testing import FakeDeepgram, wait_until


class Sink(Processor):
    """The end of the test pipeline: keeps every frame."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)

    def transcripts(self, *, final: bool | None = None) -> list[Transcript]:
        return [f for f in self.frames if isinstance(f, Transcript) and (final is None or f.final == final)]


def speech(seconds: float, rate: int = 16000) -> list[bytes]:
    """20 ms PCM16 frames of a voiced-looking tone."""
    n = int(rate * 0.02)
    total = int(seconds / 0.02)
    t = np.arange(n * total) / rate
    pcm = (np.sin(2 * math.pi * 220 * t) * 6000).astype("<i2").tobytes()
    return [pcm[i * 2 * n : (i + 1) * 2 * n] for i in range(total)]


async def say(
    push: Callable[[Frame], Awaitable[None]], seconds: float, rate: int = 16000, pace: float = 0.004
) -> float:
    """SpeechStarted, the audio (paced), SpeechStopped; returns the stop time."""
    await push(SpeechStarted(at=time.monotonic()))
    for pcm in speech(seconds, rate):
        await push(InputAudio(pcm, rate, time.monotonic(), voiced=True))
        await anyio.sleep(pace)
    stopped = time.monotonic()
    await push(SpeechStopped(at=stopped))
    return stopped


Feed = Callable[[Pipeline, TaskGroup], Awaitable[None]]


async def run(stt: DeepgramSTT, sink: Sink, feed: Feed, ctx: CallContext | None = None,
              steered: list[Frame] | None = None) -> CallContext:
    """Run ``stt -> sink`` for one call; control frames that pass the stage go to ``steered``."""
    ctx = ctx or CallContext(call_id="stt-test")

    async def on_control(frame: Frame) -> None:
        if steered is not None:
            steered.append(frame)

    await Pipeline([stt, sink], on_control=on_control).run(ctx, feed)
    return ctx


def listening(url: str, api_key: str = "test-key", **options: Any) -> DeepgramSTT:
    """A DeepgramSTT on a client of its own for ``url`` (the process's engines share one in production)."""
    return DeepgramSTT(deepgram_client(api_key, url), **options)


@pytest.mark.anyio
async def test_interim_hypotheses_then_the_final_transcript() -> None:
    async with FakeDeepgram(transcripts=["book a table for two"], interim_every_s=0.2) as dg:
        stt = listening(dg.url)
        sink = Sink()
        stopped = 0.0

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            nonlocal stopped
            stopped = await say(p.push, 1.0)
            await wait_until(lambda: bool(sink.transcripts(final=True)))

        ctx = await run(stt, sink, feed)

    interims = sink.transcripts(final=False)
    finals = sink.transcripts(final=True)
    assert [t.text for t in finals] == ["book a table for two"]
    assert interims, "interim hypotheses are passed on"
    assert all("book a table for two".startswith(t.text) for t in interims)
    assert sink.frames.index(interims[-1]) < sink.frames.index(finals[0])
    assert finals[0].speech_ended_at == stopped
    assert finals[0].language == "en"
    query = dg.listens[0].query
    assert query["model"] == "nova-3"
    assert (query["encoding"], query["sample_rate"]) == ("linear16", "16000")
    assert query["interim_results"] == "true"
    assert query["utterance_end_ms"] == "1000"
    assert ctx.ledger.usage().stt_seconds == {"nova-3": pytest.approx(1.0)}
    assert [(stage, turn) for stage, _, turn in ctx.ledger.samples] == [(Stage.STT_FINAL, 1)]


@pytest.mark.anyio
async def test_vad_stop_sends_finalize_after_the_audio() -> None:
    async with FakeDeepgram(transcripts=["yes please"], interim_every_s=0) as dg:
        stt = listening(dg.url)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await say(p.push, 0.6)
            await wait_until(lambda: bool(sink.transcripts(final=True)))

        await run(stt, sink, feed)

    session = dg.listens[0]
    assert session.types() == ["Finalize"]
    assert session.events[-1] == "Finalize", "Finalize follows the utterance's audio"
    assert len(session.audio) == int(0.6 * 16000) * 2
    final = next(m for m in session.sent if m.get("is_final"))
    assert final["from_finalize"] is True
    assert [t.text for t in sink.transcripts(final=True)] == ["yes please"]


@pytest.mark.anyio
async def test_a_dropped_socket_is_reopened_and_the_turn_is_not_lost() -> None:
    async with FakeDeepgram(transcripts=["i would like to change my booking"], drop_after_s=0.5) as dg:
        stt = listening(dg.url, backoff_s=(0.01, 0.05))
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await say(p.push, 1.0)
            await wait_until(lambda: bool(sink.transcripts(final=True)))

        ctx = await run(stt, sink, feed)

    assert [t.text for t in sink.transcripts(final=True)] == ["i would like to change my booking"]
    assert len(dg.listens) == 2 and dg.listens[0].dropped
    # The new socket got the whole utterance again, then the Finalize.
    assert len(dg.listens[1].audio) == int(1.0 * 16000) * 2
    assert dg.listens[1].types()[-1] == "Finalize"
    assert ctx.ledger.usage().stt_reconnects == 1


@pytest.mark.anyio
async def test_audio_already_finalised_is_not_sent_again_after_a_drop() -> None:
    async with FakeDeepgram(transcripts=["first", "second"], drop_after_s=1.2, interim_every_s=0) as dg:
        stt = listening(dg.url, backoff_s=(0.01, 0.05))
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await say(p.push, 0.8)
            await wait_until(lambda: len(sink.transcripts(final=True)) == 1)
            await say(p.push, 0.8)  # the socket drops 0.4 s into this one
            await wait_until(lambda: len(sink.transcripts(final=True)) == 2)

        await run(stt, sink, feed)

    assert [t.text for t in sink.transcripts(final=True)] == ["first", "second"]
    assert len(dg.listens) == 2
    assert len(dg.listens[1].audio) == int(0.8 * 16000) * 2, "only the unfinalised utterance is resent"


@pytest.mark.anyio
async def test_mulaw_for_twilio_sends_the_g711_bytes_at_8khz() -> None:
    async with FakeDeepgram(transcripts=["hello"]) as dg:
        stt = listening(dg.url, encoding="mulaw")
        sink = Sink()
        frames = speech(0.4, 8000)

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await say(p.push, 0.4, rate=8000)
            await wait_until(lambda: bool(sink.transcripts(final=True)))

        await run(stt, sink, feed)

    query = dg.listens[0].query
    assert (query["encoding"], query["sample_rate"]) == ("mulaw", "8000")
    assert bytes(dg.listens[0].audio) == lin2ulaw(b"".join(frames))


@pytest.mark.anyio
async def test_phone_audio_goes_to_deepgram_as_the_ulaw_it_arrived_as() -> None:
    async with FakeDeepgram(transcripts=["hello"], interim_every_s=0) as dg:
        stt = listening(dg.url, encoding="mulaw")
        sink = Sink()
        # The μ-law differs from what encoding the PCM would give: only an untouched pass-through matches.
        arrived = [bytes((7 * n + i) % 256 for i in range(160)) for n in range(20)]

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(SpeechStarted(at=time.monotonic()))
            for ulaw in arrived:
                await p.push(InputAudio(bytes(320), 8000, time.monotonic(), voiced=True, ulaw=ulaw))
            await p.push(SpeechStopped(at=time.monotonic()))
            await wait_until(lambda: bool(sink.transcripts(final=True)))

        await run(stt, sink, feed)

    assert bytes(dg.listens[0].audio) == b"".join(arrived)


@pytest.mark.anyio
async def test_keepalive_flows_while_the_vad_gates_silence() -> None:
    async with FakeDeepgram() as dg:
        stt = listening(dg.url, keepalive_s=0.05)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await wait_until(lambda: bool(dg.listens) and dg.listens[0].types().count("KeepAlive") >= 2)

        await run(stt, sink, feed)

    assert set(dg.listens[0].types()) == {"KeepAlive"}
    assert not dg.listens[0].audio


@pytest.mark.anyio
async def test_a_language_steered_up_reopens_the_socket_and_resends_the_unsettled_audio() -> None:
    async with FakeDeepgram(transcripts=["hola buenos dias"], language="es", interim_every_s=0) as dg:
        stt = listening(dg.url)
        sink = Sink()
        steered: list[Frame] = []
        audio_end: list[float] = []

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await wait_until(lambda: bool(dg.listens))
            await p.push(SpeechStarted(at=time.monotonic()))
            for pcm in speech(0.3):
                frame = InputAudio(pcm, 16000, time.monotonic(), voiced=True)
                await p.push(frame)
                audio_end[:] = [frame.captured_at + frame.duration]
            await stt.control(LanguageChanged("es", 0.9))  # the language stage downstream steers it up
            await p.push(SpeechStopped(at=time.monotonic()))
            await wait_until(lambda: bool(sink.transcripts(final=True)))

        await run(stt, sink, feed, CallContext(call_id="lang", language="en"), steered)

    assert [s.query["language"] for s in dg.listens] == ["en", "es"]
    assert len(dg.listens[1].audio) == int(0.3 * 16000) * 2, "the utterance is heard again in Spanish"
    assert dg.listens[1].types() == ["Finalize"]
    final = sink.transcripts(final=True)[0]
    assert (final.text, final.language) == ("hola buenos dias", "es")
    assert steered == [LanguageChanged("es", 0.9), HeardSoFar("hola buenos dias", "es", audio_end[0])], (
        "the control frame goes on up the pipeline; the words heard go up to the end of turn, with the capture "
        "time of the end of the audio they cover (here all of it)")
    assert not any(isinstance(f, LanguageChanged) for f in sink.frames), "steered, not pushed"


@pytest.mark.anyio
async def test_the_same_language_steered_again_keeps_the_socket() -> None:
    async with FakeDeepgram(transcripts=["hello"], interim_every_s=0) as dg:
        stt = listening(dg.url)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await wait_until(lambda: bool(dg.listens))
            await stt.control(LanguageChanged("en"))
            await say(p.push, 0.3)
            await wait_until(lambda: bool(sink.transcripts(final=True)))

        await run(stt, sink, feed, CallContext(call_id="same", language="en"))

    assert len(dg.listens) == 1


@pytest.mark.anyio
async def test_other_frames_pass_through_and_audio_is_consumed() -> None:
    async with FakeDeepgram() as dg:
        stt = listening(dg.url)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(SpeechStarted(at=1.0))
            await p.push(InputAudio(speech(0.02)[0], 16000, 1.0))
            await p.push(DTMF("5"))
            await p.push(SpeechStopped(at=2.0))

        await run(stt, sink, feed)

    assert [type(f).__name__ for f in sink.frames] == ["SpeechStarted", "DTMF", "SpeechStopped"]


@pytest.mark.anyio
async def test_an_unreachable_deepgram_fails_the_stage_within_the_outage_limit() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there: every connect is refused
    limit_s = 1.0
    stt = listening(f"http://127.0.0.1:{port}", outage_limit_s=limit_s, backoff_s=(0.01, 0.1))
    began = time.monotonic()

    async def feed(p: Pipeline, tg: TaskGroup) -> None:
        await anyio.sleep(10)

    with pytest.raises(ExceptionGroup) as caught:
        ctx = CallContext(call_id="unreachable")
        await run(stt, Sink(), feed, ctx)
    elapsed = time.monotonic() - began
    assert caught.group_contains(OverloadedError)
    assert limit_s * 0.9 <= elapsed <= limit_s + 0.5, f"failed after {elapsed:.2f} s"
    assert ctx.ledger.stt_reconnects >= 1, "it kept trying until the limit"


@pytest.mark.anyio
async def test_a_silent_endpoint_fails_the_stage_within_the_outage_limit() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts TCP, never answers the WebSocket handshake
        port = listener.getsockname()[1]
        stt = listening(f"http://127.0.0.1:{port}", outage_limit_s=1.0, connect_timeout=0.3)
        began = time.monotonic()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await anyio.sleep(10)

        with pytest.raises(ExceptionGroup) as caught:
            await run(stt, Sink(), feed)
    assert caught.group_contains(OverloadedError)
    assert time.monotonic() - began <= 1.5


def test_missing_api_key_is_a_clear_credentials_error() -> None:
    with pytest.raises(CredentialsError, match="DEEPGRAM_API_KEY"):
        deepgram_client("", "http://127.0.0.1:9")


@pytest.mark.anyio
async def test_a_refused_key_fails_the_stage_at_once_with_a_credentials_error() -> None:
    async with FakeDeepgram() as dg:
        stt = listening(dg.url, api_key="wrong-key")
        began = time.monotonic()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await anyio.sleep(10)  # the stage fails the call meanwhile

        with pytest.raises(ExceptionGroup) as caught:
            await run(stt, Sink(), feed)
    assert caught.group_contains(CredentialsError)
    assert time.monotonic() - began < 0.5, "a refused key is not waited on"
    assert dg.rejected == 1, "a refused key is not retried"
