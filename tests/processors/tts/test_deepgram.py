"""Deepgram Aura TTS through the real deepgram-sdk against the fake Deepgram server."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from aybiza.errors import CredentialsError, OverloadedError
from aybiza.pipeline import (
    DTMF,
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    Interruption,
    LanguageChanged,
    OutputAudio,
    Pipeline,
    Processor,
    Stage,
)
from aybiza.processors.stt.deepgram import deepgram_client
from aybiza.processors.tts.deepgram import DeepgramTTS
from aybiza.testing import FakeDeepgram, wait_until
from aybiza.testing.fake_deepgram import tone


class Sink(Processor):
    """The end of the test pipeline: keeps every frame."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)

    def audio(self, turn_id: int | None = None) -> list[OutputAudio]:
        return [f for f in self.frames if isinstance(f, OutputAudio) and turn_id in (None, f.turn_id)]

    def done(self) -> list[int]:
        return [f.turn_id for f in self.frames if isinstance(f, AgentTurnDone)]


def speaking(url: str, api_key: str = "test-key", **options: Any) -> DeepgramTTS:
    """A DeepgramTTS on a client of its own for ``url`` (the process's engines share one in production)."""
    return DeepgramTTS(deepgram_client(api_key, url), **options)


@pytest.mark.anyio
async def test_sentences_are_spoken_then_the_turn_is_done_after_one_flush() -> None:
    texts = ["Hello there.", "How can I help you today?"]
    async with FakeDeepgram(seconds_per_char=0.01) as dg:
        tts = speaking(dg.url)
        sink = Sink()
        ctx = CallContext(call_id="tts")

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            for text in texts:
                await p.push(AgentText(text, 1))
            await p.push(AgentTurnDone(1))
            await wait_until(lambda: sink.done() == [1])

        await Pipeline([tts, sink]).run(ctx, feed)

    session = dg.speaks[0]
    assert session.types() == ["Speak", "Speak", "Flush"]
    assert session.texts == texts
    assert (session.query["model"], session.query["encoding"], session.query["sample_rate"]) == (
        "aura-2-thalia-en",
        "linear16",
        "24000",
    )
    audio = sink.audio()
    assert audio and all(a.turn_id == 1 and a.sample_rate == 24000 for a in audio)
    assert isinstance(sink.frames[-1], AgentTurnDone), "the turn is done after all of its audio"
    assert b"".join(a.pcm for a in audio) == b"".join(tone(len(t) * 0.01, 24000) for t in texts)
    assert ctx.ledger.usage().tts_chars == {"aura-2": sum(len(t) for t in texts)}
    assert [stage for stage, _, _ in ctx.ledger.samples] == [Stage.TTS_FIRST_BYTE]


@pytest.mark.anyio
async def test_mulaw_for_twilio_is_requested_and_passed_on_as_ulaw_at_8khz() -> None:
    async with FakeDeepgram() as dg:
        tts = speaking(dg.url, encoding="mulaw")
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(AgentText("One moment please.", 4))
            await p.push(AgentTurnDone(4))
            await wait_until(lambda: sink.done() == [4])

        await Pipeline([tts, sink]).run(CallContext(call_id="tts"), feed)

    query = dg.speaks[0].query
    assert (query["encoding"], query["sample_rate"]) == ("mulaw", "8000")
    audio = sink.audio()
    assert {a.sample_rate for a in audio} == {8000}
    assert all(a.pcm == b"" for a in audio), "no decode: the phone output sends the μ-law as is"
    assert b"".join(a.ulaw or b"" for a in audio) == tone(len("One moment please.") * 0.01, 8000, "mulaw")
    assert sum(a.duration for a in audio) == pytest.approx(len("One moment please.") * 0.01, abs=0.001)


@pytest.mark.anyio
async def test_barge_in_clears_and_no_stale_audio_follows_the_interruption() -> None:
    # Slow synthesis so the caller interrupts while the reply is still streaming; the Clear takes
    # effect 60 ms late, so stale audio is still arriving when the next reply starts.
    async with FakeDeepgram(
        seconds_per_char=0.05, chunk_s=0.05, chunk_delay_s=0.01, clear_delay_s=0.06
    ) as dg:
        tts = speaking(dg.url)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(AgentText("This is a rather long answer that the caller will not wait for.", 1))
            await p.push(AgentTurnDone(1))
            await wait_until(lambda: len(sink.audio(1)) >= 2)
            await p.push(Interruption(at=time.monotonic()))
            # The next reply starts before Deepgram has confirmed the Clear.
            await p.push(AgentText("Sure, go ahead.", 2))
            await p.push(AgentTurnDone(2))
            await wait_until(lambda: sink.done() == [2])

        await Pipeline([tts, sink]).run(CallContext(call_id="tts"), feed)

    assert dg.speaks[0].types() == ["Speak", "Flush", "Clear", "Speak", "Flush"]
    cut = next(i for i, f in enumerate(sink.frames) if isinstance(f, Interruption))
    after = sink.frames[cut + 1 :]
    assert not [f for f in after if isinstance(f, OutputAudio) and f.turn_id == 1], "no stale audio"
    assert sink.done() == [2], "the interrupted turn is not reported done"
    assert sum(len(a.pcm) for a in sink.audio(2)) == len(tone(len("Sure, go ahead.") * 0.05, 24000))


