"""PiperSynthesizer with the packaged joe voice, alone and behind TTSProcessor with an espeak fallback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from aybiza.errors import ConfigError
from aybiza.pipeline.context import CallContext
from aybiza.pipeline.frames import AgentText, AgentTurnDone, Interruption, OutputAudio
from aybiza.pipeline.ledger import Stage
from aybiza.processors.tts.base import TTSProcessor
from aybiza.processors.tts.piper import PiperSynthesizer

from .helpers import RecordingSink, needs_espeak, rms

SENTENCE = "Hello, we are open from nine to five."


def spoken(chunks: Iterator[tuple[bytes, int]]) -> tuple[list[bytes], set[int]]:
    pcm, rates = [], set()
    for data, rate in chunks:
        pcm.append(data)
        rates.add(rate)
    return pcm, rates


def test_piper_speaks_a_sentence_clause_by_clause() -> None:
    piper = PiperSynthesizer()
    chunks, rates = spoken(piper.synthesize(SENTENCE, "en"))
    whole = b"".join(chunks)
    assert rates == {22050} and piper.sample_rate == 22050
    assert len(whole) / 2 / 22050 >= 1.0
    assert rms(whole) > 500  # speech, not silence
    assert len(chunks) == 2  # "Hello," then the rest: the first audio does not wait for the sentence
    assert len(chunks[0]) < len(whole)
    assert rms(chunks[0]) > 500


def test_length_scale_slows_the_voice_down() -> None:
    normal = b"".join(spoken(PiperSynthesizer().synthesize(SENTENCE, "en"))[0])
    slow = b"".join(spoken(PiperSynthesizer(length_scale=2.0).synthesize(SENTENCE, "en"))[0])
    assert len(slow) > 1.4 * len(normal)


def test_the_voice_is_loaded_once_and_the_process_engines_keep_one_synthesizer() -> None:
    from aybiza.config import Settings
    from aybiza.engines import Engines

    piper = PiperSynthesizer()
    piper.warm()
    assert piper.voice() is piper.voice()
    engines = Engines(Settings())
    assert engines.voice("piper") is engines.voice("piper") is engines.local_voice


def test_a_missing_voice_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs"):
        PiperSynthesizer(tmp_path / "nowhere.onnx")
    with pytest.raises(ConfigError, match="positive"):
        PiperSynthesizer(length_scale=0)


class ClosingRecorder:
    """Wraps an engine; counts the chunks it produced and records when each synthesis ended."""

    def __init__(self, engine: PiperSynthesizer) -> None:
        self.engine = engine
        self.name = engine.name
        self.produced = 0
        self.ended = threading.Event()

    def synthesize(self, text: str, language: str) -> Iterator[tuple[bytes, int]]:
        try:
            for chunk in self.engine.synthesize(text, language):
                self.produced += 1
                yield chunk
        finally:
            self.ended.set()


@needs_espeak
@pytest.mark.anyio
async def test_processor_speaks_english_with_piper_and_german_with_espeak() -> None:
    from aybiza.processors.tts.espeak import EspeakSynthesizer

    tts = TTSProcessor(PiperSynthesizer(), fallback=EspeakSynthesizer())
    sink = RecordingSink()
    tts.push = sink
    ctx = CallContext(call_id="piper")
    async with anyio.create_task_group() as tg:
        await tts.start(ctx, tg)
        await tts.process(AgentText(SENTENCE, 1))
        await tts.process(AgentText("Guten Tag, wie kann ich helfen?", 1, language="de"))
        await tts.process(AgentTurnDone(1))
        await sink.wait_for(lambda _: sink.has(AgentTurnDone))
        tg.cancel_scope.cancel()
    await tts.stop()

    audio = sink.of(OutputAudio)
    assert isinstance(sink.frames[-1], AgentTurnDone)
    assert all(f.turn_id == 1 and f.sample_rate == 22050 for f in audio)
    assert sum(f.duration for f in audio) > 2.5
    assert rms(b"".join(f.pcm for f in audio)) > 500
    assert [stage for stage, _, _ in ctx.ledger.samples] == [Stage.TTS_FIRST_BYTE]


@pytest.mark.anyio
async def test_barge_in_stops_piper_mid_answer() -> None:
    clauses = ", ".join(f"option {n} is available on weekdays" for n in range(1, 13)) + "."
    engine = ClosingRecorder(PiperSynthesizer())
    tts = TTSProcessor(engine)
    sink = RecordingSink()
    tts.push = sink
    async with anyio.create_task_group() as tg:
        await tts.start(CallContext(call_id="barge"), tg)
        await tts.process(AgentText(clauses, 1))
        await tts.process(AgentText("And one more thing.", 1))
        await sink.wait_for(lambda _: sink.has(OutputAudio))
        await tts.process(Interruption(at=0.0))
        # The engine thread sees the barge-in at its next clause and closes piper.
        assert await anyio.to_thread.run_sync(engine.ended.wait, 30)
        await anyio.sleep(0.05)  # a chunk it handed back would have reached the sink by now
        tg.cancel_scope.cancel()
    await tts.stop()

    cut = next(i for i, f in enumerate(sink.frames) if isinstance(f, Interruption))
    assert not any(isinstance(f, OutputAudio) for f in sink.frames[cut:])
    assert engine.produced < 12  # it stopped early instead of speaking every clause
