"""WhisperSTT off the end of turn's path: transcription starts once the VAD has heard the caller quiet for
``early_s`` (voice after the pause discards that run), and a first utterance's audio language ID runs beside
its recognition, not before it."""

from __future__ import annotations

import time

import anyio
import pytest
from anyio.abc import TaskGroup

from aybiza.pipeline import CallContext, CallLedger, InputAudio, Pipeline, SpeechStarted, SpeechStopped, Transcript
from aybiza.processors.stt.whisper import WhisperSTT
from aybiza.testing import wait_until
from aybiza.testing.kit import FrameRecorder

from .helpers import FRAME_BYTES, RATE
from .test_whisper import ScriptedRecognizer

pytestmark = pytest.mark.anyio

EARLY_S = 0.1


class Quiet:
    """The VAD's view of the caller: 0 while voiced, then the silence so far."""

    def __init__(self) -> None:
        self.since: float | None = None

    def __call__(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since


async def frames(pipe: Pipeline, seconds: float, quiet: Quiet, *, voiced: bool) -> None:
    """Push ``seconds`` of 20 ms frames in real time; the VAD says voiced or quiet."""
    if voiced:
        quiet.since = None
    elif quiet.since is None:
        quiet.since = time.monotonic()
    for _ in range(round(seconds / 0.02)):
        await pipe.push(InputAudio(bytes(FRAME_BYTES), RATE, time.monotonic(), True))
        await anyio.sleep(0.02)


async def run(recognizer: ScriptedRecognizer, script: object) -> FrameRecorder:
    quiet = Quiet()
    stage = WhisperSTT(recognizer, early_s=EARLY_S, caller_quiet_s=quiet)
    recorder = FrameRecorder()

    async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
        with anyio.fail_after(10):
            await script(pipe, recorder, quiet)  # type: ignore[operator]

    await Pipeline([stage, recorder]).run(CallContext(call_id="CAearly", ledger=CallLedger()), feed)
    return recorder


async def test_transcription_starts_on_the_pause_and_the_final_is_out_when_the_turn_ends() -> None:
    recognizer = ScriptedRecognizer("what time do you open")
    waits: list[float] = []

    async def script(pipe: Pipeline, recorder: FrameRecorder, quiet: Quiet) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await frames(pipe, 0.6, quiet, voiced=True)
        await frames(pipe, 0.2, quiet, voiced=False)  # the pause: an early run starts after 0.1 s of it
        assert len(recognizer.heard) == 1  # before any end of turn reached the stage
        stopped = time.monotonic()
        await pipe.push(SpeechStopped(at=stopped))  # the end of turn, confirmed later
        await wait_until(lambda: bool(recorder.of(Transcript)), limit_s=2.0)
        waits.append(time.monotonic() - stopped)

    recorder = await run(recognizer, script)
    assert [t.text for t in recorder.of(Transcript)] == ["what time do you open"]
    assert len(recognizer.heard) == 1  # not transcribed again at the end
    assert recognizer.heard[0][0] >= FRAME_BYTES * 35  # the speech so far (0.6 s and the pause's first 0.1 s)
    assert waits[0] < 0.05


async def test_voice_after_the_pause_discards_the_early_run() -> None:
    recognizer = ScriptedRecognizer("what time", "what time do you open")

    async def script(pipe: Pipeline, recorder: FrameRecorder, quiet: Quiet) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await frames(pipe, 0.4, quiet, voiced=True)
        await frames(pipe, 0.2, quiet, voiced=False)
        assert len(recognizer.heard) == 1  # the early run on "what time"
        await frames(pipe, 0.3, quiet, voiced=True)  # the caller went on
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await wait_until(lambda: bool(recorder.of(Transcript)), limit_s=2.0)
        await anyio.sleep(0.05)

    recorder = await run(recognizer, script)
    assert [t.text for t in recorder.of(Transcript)] == ["what time do you open"]  # the whole utterance's
    assert len(recognizer.heard) == 2
    assert recognizer.heard[1][0] == FRAME_BYTES * 45  # all of it, transcribed at the end


class Identifying(ScriptedRecognizer):
    """A multilingual scripted recogniser whose audio language ID takes ``lid_s`` and hears ``heard``."""

    def __init__(self, *answers: str, heard: str, lid_s: float, transcribe_s: float = 0.0) -> None:
        super().__init__(*answers)
        self.multilingual = True
        self.heard_language = heard
        self.lid_s = lid_s
        self.transcribe_s = transcribe_s
        self.lid_spans: list[tuple[float, float]] = []

    def detect_language(self, pcm16: bytes, sample_rate: int, candidates: frozenset[str]) -> tuple[str, float]:
        started = time.monotonic()
        time.sleep(self.lid_s)
        self.lid_spans.append((started, time.monotonic()))
        return self.heard_language, 0.95

    def transcribe(self, pcm16: bytes, sample_rate: int, language: str = "en") -> str:
        time.sleep(self.transcribe_s)
        return super().transcribe(pcm16, sample_rate, language)


class Timed(ScriptedRecognizer):
    """An English scripted recogniser that takes ``seconds`` and notes when it started."""

    def __init__(self, *answers: str, seconds: float) -> None:
        super().__init__(*answers)
        self.seconds = seconds
        self.started: list[float] = []

    def transcribe(self, pcm16: bytes, sample_rate: int, language: str = "en") -> str:
        self.started.append(time.monotonic())
        time.sleep(self.seconds)
        return super().transcribe(pcm16, sample_rate, language)


async def first_utterance(english: Timed, multilingual: Identifying) -> tuple[FrameRecorder, float]:
    stage = WhisperSTT(lambda language: english if language.startswith("en") else multilingual,
                       identify=1, languages=frozenset({"en", "es"}))
    recorder = FrameRecorder()
    took: list[float] = []

    async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
        with anyio.fail_after(10):
            await pipe.push(SpeechStarted(at=time.monotonic()))
            for _ in range(50):  # 1 s: long enough for language ID
                await pipe.push(InputAudio(bytes(FRAME_BYTES), RATE, time.monotonic(), True))
            stopped = time.monotonic()
            await pipe.push(SpeechStopped(at=stopped))
            await wait_until(lambda: bool(recorder.of(Transcript)), limit_s=5.0)
            took.append(time.monotonic() - stopped)

    await Pipeline([stage, recorder]).run(CallContext(call_id="CAlid", ledger=CallLedger()), feed)
    return recorder, took[0]


async def test_language_id_runs_beside_the_recognition_in_the_calls_language() -> None:
    english = Timed("when are you open", seconds=0.3)
    multilingual = Identifying(heard="en", lid_s=0.3)
    recorder, took = await first_utterance(english, multilingual)
    assert [(t.text, t.language) for t in recorder.of(Transcript)] == [("when are you open", "en")]
    (lid_started, lid_ended), = multilingual.lid_spans
    assert english.started[0] < lid_ended  # the recognition did not wait for language ID
    assert took < 0.5  # side by side: about 0.3 s, not 0.6 s
    assert multilingual.heard == []  # nothing transcribed twice


async def test_another_language_heard_is_transcribed_again_in_it() -> None:
    english = Timed("okay we're in los angeles", seconds=0.05)
    multilingual = Identifying("a qué hora abren", heard="es", lid_s=0.1)
    recorder, _ = await first_utterance(english, multilingual)
    assert [(t.text, t.language) for t in recorder.of(Transcript)] == [("a qué hora abren", "es")]
    assert multilingual.languages == ["es"]
