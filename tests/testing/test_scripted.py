"""Scripted providers at the SDK seams: our real stages on them keep the scripted timings exactly.

``ScriptedDeepgram`` stands in for the Deepgram client under ``DeepgramSTT`` and
``DeepgramTTS``, ``ScriptedBedrock`` for the ``bedrock-runtime`` client under
``BedrockStreamer``; ``scripted_engines`` plugs them into a process's engines so
the production stack runs unchanged on them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import numpy as np
import numpy.typing as npt
import pytest
from anyio.abc import TaskGroup

from aybiza.codecs import lin2ulaw
from aybiza.pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    EndOfCall,
    InputAudio,
    Interruption,
    OutputAudio,
    Pipeline,
    Processor,
    QualityReport,
    SpeechStarted,
    SpeechStopped,
    Stage,
    Transcript,
    UserTurn,
)
from aybiza.pipeline.ledger import TokenUse
from aybiza.processors.fallback import FallbackStage
from aybiza.processors.language import LanguageProcessor
from aybiza.processors.llm.bedrock import BedrockStreamer
from aybiza.processors.llm.reply import ReplyProcessor
from aybiza.processors.llm.sentences import (
    ChatMessage,
    ReplyRequest,
    ReplyUsage,
    TextDelta,
)
from aybiza.processors.preempt import PreemptiveReplies
from aybiza.processors.quality import QualityProcessor
from aybiza.processors.stt.deepgram import DeepgramSTT
from aybiza.processors.tts.deepgram import DeepgramTTS
from aybiza.processors.turns import TurnTaker
from aybiza.processors.vad import VADProcessor
from aybiza.processors.watchdog import TurnWatchdog
from aybiza.routing.service import RoutingService
from aybiza.stack import SpeechStack
from aybiza.testing.kit import FrameRecorder
from aybiza.testing.scripted import (
    FrameClock,
    LatencyHistogram,
    ScriptedBedrock,
    ScriptedDeepgram,
    ScriptedTimings,
    bench_agent,
    scripted_engines,
    scripted_settings,
)

FAST = ScriptedTimings(stt_final_ms=5, llm_first_token_ms=5, llm_next_sentence_ms=1, tts_first_byte_ms=5,
                       tts_speed=1000, transcripts=("first", "second"), reply=("One.", "Two more words."))

# Scheduling noise allowed on top of a scripted delay (two cores shared with other tests).
SLACK_S = 0.1

Feed = Callable[[Pipeline, FrameRecorder], Awaitable[None]]


async def run(processors: Sequence[Processor], feed: Feed, ctx: CallContext | None = None) -> FrameRecorder:
    """Run ``processors -> recorder`` for one call while ``feed`` drives it."""
    recorder = FrameRecorder()

    async def drive(pipe: Pipeline, tg: TaskGroup) -> None:
        await feed(pipe, recorder)

    await Pipeline([*processors, recorder]).run(ctx or CallContext(call_id="scripted"), drive)
    return recorder


def tone(seconds: float, rate: int = 16000) -> list[bytes]:
    """20 ms PCM16 frames of a tone."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * math.pi * 220 * t) * 6000).astype("<i2").tobytes()
    step = rate // 50 * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4, thread_name_prefix="test-scripted") as executor:
        yield executor


# -- Deepgram listen -------------------------------------------------------------------


