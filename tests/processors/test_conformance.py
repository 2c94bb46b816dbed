"""Every stage the product ships keeps the Processor contract (``aybiza.testing.kit.check_conformance``).

Frames a stage does not consume pass through unchanged and in order, control
frames it does not act on go further up, an ``Interruption`` is forwarded,
``stop()`` may be called twice and its declared frame types are frame types.
Each stage runs on the engines it ships with, minus the network: Deepgram and
Bedrock on the scripted clients, models that are never asked to load.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from aybiza.agents import FAQ, AgentConfig
from aybiza.edge.answers import AnswerPolicy
from aybiza.edge.archive import SQLiteArchive
from aybiza.edge.cache import MemoryCache
from aybiza.edge.calls import CallStore
from aybiza.edge.state_sqlite import SQLiteState
from aybiza.errors import EndReason
from aybiza.pipeline import IncidentKind, Processor
from aybiza.processors.cache import CachedAnswers
from aybiza.processors.endpoint import EndOfTurnStage
from aybiza.processors.fallback import FallbackStage, Replay
from aybiza.processors.journal import CallJournal
from aybiza.processors.language import LanguageProcessor, detector_for
from aybiza.processors.llm.bedrock import BedrockStreamer
from aybiza.processors.llm.faq import FAQMatcher, FAQResponder
from aybiza.processors.llm.openai_compat import OpenAICompatLLM
from aybiza.processors.llm.reply import ReplyProcessor
from aybiza.processors.quality import QualityProcessor
from aybiza.processors.stt.deepgram import DeepgramSTT
from aybiza.processors.stt.sphinx import SphinxPool, SphinxSTT
from aybiza.processors.stt.whisper import WhisperSTT
from aybiza.processors.tts.base import TTSProcessor
from aybiza.processors.tts.deepgram import DeepgramTTS
from aybiza.processors.turns import TurnTaker
from aybiza.processors.vad import VADProcessor
from aybiza.recording.call import RecordingOutput
from aybiza.recording.recorder import CallRecorder
from aybiza.testing.kit import check_conformance
from aybiza.testing.scripted import FrameClock, ScriptedBedrock, ScriptedDeepgram
from aybiza.testing.twilio_caller import TwilioCallerProtocol
from aybiza.transports.twilio import TwilioProtocol
from aybiza.transports.twilio_ws import TwilioOutput
from aybiza.transports.webrtc import WebRTCOutput
from aybiza.transports.webrtc_events import EventChannel
from aybiza.transports.webrtc_media import PacedAudioTrack

pytestmark = pytest.mark.anyio

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

AGENT = AgentConfig(
    id="dental", name="Dental", greeting="Hello.", system_prompt="Be brief.", fallback="Sorry?",
    faqs=(FAQ(id="hours", answer="Nine to five.", questions=("What are your opening hours?",)),),
)


class IdleRecognizer:
    """A whisper recogniser stand-in that is never asked to transcribe (no audio is pushed)."""

    loaded = True

    def load(self) -> None:
        return None

    def transcribe(self, pcm16: bytes, sample_rate: int, language: str = "en") -> str:
        raise AssertionError("no audio was pushed: nothing to transcribe")


class FlatEncoder:
    """A sentence encoder stand-in: every text is the same unit vector (no model to load)."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        vectors = np.zeros((len(texts), 4), dtype=np.float32)
        vectors[:, 0] = 1.0
        return vectors


class SilentVoice:
    """A local voice stand-in that is never asked to speak (no text is pushed)."""

    name = "silent"

    def synthesize(self, text: str, language: str) -> Iterator[tuple[bytes, int]]:
        raise AssertionError("no text was pushed: nothing to say")


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2, thread_name_prefix="test-conformance") as executor:
        yield executor


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    opened = await CallStore(SQLiteState(tmp_path / "live.db"), SQLiteArchive(tmp_path / "archive.db")).open()
    yield opened
    await opened.aclose()


def whisper() -> WhisperSTT:
    recognizer = IdleRecognizer()
    return WhisperSTT(lambda language: recognizer)  # type: ignore[arg-type, return-value]


