"""SphinxRecognizer / SphinxSTT: partial transcripts while the caller speaks, a final one at stop."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from aybiza.pipeline.context import CallContext
from aybiza.pipeline.frames import Frame, InputAudio, Interruption, SpeechStarted, SpeechStopped, Transcript
from aybiza.pipeline.ledger import Stage
from aybiza.processors.stt.sphinx import SphinxPool, SphinxRecognizer, SphinxSTT

from .helpers import RATE, needs_espeak, run_stage, telephone_speech, utterance

pytestmark = needs_espeak

SENTENCE = "what are your opening hours"


@pytest.fixture(scope="module")
def pool() -> Iterator[SphinxPool]:
    """One decoder pool for this module's calls (building a decoder takes ~0.3 s and ~90 MB)."""
    yield SphinxPool(max_idle=1)


def finals(frames: list[Frame]) -> list[Transcript]:
    return [f for f in frames if isinstance(f, Transcript) and f.final]


def test_sphinx_recognises_telephone_band_speech() -> None:
    text = SphinxRecognizer().transcribe(telephone_speech(SENTENCE), RATE)
    assert "what" in text.split(), text


@pytest.mark.anyio
async def test_partials_while_speaking_then_a_final_at_speech_stop(pool: SphinxPool) -> None:
    speech = telephone_speech(SENTENCE)
    frames = utterance(speech) + [Interruption(time.monotonic())] + utterance(speech)
    stops = [f for f in frames if isinstance(f, SpeechStopped)]
    ctx = CallContext(call_id="sphinx-e2e", language="en-US")

    out, ctx = await run_stage(SphinxSTT(pool), frames, lambda got, _: len(finals(got)) == 2, ctx)

    assert not any(isinstance(f, InputAudio) for f in out)
    assert [type(f) for f in out if not isinstance(f, Transcript)] == [
        SpeechStarted,
        SpeechStopped,
        Interruption,
        SpeechStarted,
        SpeechStopped,
    ]
    first_final = out.index(finals(out)[0])
    partials = [f for f in out[:first_final] if isinstance(f, Transcript)]
    assert partials and all(not p.final for p in partials)
    assert all(p.language == "en-US" for p in partials)
    first, second = finals(out)
    assert "what" in first.text.split(), first.text
    assert "what" in second.text.split(), second.text
    assert [t.speech_ended_at for t in (first, second)] == [s.at for s in stops]
    assert ctx.ledger.usage().stt_seconds == {"sphinx": pytest.approx(2 * (0.1 + len(speech) / (2 * RATE)), abs=1e-3)}
    assert [stage for stage, _, _ in ctx.ledger.samples] == [Stage.STT_FINAL, Stage.STT_FINAL]
    assert pool.idle == 1  # the decoder went back to the pool


@pytest.mark.anyio
async def test_partials_are_throttled(pool: SphinxPool) -> None:
    frames = utterance(telephone_speech(SENTENCE))
    stage = SphinxSTT(pool, partial_interval=60.0)

    out, _ = await run_stage(stage, frames, lambda got, _: bool(finals(got)))

    partials = [f for f in out if isinstance(f, Transcript) and not f.final]
    assert len(partials) == 1
    assert out.index(partials[0]) < out.index(finals(out)[0])


@pytest.mark.anyio
async def test_a_long_utterance_is_finalised_at_the_cap(pool: SphinxPool) -> None:
    speech = telephone_speech(SENTENCE)
    frames = utterance(speech + speech, pre_roll=0.0)
    stage = SphinxSTT(pool, max_utterance_seconds=len(speech) / (2 * RATE))

    out, ctx = await run_stage(stage, frames, lambda got, _: len(finals(got)) == 2)

    assert [t.speech_ended_at is None for t in finals(out)] == [True, False]
    assert ctx.ledger.usage().stt_seconds == {"sphinx": pytest.approx(2 * len(speech) / (2 * RATE), abs=1e-3)}