@pytest.mark.anyio
async def test_deepgram_stt_on_the_scripted_client_gives_the_final_stt_final_ms_after_speech_stops() -> None:
    timings = ScriptedTimings(stt_final_ms=150, transcripts=("first", "second"))
    stt = DeepgramSTT(ScriptedDeepgram(timings))
    ctx = CallContext(call_id="stt")
    stopped: list[float] = []

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        for utterance in range(2):
            await pipe.push(SpeechStarted(at=time.monotonic()))
            for pcm in tone(0.3):
                await pipe.push(InputAudio(pcm, 16000, time.monotonic(), voiced=True))
            stopped.append(time.monotonic())
            await pipe.push(SpeechStopped(at=stopped[-1]))
            await recorder.wait_for(Transcript, utterance + 1)

    recorder = await run([stt], feed, ctx)
    finals = recorder.of(Transcript)
    assert [(t.text, t.final, t.speech_ended_at) for t in finals] == [
        ("first", True, stopped[0]), ("second", True, stopped[1])]
    for transcript, stop in zip(finals, stopped, strict=True):
        arrived = recorder.times[recorder.frames.index(transcript)]
        assert 0.15 <= arrived - stop <= 0.15 + SLACK_S
    samples = [seconds for stage, seconds, _ in ctx.ledger.samples if stage is Stage.STT_FINAL]
    assert len(samples) == 2 and all(0.15 <= s <= 0.15 + SLACK_S for s in samples)
    assert not recorder.of(InputAudio), "the recogniser consumes the caller's audio"
    assert ctx.ledger.usage().stt_seconds == {"nova-3": pytest.approx(0.6)}


@pytest.mark.anyio
async def test_the_scripted_listen_socket_is_opened_with_our_parameters() -> None:
    client = ScriptedDeepgram(FAST)
    stt = DeepgramSTT(client, encoding="mulaw")

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        for pcm in tone(0.2, 8000):
            await pipe.push(InputAudio(pcm, 8000, time.monotonic(), voiced=True, ulaw=lin2ulaw(pcm)))
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await recorder.wait_for(Transcript)

    recorder = await run([stt], feed)
    assert [t.text for t in recorder.of(Transcript)] == ["first"]
    assert client.connections == 1 and stt.connections == 1


@pytest.mark.anyio
async def test_with_endpointing_the_scripted_recogniser_finalises_on_its_own_after_the_speech_ends() -> None:
    timings = ScriptedTimings(stt_final_ms=150, stt_endpointing=True, transcripts=("what time do you open",))
    stt = DeepgramSTT(ScriptedDeepgram(timings), encoding="mulaw")
    ended: list[float] = []

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        for pcm in tone(0.3, 8000):
            await pipe.push(InputAudio(pcm, 8000, time.monotonic(), voiced=True, ulaw=lin2ulaw(pcm)))
            await anyio.sleep(0.002)
        ended.append(time.monotonic())
        for _ in range(15):  # silence, and no SpeechStopped (our end of turn is still waiting)
            await pipe.push(InputAudio(b"\x00" * 320, 8000, time.monotonic(), voiced=False, ulaw=b"\xff" * 160))
            await anyio.sleep(0.02)
        await recorder.wait_for(Transcript)
        await pipe.push(SpeechStopped(at=time.monotonic()))  # our Finalize: no words left, no second transcript
        await anyio.sleep(0.3)

    recorder = await run([stt], feed)
    finals = recorder.of(Transcript)
    assert [(t.text, t.final) for t in finals] == [("what time do you open", True)]
    arrived = recorder.times[recorder.frames.index(finals[0])]
    assert 0.145 <= arrived - ended[0] <= 0.15 + 0.02 + SLACK_S  # from the last voiced frame, a sleep before


@pytest.mark.anyio
async def test_with_interims_the_scripted_recogniser_sends_the_words_so_far_then_the_phrase_before_its_final(
) -> None:
    timings = ScriptedTimings(stt_final_ms=150, stt_endpointing=True, stt_interim_ms=50, stt_interim_every_ms=200,
                              transcripts=("what time do you open",))
    stt = DeepgramSTT(ScriptedDeepgram(timings), encoding="mulaw")
    ended: list[float] = []

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        for pcm in tone(0.5, 8000):
            await pipe.push(InputAudio(pcm, 8000, time.monotonic(), voiced=True, ulaw=lin2ulaw(pcm)))
            await anyio.sleep(0.002)
        ended.append(time.monotonic())
        for _ in range(15):
            await pipe.push(InputAudio(b"\x00" * 320, 8000, time.monotonic(), voiced=False, ulaw=b"\xff" * 160))
            await anyio.sleep(0.02)
        await anyio.sleep(0.1)

    recorder = await run([stt], feed)
    heard = [(t.text, t.final) for t in recorder.of(Transcript)]
    assert heard == [("what", False), ("what time", False), ("what time do you open", False),
                     ("what time do you open", True)]  # two in-speech interims (every 200 ms of 500 ms)
    phrase, final = recorder.of(Transcript)[2:]
    at = [recorder.times[recorder.frames.index(t)] - ended[0] for t in (phrase, final)]
    assert 0.045 <= at[0] <= 0.05 + 0.02 + SLACK_S  # the phrase's interim 50 ms after the speech
    assert 0.145 <= at[1] <= 0.15 + 0.02 + SLACK_S  # the final on its usual time


