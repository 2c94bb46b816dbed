"""TTSProcessor: order of audio and turn ends, barge-in, routing by language; the shared engine helpers."""

from __future__ import annotations

import io
import sys
import threading
import wave
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
import pytest

from aybiza.errors import ConfigError, FatalProviderError
from aybiza.pipeline.context import CallContext
from aybiza.pipeline.frames import DTMF, AgentResume, AgentSpeaking, AgentText, AgentTurnDone, Interruption, OutputAudio
from aybiza.pipeline.ledger import Stage
from aybiza.processors.tts.base import (
    TTSProcessor,
    primary_language,
    read_wav_header,
    require_binary,
    split_clauses,
    stream_wav_command,
)

from .helpers import RecordingSink

RATE = 8000


class ScriptedSynthesizer:
    """A fake engine: ``chunks`` chunks per text whose bytes name the text and chunk index.

    A text listed in ``gates`` waits on its gate before every chunk after the
    first, as a slow engine would between clauses. ``closed[text]`` is set
    when that text's synthesis generator has finished or been closed.
    """

    name = "scripted"

    def __init__(self, chunks: int = 3, gates: dict[str, threading.Event] | None = None) -> None:
        self.chunks = chunks
        self.gates = gates or {}
        self.requests: list[tuple[str, str]] = []
        self.closed: defaultdict[str, threading.Event] = defaultdict(threading.Event)

    def synthesize(self, text: str, language: str) -> Iterator[tuple[bytes, int]]:
        self.requests.append((text, language))
        try:
            for index in range(self.chunks):
                if index and text in self.gates:
                    self.gates[text].wait(30)
                yield label(text, index), RATE
        finally:
            self.closed[text].set()


def label(text: str, index: int) -> bytes:
    """The PCM a ScriptedSynthesizer yields for chunk ``index`` of ``text`` (even length)."""
    data = f"{text}#{index}".encode()
    return data + b"\0" * (len(data) % 2)


class FailingSynthesizer:
    name = "failing"

    def synthesize(self, text: str, language: str) -> Iterator[tuple[bytes, int]]:
        raise FatalProviderError("engine broke", provider=self.name)
        yield b"", RATE  # pragma: no cover - makes this a generator


@asynccontextmanager
async def running(processor: TTSProcessor) -> AsyncIterator[tuple[RecordingSink, CallContext]]:
    """Run ``processor`` in a task group with a recording sink downstream."""
    sink = RecordingSink()
    processor.push = sink
    ctx = CallContext(call_id="test")
    async with anyio.create_task_group() as tg:
        await processor.start(ctx, tg)
        yield sink, ctx
        tg.cancel_scope.cancel()
    await processor.stop()


@pytest.mark.anyio
async def test_audio_of_each_text_in_order_then_the_turn_end() -> None:
    engine = ScriptedSynthesizer(chunks=3)
    tts = TTSProcessor(engine)
    async with running(tts) as (sink, ctx):
        await tts.process(AgentText("Hello, thanks for calling.", 1))
        await tts.process(AgentText("We open at nine.", 1))
        await tts.process(AgentTurnDone(1))
        await sink.wait_for(lambda _: sink.has(AgentTurnDone, 1))

    audio = sink.of(OutputAudio)
    assert [f.pcm for f in audio] == [
        label(text, i) for text in ("Hello, thanks for calling.", "We open at nine.") for i in range(3)
    ]
    assert all(f.turn_id == 1 and f.sample_rate == RATE for f in audio)
    assert isinstance(sink.frames[-1], AgentTurnDone)
    assert ctx.ledger.usage().tts_chars == {"scripted": len("Hello, thanks for calling.") + len("We open at nine.")}
    assert [stage for stage, _, _ in ctx.ledger.samples] == [Stage.TTS_FIRST_BYTE]  # once per turn


@pytest.mark.anyio
async def test_interruption_stops_the_turn_and_drops_queued_text() -> None:
    long_text = "A long answer, with many clauses."
    gate = threading.Event()
    engine = ScriptedSynthesizer(chunks=5, gates={long_text: gate})
    tts = TTSProcessor(engine)
    async with running(tts) as (sink, _):
        await tts.process(AgentText(long_text, 1))
        await tts.process(AgentText("Queued behind it.", 1))
        await tts.process(AgentTurnDone(1))
        await sink.wait_for(lambda _: sink.has(OutputAudio))  # the engine is now stuck before chunk 2

        await tts.process(Interruption(at=1.0))
        # The next turn is spoken while the interrupted synthesis is still stuck in its thread.
        await tts.process(AgentText("Sure, go ahead.", 2))
        await tts.process(AgentTurnDone(2))
        await sink.wait_for(lambda _: sink.has(AgentTurnDone, 2))

        gate.set()  # now let the interrupted engine try to go on
        assert await anyio.to_thread.run_sync(engine.closed[long_text].wait, 30)
        await anyio.sleep(0.05)  # a chunk it handed back would have reached the sink by now

    cut = next(i for i, f in enumerate(sink.frames) if isinstance(f, Interruption))
    before, after = sink.frames[:cut], sink.frames[cut + 1 :]
    assert [f.pcm for f in before if isinstance(f, OutputAudio)] == [label(long_text, 0)]
    assert not any(isinstance(f, OutputAudio | AgentTurnDone) and f.turn_id == 1 for f in after)
    spoken_after = [f.pcm for f in after if isinstance(f, OutputAudio)]
    assert spoken_after == [label("Sure, go ahead.", i) for i in range(5)]
    assert [text for text, _ in engine.requests] == [long_text, "Sure, go ahead."]