@pytest.mark.anyio
async def test_a_turn_with_nothing_to_say_completes_without_a_flush() -> None:
    async with FakeDeepgram() as dg:
        tts = speaking(dg.url)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(AgentText("   ", 7))
            await p.push(AgentTurnDone(7))
            await p.push(DTMF("9"))
            await wait_until(lambda: sink.done() == [7])

        await Pipeline([tts, sink]).run(CallContext(call_id="tts"), feed)

    await wait_until(lambda: bool(dg.speaks))
    assert dg.speaks[0].types() == []
    assert sorted(type(f).__name__ for f in sink.frames) == ["AgentTurnDone", "DTMF"]


@pytest.mark.anyio
async def test_a_dropped_socket_ends_the_cut_turn_and_the_next_turn_is_spoken() -> None:
    async with FakeDeepgram(
        seconds_per_char=0.05, chunk_s=0.05, chunk_delay_s=0.005, speak_drop_after_s=0.3
    ) as dg:
        tts = speaking(dg.url, backoff_s=(0.01, 0.05))
        sink = Sink()
        ctx = CallContext(call_id="tts")

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(AgentText("A long answer that will be cut off by a network failure.", 1))
            await p.push(AgentTurnDone(1))
            await wait_until(lambda: sink.done() == [1])
            await p.push(AgentText("Still here.", 2))
            await p.push(AgentTurnDone(2))
            await wait_until(lambda: sink.done() == [1, 2])

        await Pipeline([tts, sink]).run(ctx, feed)

    assert len(dg.speaks) == 2 and dg.speaks[0].dropped
    assert dg.speaks[1].types() == ["Speak", "Flush"], "the cut turn is not spoken again"
    assert sum(len(a.pcm) for a in sink.audio(2)) == len(tone(len("Still here.") * 0.05, 24000))
    assert tts.connections == 2


@pytest.mark.anyio
async def test_a_language_with_its_own_voice_reconnects_with_that_voice_between_turns() -> None:
    async with FakeDeepgram() as dg:
        tts = speaking(dg.url, voices={"es": "aura-2-celeste-es"})
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(AgentText("Hello.", 1))
            await p.push(AgentTurnDone(1))
            await wait_until(lambda: sink.done() == [1])
            await p.push(LanguageChanged("es-MX"))
            await wait_until(lambda: len(dg.speaks) == 2)
            await p.push(AgentText("Hola.", 2))
            await p.push(AgentTurnDone(2))
            await wait_until(lambda: sink.done() == [1, 2])

        await Pipeline([tts, sink]).run(CallContext(call_id="voices"), feed)

    assert [s.query["model"] for s in dg.speaks] == ["aura-2-thalia-en", "aura-2-celeste-es"]
    assert (dg.speaks[0].texts, dg.speaks[1].texts) == (["Hello."], ["Hola."])
    assert any(isinstance(f, LanguageChanged) for f in sink.frames), "the language goes on downstream"


@pytest.mark.anyio
async def test_a_speak_outage_fails_the_stage_within_the_outage_limit() -> None:
    async with FakeDeepgram(speak_status=503) as dg:
        tts = speaking(dg.url, outage_limit_s=0.8, backoff_s=(0.01, 0.1))
        began = time.monotonic()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(AgentText("Hello.", 1))
            await anyio.sleep(10)

        with pytest.raises(ExceptionGroup) as caught:
            await Pipeline([tts, Sink()]).run(CallContext(call_id="outage"), feed)
    elapsed = time.monotonic() - began
    assert caught.group_contains(OverloadedError)
    assert 0.7 <= elapsed <= 0.8 + 0.5, f"failed after {elapsed:.2f} s"


@pytest.mark.anyio
async def test_a_refused_key_fails_the_stage_at_once_with_a_credentials_error() -> None:
    async with FakeDeepgram() as dg:
        tts = speaking(dg.url, api_key="wrong-key")
        began = time.monotonic()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await anyio.sleep(10)

        with pytest.raises(ExceptionGroup) as caught:
            await Pipeline([tts, Sink()]).run(CallContext(call_id="refused"), feed)
    assert caught.group_contains(CredentialsError)
    assert time.monotonic() - began < 0.5
    assert dg.rejected == 1
