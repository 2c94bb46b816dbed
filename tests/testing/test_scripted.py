"""Scripted STT/LLM/TTS keep the real stages' frame contracts; the scripted stack answers a caller."""

from __future__ import annotations

import math
from collections.abc import Callable

import anyio
import numpy as np
import pytest
from anyio.abc import TaskGroup

from aybiza.pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    EndOfCall,
    Frame,
    InputAudio,
    Interruption,
    OutputAudio,
    Pipeline,
    Processor,
    QualityReport,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserTurn,
)
from aybiza.processors.language import LanguageProcessor
from aybiza.processors.quality import QualityProcessor
from aybiza.processors.turns import TurnTaker
from aybiza.processors.vad import VADProcessor
from aybiza.testing.scripted import (
    CallStamps,
    FrameClock,
    LatencyHistogram,
    ScriptedLLM,
    ScriptedStack,
    ScriptedSTT,
    ScriptedTimings,
    ScriptedTTS,
)

FAST = ScriptedTimings(stt_final_ms=5, llm_first_token_ms=5, llm_next_sentence_ms=1, tts_first_byte_ms=5,
                       tts_speed=1000, transcripts=("first", "second"), reply=("One.", "Two more words."))


class Sink(Processor):
    """Collects what reaches the end of the pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)

    def of(self, kind: type) -> list[Frame]:
        return [f for f in self.frames if isinstance(f, kind)]


async def run(processors: list[Processor], feed: Callable[[Pipeline], object], *, settle: float = 0.3,
              ctx: CallContext | None = None) -> Sink:
    """Run ``processors -> sink``, push what ``feed`` pushes, wait ``settle`` s for workers, return the sink."""
    sink = Sink()

    async def drive(pipe: Pipeline, tg: TaskGroup) -> None:
        await feed(pipe)  # type: ignore[misc]
        await anyio.sleep(settle)

    await Pipeline([*processors, sink]).run(ctx or CallContext(call_id="test"), drive)
    return sink


def audio(at: float = 0.0) -> InputAudio:
    return InputAudio(b"\x01\x00" * 160, 8000, at, True)


@pytest.mark.anyio
async def test_stt_sends_a_final_transcript_per_utterance_after_speech_stops() -> None:
    stamps = CallStamps("test")
    stt = ScriptedSTT(FAST, stamps=stamps)

    async def feed(pipe: Pipeline) -> None:
        for text_turn in range(2):
            await pipe.push(SpeechStarted(at=1.0))
            for _ in range(10):
                await pipe.push(audio())
            await pipe.push(SpeechStopped(at=2.0 + text_turn))
            await anyio.sleep(0.05)

    sink = await run([stt], feed)
    transcripts = sink.of(Transcript)
    assert [(t.text, t.final, t.speech_ended_at) for t in transcripts] == [("first", True, 2.0), ("second", True, 3.0)]
    assert not sink.of(InputAudio), "the STT stage consumes caller audio"
    assert len(sink.of(SpeechStarted)) == 2 and len(sink.of(SpeechStopped)) == 2, "VAD events are forwarded"
    first = stamps.turns[0]
    assert first.stt_deadline - first.speech_stopped == pytest.approx(0.005, abs=1e-3)
    assert first.transcript is not None and first.transcript >= first.stt_deadline


@pytest.mark.anyio
async def test_stt_ignores_an_utterance_shorter_than_the_minimum() -> None:
    async def feed(pipe: Pipeline) -> None:
        await pipe.push(SpeechStarted(at=1.0))
        await pipe.push(audio())  # 20 ms < 100 ms
        await pipe.push(SpeechStopped(at=1.02))

    sink = await run([ScriptedSTT(FAST)], feed, settle=0.05)
    assert not sink.of(Transcript)


@pytest.mark.anyio
async def test_llm_speaks_the_scripted_reply_then_ends_the_turn() -> None:
    async def feed(pipe: Pipeline) -> None:
        await pipe.push(QualityReport(score=0.9, tier="high"))
        await pipe.push(UserTurn("hello", turn_id=3, language="de"))

    sink = await run([ScriptedLLM(FAST)], feed, settle=0.1)
    texts = sink.of(AgentText)
    assert [(t.text, t.turn_id, t.language) for t in texts] == [("One.", 3, "de"), ("Two more words.", 3, "de")]
    assert sink.frames[-1] == AgentTurnDone(3)
    assert sink.of(QualityReport), "frames it does not consume pass through"
    assert not sink.of(UserTurn)


@pytest.mark.anyio
async def test_llm_drops_the_answer_in_progress_on_barge_in() -> None:
    slow = ScriptedTimings(llm_first_token_ms=200)

    async def feed(pipe: Pipeline) -> None:
        await pipe.push(UserTurn("hello", turn_id=1))
        await anyio.sleep(0.02)
        await pipe.push(Interruption(at=0.0))

    sink = await run([ScriptedLLM(slow)], feed, settle=0.3)
    assert not sink.of(AgentText)
    assert sink.of(Interruption), "the interruption itself goes on downstream"


@pytest.mark.anyio
async def test_tts_speaks_each_text_as_audio_chunks_and_ends_the_turn_after_them() -> None:
    timings = ScriptedTimings(tts_first_byte_ms=5, tts_chunk_ms=100, tts_speed=1000, tts_sample_rate=16000,
                              tts_seconds_per_char=0.05)

    async def feed(pipe: Pipeline) -> None:
        await pipe.push(AgentText("Hello there.", turn_id=2))  # 12 chars * 50 ms = 0.6 s = 6 chunks
        await pipe.push(AgentTurnDone(2))

    sink = await run([ScriptedTTS(timings)], feed, settle=0.2)
    chunks = sink.of(OutputAudio)
    assert len(chunks) == 6
    assert {(c.turn_id, c.sample_rate) for c in chunks} == {(2, 16000)}
    assert sum(c.duration for c in chunks) == pytest.approx(0.6, abs=1e-6)
    assert sink.frames[-1] == AgentTurnDone(2), "AgentTurnDone follows the turn's audio"
    assert not sink.of(AgentText)


@pytest.mark.anyio
async def test_tts_stops_speaking_on_barge_in_and_forwards_the_interruption() -> None:
    timings = ScriptedTimings(tts_first_byte_ms=1, tts_chunk_ms=100, tts_speed=2)  # a chunk every 50 ms

    async def feed(pipe: Pipeline) -> None:
        await pipe.push(AgentText("A rather long sentence to speak.", turn_id=1))
        await pipe.push(AgentTurnDone(1))
        await anyio.sleep(0.08)
        await pipe.push(Interruption(at=0.0))

    sink = await run([ScriptedTTS(timings)], feed, settle=0.3)
    position = sink.frames.index(next(f for f in sink.frames if isinstance(f, Interruption)))
    assert 0 < len(sink.of(OutputAudio)) < math.ceil(32 * 0.06 / 0.1)
    assert not any(isinstance(f, OutputAudio | AgentTurnDone) for f in sink.frames[position:])


def test_histogram_percentiles_and_reset() -> None:
    histogram = LatencyHistogram(max_ms=100)
    assert histogram.summary()["p99_ms"] is None
    for ms in range(1, 101):
        histogram.add(ms / 1000)
    assert histogram.percentile(50) == pytest.approx(50.1, abs=0.11)
    assert histogram.percentile(99) == pytest.approx(99.1, abs=0.11)
    histogram.add(5.0)  # 5 s: the overflow bin keeps the real maximum
    assert histogram.percentile(100) == 5000.0
    assert histogram.summary()["count"] == 101
    histogram.reset()
    assert histogram.count == 0 and math.isnan(histogram.percentile(50))


@pytest.mark.anyio
async def test_frame_clock_measures_lateness_against_the_most_punctual_frame() -> None:
    now = [100.0]
    late: list[float] = []
    stamps = CallStamps("test")
    clock = FrameClock(stamps, late.append, clock=lambda: now[0])

    async def feed(pipe: Pipeline) -> None:
        for at in (100.0, 100.02, 100.04):  # on time
            now[0] = at
            await pipe.push(audio(at))
        now[0] = 100.11  # due at 100.06: 50 ms late
        await pipe.push(audio(now[0]))
        now[0] = 100.08  # due at 100.08, early relative to the late one: on time again
        await pipe.push(audio(now[0]))

    sink = await run([clock], feed, settle=0)
    assert late == pytest.approx([0.0, 0.0, 0.0, 0.05, 0.0], abs=1e-9)
    assert stamps.frames == 5 and stamps.last_frame_at == 100.08
    assert len(sink.of(InputAudio)) == 5


def voiced(seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 10))
    return 5000 * voice * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + rng.normal(0, 30, t.size)


def frames_of(samples: np.ndarray) -> list[bytes]:
    pcm = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    return [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]


def test_stack_builds_the_real_edge_chain_around_the_scripted_providers() -> None:
    stack = ScriptedStack(timings=FAST, record_turns=True)
    processors, opening = stack.build(CallContext(call_id="CA1"))
    assert [type(p) for p in processors] == [FrameClock, QualityProcessor, VADProcessor, ScriptedSTT,
                                             LanguageProcessor, TurnTaker, ScriptedLLM, ScriptedTTS]
    assert isinstance(opening[0], AgentText) and opening[0].turn_id == 0 and opening[1] == AgentTurnDone(0)
    assert stack.has_agent("default") and not stack.has_agent("other")
    assert stack.agent("default").id == "default"
    assert "CA1" in stack.calls
    _, resumed_opening = stack.build(CallContext(call_id="CA1"), history=[{"role": "user", "text": "hi"}],
                                     resumed=True)
    assert resumed_opening == [], "a call resumed from another process is not greeted again"


@pytest.mark.anyio
async def test_a_spoken_turn_is_answered_with_audio_and_every_stamp_recorded() -> None:
    stack = ScriptedStack(timings=FAST, record_turns=True, language=False)
    ctx = CallContext(call_id="CA2")
    processors, opening = stack.build(ctx)
    rng = np.random.default_rng(0)
    quiet = rng.normal(0, 30, 8000)  # 1 s of line noise
    call_audio = frames_of(np.concatenate([quiet, voiced(1.0, rng), quiet]))

    async def feed(pipe: Pipeline) -> None:
        for frame in opening:
            await pipe.push(frame)
        at = 0.0
        for pcm in call_audio:
            await pipe.push(InputAudio(pcm, 8000, at))
            at += 0.02
        await anyio.sleep(0.2)
        await pipe.push(EndOfCall("stopped"))

    sink = await run(processors, feed, settle=0, ctx=ctx)
    assert {f.turn_id for f in sink.of(OutputAudio)} == {0, 1}, "the greeting and the answer were spoken"
    assert stack.frames_in == len(call_audio) and stack.lateness.count == len(call_audio)
    (turn,) = stack.calls["CA2"].turns
    assert turn.complete and turn.turn_id == 1
    assert turn.speech_stopped <= turn.stt_deadline <= turn.transcript <= turn.user_turn  # type: ignore[operator]
    assert turn.user_turn <= turn.first_text <= turn.tts_in <= turn.first_audio  # type: ignore[operator]
    assert 1 <= turn.window_chunk <= len(call_audio)
    assert {"stt_final", "llm_first_token", "tts_first_byte"} <= {stage for stage, _ in ctx.timings}