@pytest.mark.anyio
async def test_a_false_interruption_resumes_from_the_sentence_the_caller_was_hearing() -> None:
    engine = ScriptedSynthesizer(chunks=2)  # each chunk is a few bytes: a sentence is ~1 ms of audio at RATE
    tts = TTSProcessor(engine)
    async with running(tts) as (sink, _):
        await tts.control(AgentSpeaking(True))
        await tts.process(AgentText("First sentence.", 1))
        await tts.process(AgentText("Second sentence.", 1))
        await tts.process(AgentTurnDone(1))
        await sink.wait_for(lambda _: sink.has(AgentTurnDone, 1))
        await anyio.sleep(0.01)  # the caller has heard all of it by now
        await tts.process(Interruption(at=1.0))
        await tts.process(AgentResume(at=1.1))
        await anyio.sleep(0.05)
    assert [text for text, _ in engine.requests] == ["First sentence.", "Second sentence."]  # nothing left to say

    engine = ScriptedSynthesizer(chunks=2)
    tts = TTSProcessor(engine)
    async with running(tts) as (sink, _):
        await tts.process(AgentText("First sentence.", 1))  # not heard yet: the output has not started
        await tts.process(AgentText("Second sentence.", 1))
        await tts.process(AgentTurnDone(1))
        await sink.wait_for(lambda _: sink.has(AgentTurnDone, 1))
        await tts.process(Interruption(at=1.0))
        await tts.process(AgentResume(at=1.1))
        await sink.wait_for(lambda _: len(sink.of(AgentTurnDone)) == 2)
    assert [text for text, _ in engine.requests] == ["First sentence.", "Second sentence."] * 2
    after = sink.frames[next(i for i, f in enumerate(sink.frames) if isinstance(f, Interruption)) + 1 :]
    assert [f.turn_id for f in after if isinstance(f, OutputAudio)] == [1] * 4


@pytest.mark.anyio
async def test_a_resume_without_an_interrupted_turn_says_nothing() -> None:
    engine = ScriptedSynthesizer()
    tts = TTSProcessor(engine)
    async with running(tts) as (sink, _):
        await tts.process(AgentResume(at=1.0))
        await anyio.sleep(0.05)
    assert engine.requests == [] and not sink.of(OutputAudio)


@pytest.mark.anyio
async def test_other_frames_pass_while_a_text_is_being_spoken() -> None:
    gate = threading.Event()
    engine = ScriptedSynthesizer(chunks=2, gates={"One moment, please.": gate})
    tts = TTSProcessor(engine)
    async with running(tts) as (sink, _):
        await tts.process(AgentText("One moment, please.", 1))
        await sink.wait_for(lambda _: sink.has(OutputAudio))
        await tts.process(DTMF("5"))
        assert isinstance(sink.frames[-1], DTMF)  # not held behind the unfinished text
        gate.set()
        await tts.process(AgentTurnDone(1))
        await sink.wait_for(lambda _: sink.has(AgentTurnDone, 1))
    assert [type(f).__name__ for f in sink.frames] == ["OutputAudio", "DTMF", "OutputAudio", "AgentTurnDone"]


@pytest.mark.anyio
async def test_blank_text_is_not_spoken() -> None:
    engine = ScriptedSynthesizer()
    tts = TTSProcessor(engine)
    async with running(tts) as (sink, ctx):
        await tts.process(AgentText("  \n ", 1))
        await tts.process(AgentTurnDone(1))
        await sink.wait_for(lambda _: sink.has(AgentTurnDone, 1))
    assert engine.requests == []
    assert sink.of(OutputAudio) == []
    assert ctx.ledger.usage().tts_chars == {}