def faq() -> FAQResponder:
    return FAQResponder(AGENT, FAQMatcher(AGENT, FlatEncoder()))


def deepgram_stt() -> DeepgramSTT:
    return DeepgramSTT(ScriptedDeepgram())


def deepgram_tts() -> DeepgramTTS:
    return DeepgramTTS(ScriptedDeepgram())


def phone_output() -> TwilioOutput:
    caller = TwilioCallerProtocol()
    protocol = TwilioProtocol()
    protocol.receive(caller.connected())
    protocol.receive(caller.start())
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    return TwilioOutput(protocol, send)


async def conforms(make: Callable[[], Processor | Awaitable[Processor]]) -> None:
    await check_conformance(make)


async def test_quality() -> None:
    await conforms(QualityProcessor)


async def test_vad() -> None:
    await conforms(VADProcessor)


async def test_end_of_turn() -> None:
    await conforms(lambda: EndOfTurnStage(lambda pcm, rate: 1.0, "balanced"))


async def test_whisper_stt() -> None:
    await conforms(whisper)


async def test_sphinx_stt() -> None:
    pool = SphinxPool(max_idle=1)
    await conforms(lambda: SphinxSTT(pool))


async def test_deepgram_stt_on_the_scripted_client() -> None:
    await conforms(deepgram_stt)


async def test_language() -> None:
    detector = detector_for(frozenset({"en", "de"}))
    await conforms(lambda: LanguageProcessor(detector, languages=("en", "de")))


async def test_turns() -> None:
    await conforms(TurnTaker)


async def test_faq_responder() -> None:
    await conforms(faq)


async def test_reply_processor_on_scripted_bedrock(pool: ThreadPoolExecutor) -> None:
    def make() -> ReplyProcessor:
        streamer = BedrockStreamer(region="eu-west-2", model_id="m", client=ScriptedBedrock(), pool=pool)
        return ReplyProcessor(streamer, system_prompt="Be brief.")

    await conforms(make)


async def test_openai_compatible_model() -> None:
    await conforms(lambda: OpenAICompatLLM(model="m", system_prompt="Be brief.", base_url="http://127.0.0.1:9/v1"))


async def test_cached_answers() -> None:
    cache = MemoryCache()
    await conforms(lambda: CachedAnswers(faq(), cache, AnswerPolicy(AGENT)))


async def test_call_journal(store: CallStore) -> None:
    await conforms(lambda: CallJournal(CachedAnswers(faq(), MemoryCache(), AnswerPolicy(AGENT)), store))


@needs_espeak
async def test_tts_with_espeak() -> None:
    from aybiza.processors.tts.espeak import EspeakSynthesizer

    voice = EspeakSynthesizer()
    await conforms(lambda: TTSProcessor(voice))


async def test_deepgram_tts_on_the_scripted_client() -> None:
    await conforms(deepgram_tts)


async def test_recogniser_with_its_fallback() -> None:
    await conforms(lambda: FallbackStage(deepgram_stt(), whisper, replay=Replay.UTTERANCE,
                                         incident=IncidentKind.STT_FALLBACK, unavailable=EndReason.STT_UNAVAILABLE))


async def test_voice_with_its_fallback() -> None:
    await conforms(lambda: FallbackStage(deepgram_tts(), lambda: TTSProcessor(SilentVoice()), replay=Replay.AGENT_TEXT,
                                         incident=IncidentKind.TTS_FALLBACK, unavailable=EndReason.TTS_UNAVAILABLE))


async def test_twilio_output() -> None:
    await conforms(phone_output)


async def test_webrtc_output() -> None:
    await conforms(lambda: WebRTCOutput(PacedAudioTrack(), EventChannel()))


async def test_the_benchmarks_frame_clock() -> None:
    await conforms(FrameClock)


async def test_a_recorded_twilio_output(tmp_path: Path) -> None:
    await conforms(lambda: RecordingOutput(phone_output(), CallRecorder(tmp_path / "call.wav")))