# -- Bedrock ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_bedrock_streamer_on_the_scripted_client_gives_the_first_token_after_llm_first_token_ms(
    pool: ThreadPoolExecutor,
) -> None:
    timings = ScriptedTimings(llm_first_token_ms=200, llm_next_sentence_ms=50, input_tokens=30, output_tokens=9,
                              reply=("We open at nine.", "Anything else?"))
    client = ScriptedBedrock(timings)
    streamer = BedrockStreamer(region="eu-west-2", model_id="eu.anthropic.claude-haiku-4-5", client=client,
                               pool=pool)
    began = time.monotonic()
    arrivals: list[tuple[float, object]] = []
    async for event in streamer.stream_reply(ReplyRequest("Be brief.", (ChatMessage("user", "Hours?"),))):
        arrivals.append((time.monotonic() - began, event))

    texts = [(at, event.text) for at, event in arrivals if isinstance(event, TextDelta)]
    assert [text for _, text in texts] == ["We open at nine. ", "Anything else? "]
    (first_at, _), (second_at, _) = texts
    assert 0.2 <= first_at <= 0.2 + SLACK_S
    # The second sentence is produced 50 ms after the first; a loop late for the first takes them closer together,
    # as it would off a socket (the reader does not wait for the loop).
    assert 0.25 <= second_at <= first_at + 0.05 + SLACK_S
    [usage] = [event for _, event in arrivals if isinstance(event, ReplyUsage)]
    assert usage == ReplyUsage("eu.anthropic.claude-haiku-4-5", 30, 9, 200.0)
    [request] = client.requests
    assert request["modelId"] == "eu.anthropic.claude-haiku-4-5"
    assert request["messages"] == [{"role": "user", "content": [{"text": "Hours?"}]}]


@pytest.mark.anyio
async def test_the_reply_processor_on_scripted_bedrock_speaks_the_reply_then_ends_the_turn(
    pool: ThreadPoolExecutor,
) -> None:
    streamer = BedrockStreamer(region="eu-west-2", model_id="m", client=ScriptedBedrock(FAST), pool=pool)
    ctx = CallContext(call_id="llm")

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(QualityReport(score=0.9, tier="high"))
        await pipe.push(UserTurn("hello", turn_id=3, language="de"))
        await recorder.wait_for(AgentTurnDone)

    recorder = await run([ReplyProcessor(streamer, system_prompt="Be brief.")], feed, ctx)
    texts = recorder.of(AgentText)
    assert [(t.text, t.turn_id, t.language) for t in texts] == [("One.", 3, "de"), ("Two more words.", 3, "de")]
    assert recorder.frames[-1] == AgentTurnDone(3)
    assert recorder.of(QualityReport), "frames it does not consume pass through"
    assert ctx.ledger.usage().tokens == {"m": TokenUse(input=FAST.input_tokens, output=FAST.output_tokens)}


@pytest.mark.anyio
async def test_the_reply_in_progress_on_scripted_bedrock_is_dropped_on_barge_in(pool: ThreadPoolExecutor) -> None:
    slow = ScriptedTimings(llm_first_token_ms=200)
    streamer = BedrockStreamer(region="eu-west-2", model_id="m", client=ScriptedBedrock(slow), pool=pool)

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(UserTurn("hello", turn_id=1))
        await anyio.sleep(0.02)
        await pipe.push(Interruption(at=0.0))
        await anyio.sleep(0.4)

    recorder = await run([ReplyProcessor(streamer, system_prompt="Be brief.")], feed)
    assert not recorder.of(AgentText) and not recorder.of(AgentTurnDone)
    assert recorder.of(Interruption), "the interruption itself goes on downstream"