@pytest.mark.anyio
async def test_non_english_text_goes_to_the_fallback_engine() -> None:
    english, other = ScriptedSynthesizer(chunks=1), ScriptedSynthesizer(chunks=1)
    tts = TTSProcessor(english, fallback=other)
    async with running(tts) as (sink, _):
        await tts.process(AgentText("Hello.", 1, language="en-GB"))
        await tts.process(AgentText("Guten Tag.", 1, language="de-DE"))
        await tts.process(AgentText("Hola.", 1, language="es"))
        await tts.process(AgentTurnDone(1))
        await sink.wait_for(lambda _: sink.has(AgentTurnDone, 1))
    assert english.requests == [("Hello.", "en-GB")]
    assert other.requests == [("Guten Tag.", "de-DE"), ("Hola.", "es")]


@pytest.mark.anyio
async def test_an_engine_failure_ends_the_call_with_the_engine_error() -> None:
    with pytest.raises(BaseExceptionGroup) as caught:
        tts = TTSProcessor(FailingSynthesizer())
        async with running(tts):
            await tts.process(AgentText("Hello.", 1))
            await anyio.sleep(10)
    assert caught.group_contains(FatalProviderError, match="engine broke")


# --- helpers shared by the engines ------------------------------------------------------------


def test_split_clauses_cuts_at_punctuation_but_not_inside_numbers() -> None:
    assert split_clauses("Hello, we open at 9.30; it costs $1,000. Okay? Great!") == [
        "Hello,",
        "we open at 9.30;",
        "it costs $1,000.",
        "Okay?",
        "Great!",
    ]
    assert split_clauses("  ... ,  ") == []


def test_a_long_opening_clause_is_cut_before_a_connective_word() -> None:
    text = "Your appointment is confirmed for Tuesday at three thirty in the afternoon. See you then."
    assert split_clauses(text, first_max_words=8) == [
        "Your appointment is confirmed",
        "for Tuesday at three thirty in the afternoon.",
        "See you then.",
    ]
    assert split_clauses(text) == [text[: text.index(" See")], "See you then."]
    # No connective early enough: better whole than torn mid-phrase.
    whole = "We have plenty of free parking spaces right outside the main entrance."
    assert split_clauses(whole, first_max_words=8) == [whole]


def test_primary_language() -> None:
    assert [primary_language(t) for t in ("en-GB", "DE", "pt_BR", "es-419")] == ["en", "de", "pt", "es"]


def wav_bytes(rate: int, channels: int = 1, frames: bytes = b"\1\0\2\0") -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames * channels)
    return buffer.getvalue()


def test_read_wav_header_skips_extra_chunks_and_stops_at_the_samples() -> None:
    plain = wav_bytes(16000)
    # Put a LIST chunk (odd size, padded) between fmt and data as some writers do.
    extra = b"LIST" + (3).to_bytes(4, "little") + b"abc\0"
    stream = io.BytesIO(plain[:36] + extra + plain[36:])
    assert read_wav_header(stream.read) == 16000
    assert stream.read() == b"\1\0\2\0"


def test_read_wav_header_rejects_what_is_not_pcm16_mono() -> None:
    with pytest.raises(ValueError, match="mono"):
        read_wav_header(io.BytesIO(wav_bytes(8000, channels=2)).read)
    with pytest.raises(ValueError, match="RIFF"):
        read_wav_header(io.BytesIO(b"ID3 not a wav at all").read)


def test_stream_wav_command_yields_samples_and_reports_failures() -> None:
    wav = wav_bytes(22050, frames=b"\7\0" * 1000)
    program = f"import sys; sys.stdout.buffer.write({wav!r})"
    chunks = list(stream_wav_command([sys.executable, "-c", program], "test"))
    assert b"".join(pcm for pcm, _ in chunks) == b"\7\0" * 1000
    assert {rate for _, rate in chunks} == {22050}

    with pytest.raises(FatalProviderError, match="no usable WAV.*boom"):
        list(stream_wav_command([sys.executable, "-c", "import sys; sys.exit('boom')"], "test"))


def test_require_binary_names_the_package_to_install() -> None:
    with pytest.raises(ConfigError, match="apt-get install some-package"):
        require_binary("no-such-binary-aybiza", "some-package")


@pytest.mark.anyio
async def test_an_engine_that_meters_itself_is_not_counted_twice() -> None:
    class MeteredSynthesizer(ScriptedSynthesizer):
        meters_usage = True  # like the audio cache: it counts only what it really synthesised

    tts = TTSProcessor(MeteredSynthesizer(chunks=1))
    async with running(tts) as (sink, ctx):
        await tts.process(AgentText("Hello there.", 1))
        await tts.process(AgentTurnDone(1))
        await sink.wait_for(lambda _: sink.has(AgentTurnDone, 1))
    assert sink.of(OutputAudio)
    assert ctx.ledger.usage().tts_chars == {}
