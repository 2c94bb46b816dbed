"""WhisperSTT early on a pause: transcription starts once the VAD has heard the caller quiet for ``early_s``,
so the final is out as soon as the end of turn arrives; voice after the pause discards that early run."""

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