# -- Deepgram speak -------------------------------------------------------------------


@pytest.mark.anyio
async def test_deepgram_tts_on_the_scripted_client_gives_first_audio_after_tts_first_byte_ms() -> None:
    timings = ScriptedTimings(tts_first_byte_ms=100, tts_chunk_ms=100, tts_speed=1000, tts_seconds_per_char=0.05)
    ctx = CallContext(call_id="tts")
    sent: list[float] = []

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        sent.append(time.monotonic())
        await pipe.push(AgentText("Hello there.", turn_id=2))  # 12 chars * 50 ms = 0.6 s = 6 chunks
        await pipe.push(AgentTurnDone(2))
        await recorder.wait_for(AgentTurnDone)

    recorder = await run([DeepgramTTS(ScriptedDeepgram(timings))], feed, ctx)
    chunks = recorder.of(OutputAudio)
    assert len(chunks) == 6
    assert {(c.turn_id, c.sample_rate) for c in chunks} == {(2, 24000)}
    assert sum(c.duration for c in chunks) == pytest.approx(0.6, abs=1e-6)
    first_audio = recorder.times[recorder.frames.index(chunks[0])]
    assert 0.1 <= first_audio - sent[0] <= 0.1 + SLACK_S
    [(stage, seconds, _)] = ctx.ledger.samples
    assert stage is Stage.TTS_FIRST_BYTE and 0.1 <= seconds <= 0.1 + SLACK_S
    assert recorder.frames[-1] == AgentTurnDone(2), "AgentTurnDone follows the turn's audio"
    assert ctx.ledger.usage().tts_chars == {"aura-2": len("Hello there.")}


@pytest.mark.anyio
async def test_phone_audio_from_the_scripted_voice_is_ulaw_at_8khz() -> None:
    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(AgentText("Hi.", turn_id=1))
        await pipe.push(AgentTurnDone(1))
        await recorder.wait_for(AgentTurnDone)

    recorder = await run([DeepgramTTS(ScriptedDeepgram(FAST), encoding="mulaw")], feed)
    chunks = recorder.of(OutputAudio)
    assert chunks and all(c.pcm == b"" and c.ulaw and c.sample_rate == 8000 for c in chunks)


@pytest.mark.anyio
async def test_the_scripted_voice_stops_on_barge_in() -> None:
    timings = ScriptedTimings(tts_first_byte_ms=1, tts_chunk_ms=100, tts_speed=2)  # a chunk every 50 ms

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(AgentText("A rather long sentence to speak.", turn_id=1))
        await pipe.push(AgentTurnDone(1))
        await recorder.wait_for(OutputAudio)
        await pipe.push(Interruption(at=0.0))
        await anyio.sleep(0.3)

    recorder = await run([DeepgramTTS(ScriptedDeepgram(timings))], feed)
    position = recorder.frames.index(recorder.of(Interruption)[0])
    assert 0 < len(recorder.of(OutputAudio)) < math.ceil(32 * 0.06 / 0.1)
    assert not any(isinstance(f, OutputAudio | AgentTurnDone) for f in recorder.frames[position:])


# -- the instruments ---------------------------------------------------------------------


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
    frames: list[float] = []
    clock = FrameClock(late.append, lambda: frames.append(now[0]), clock=lambda: now[0])

    def audio(at: float) -> InputAudio:
        return InputAudio(b"\x01\x00" * 160, 8000, at, True)

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        for at in (100.0, 100.02, 100.04):  # on time
            now[0] = at
            await pipe.push(audio(at))
        now[0] = 100.11  # due at 100.06: 50 ms late
        await pipe.push(audio(now[0]))
        now[0] = 100.08  # due at 100.08, early relative to the late one: on time again
        await pipe.push(audio(now[0]))
        await pipe.push(EndOfCall("hangup"))  # not audio: not counted

    recorder = await run([clock], feed)
    assert late == pytest.approx([0.0, 0.0, 0.0, 0.05, 0.0], abs=1e-9)
    assert frames == [100.0, 100.02, 100.04, 100.11, 100.08]
    assert len(recorder.of(InputAudio)) == 5 and recorder.of(EndOfCall)


# -- the production stack on scripted providers ---------------------------------------------


def test_scripted_engines_hand_out_the_scripted_clients() -> None:
    engines = scripted_engines(scripted_settings(), FAST)
    engines.check()  # no keys and no network needed
    assert isinstance(engines.deepgram(), ScriptedDeepgram)
    bedrock = engines.bedrock("eu-west-2")
    assert isinstance(bedrock, ScriptedBedrock) and engines.bedrock("us-east-1") is bedrock
    assert bedrock.timings is FAST


def voiced(seconds: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    t = np.arange(int(seconds * 8000)) / 8000
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 10))
    return np.asarray(5000 * voice * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + rng.normal(0, 30, t.size))


def frames_of(samples: npt.NDArray[np.float64]) -> list[bytes]:
    pcm = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    return [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]


@pytest.mark.anyio
async def test_the_production_stack_on_scripted_providers_answers_a_spoken_turn(tmp_path: Path) -> None:
    settings = scripted_settings(data_dir=tmp_path)
    engines = scripted_engines(settings, FAST)
    routing = RoutingService.from_settings(settings)
    stack = SpeechStack(settings, engines, routing=routing)
    ctx = CallContext(call_id="CAscripted", caller="+447700900123", transport="twilio")
    call_routing = routing.call_routing(ctx.caller)
    chosen = call_routing.next_turn(routing.snapshot())
    ctx.region, ctx.fallback_regions = chosen.region, chosen.fallbacks
    processors, opening = stack.build(ctx, bench_agent(), call_routing=call_routing)
    assert [type(p) for p in processors] == [QualityProcessor, VADProcessor, FallbackStage, LanguageProcessor,
                                             TurnTaker, TurnWatchdog, PreemptiveReplies, FallbackStage]
    assert isinstance(processors[6], PreemptiveReplies) and isinstance(processors[6].inner, ReplyProcessor)
    stt, tts = processors[2], processors[-1]
    assert isinstance(stt, FallbackStage) and isinstance(stt.primary, DeepgramSTT)
    assert isinstance(tts, FallbackStage) and isinstance(tts.primary, DeepgramTTS)

    rng = np.random.default_rng(0)
    quiet = rng.normal(0, 30, 8000)  # 1 s of line noise
    call_audio = frames_of(np.concatenate([quiet, voiced(1.0, rng), quiet]))

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        for frame in opening:
            await pipe.push(frame)
        for pcm in call_audio:
            await pipe.push(InputAudio(pcm, 8000, time.monotonic(), ulaw=lin2ulaw(pcm)))
            await anyio.sleep(0.002)
        await recorder.wait_for(AgentTurnDone, 2, timeout_s=10)

    recorder = await run(processors, feed, ctx)
    assert {f.turn_id for f in recorder.of(OutputAudio)} == {0, 1}, "the greeting and the answer were spoken"
    assert all(f.ulaw and not f.pcm for f in recorder.of(OutputAudio)), "phone audio stays μ-law end to end"
    [request] = engines.bedrock(ctx.region).requests
    assert request["messages"][-1] == {"role": "user", "content": [{"text": "first"}]}, "the scripted transcript"
    assert not stt.switched and not tts.switched
    stages = {stage for stage, _, turn in ctx.ledger.samples if turn == 1}
    assert {Stage.STT_FINAL, Stage.LLM_FIRST_TOKEN, Stage.LLM_FIRST_SENTENCE, Stage.TTS_FIRST_BYTE} <= stages
    usage = ctx.ledger.usage()
    assert usage.answered_by in usage.tokens, "the routed model answered and its tokens were counted"
