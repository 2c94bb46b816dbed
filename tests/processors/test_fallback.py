"""FallbackStage: when the provider behind a stage fails, the local one takes over without losing the turn."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest
from anyio.abc import TaskGroup

from aybiza.errors import CallEnded, CredentialsError, EndReason, OverloadedError
from aybiza.pipeline import (
    DTMF,
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    IncidentKind,
    InputAudio,
    Interruption,
    LanguageChanged,
    Notice,
    Pipeline,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from aybiza.processors.fallback import FallbackStage, Replay
from aybiza.testing import wait_until
from aybiza.testing.kit import FrameRecorder

pytestmark = pytest.mark.anyio


class Recogniser(Processor):
    """A recogniser double: keeps what it is given; ``fail()`` makes its background task raise."""

    consumes = frozenset({InputAudio, SpeechStarted, SpeechStopped, LanguageChanged})
    produces = frozenset({Transcript})

    def __init__(self, name: str, *, fail_on_audio: int | None = None,
                 fail_at_start: BaseException | None = None) -> None:
        super().__init__()
        self.name = name
        self.heard: list[Frame] = []
        self.controls: list[Frame] = []
        self.fail_on_audio = fail_on_audio
        self.fail_at_start = fail_at_start
        self.stopped = 0
        self._failure: BaseException | None = None
        self._fail = anyio.Event()

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        if self.fail_at_start is not None:
            raise self.fail_at_start
        tg.start_soon(self._run)

    async def stop(self) -> None:
        self.stopped += 1

    def fail(self, error: BaseException) -> None:
        self._failure = error
        self._fail.set()

    async def _run(self) -> None:
        await self._fail.wait()
        assert self._failure is not None
        raise self._failure

    async def control(self, frame: Frame) -> None:
        self.controls.append(frame)
        await self.steer(frame)

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, InputAudio | SpeechStarted | SpeechStopped):
            self.heard.append(frame)
            audio = sum(isinstance(f, InputAudio) for f in self.heard)
            if isinstance(frame, InputAudio) and audio == self.fail_on_audio:
                raise OverloadedError(f"{self.name} broke on audio frame {audio}", provider=self.name)
            if isinstance(frame, SpeechStopped) and audio:
                await self.push(Transcript(f"{self.name} heard {audio} frames", final=True))
                self.heard.clear()
            if not isinstance(frame, InputAudio):
                await self.push(frame)
            return
        await self.push(frame)

    async def finalise(self, text: str) -> None:
        """Push a final transcript now (what a streaming recogniser does for the utterance so far)."""
        self.heard.clear()
        await self.push(Transcript(text, final=True))


class Announcements:
    """What the call was asked to say in the local voice."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    async def __call__(self, notice: Notice) -> None:
        self.notices.append(notice)


def audio(n: int) -> InputAudio:
    return InputAudio(bytes([n]) * 320, 8000, 100.0 + n * 0.02, voiced=True)


def ended(group: BaseExceptionGroup[BaseException]) -> CallEnded:
    """The CallEnded a failed call's exception group holds."""
    found = group.subgroup(CallEnded)
    assert found is not None, group
    error: BaseException = found
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, CallEnded)
    return error


def ended_reason(group: BaseExceptionGroup[BaseException]) -> EndReason:
    return ended(group).reason


def stt_fallback(primary: Processor, backup: Callable[[], Processor]) -> FallbackStage:
    return FallbackStage(primary, backup, replay=Replay.UTTERANCE, incident=IncidentKind.STT_FALLBACK,
                         unavailable=EndReason.STT_UNAVAILABLE)


async def run(stage: FallbackStage, feed: Callable[[Pipeline, FrameRecorder], object],
              ctx: CallContext) -> FrameRecorder:
    recorder = FrameRecorder()

    async def drive(pipe: Pipeline, tg: TaskGroup) -> None:
        await feed(pipe, recorder)  # type: ignore[misc]

    await Pipeline([stage, recorder]).run(ctx, drive)
    return recorder


async def test_a_background_failure_hands_the_utterance_in_progress_to_the_backup() -> None:
    primary = Recogniser("deepgram")
    backups: list[Recogniser] = []

    def backup() -> Processor:
        backups.append(Recogniser("whisper"))
        return backups[-1]

    stage = stt_fallback(primary, backup)
    announce = Announcements()
    ctx = CallContext(call_id="CAfallback", announce=announce)
    first, second = SpeechStarted(at=100.0), SpeechStarted(at=101.0)

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        # The first utterance is recognised by the primary: nothing of it is replayed later.
        await pipe.push(first)
        await pipe.push(audio(1))
        await primary.finalise("first utterance")
        await pipe.push(SpeechStopped(at=100.5))
        # The second is in progress when the primary's socket fails for good.
        await pipe.push(second)
        await pipe.push(audio(2))
        await pipe.push(audio(3))
        primary.fail(OverloadedError("Deepgram listen unreachable for 1.5 s", provider="deepgram"))
        await wait_until(lambda: bool(announce.notices))
        await pipe.push(audio(4))
        await pipe.push(SpeechStopped(at=101.5))
        await recorder.wait_for(Transcript, 2)

    recorder = await run(stage, feed, ctx)
    [whisper] = backups
    assert stage.switched and stage.active is whisper
    assert stage.switched and (stage.primary.name, stage.active.name) == ("deepgram", "whisper")
    assert [t.text for t in recorder.of(Transcript)] == ["first utterance", "whisper heard 3 frames"]
    assert announce.notices == [Notice.APOLOGY], "the caller hears one apology in the local voice"
    [incident] = ctx.ledger.incidents
    assert incident.kind is IncidentKind.STT_FALLBACK
    assert incident.detail == "deepgram: OverloadedError: Deepgram listen unreachable for 1.5 s"


async def test_the_replay_is_exactly_the_audio_since_speech_started_without_a_final() -> None:
    primary = Recogniser("deepgram")
    whisper = Recogniser("whisper")
    stage = stt_fallback(primary, lambda: whisper)
    replayed: list[Frame] = []
    started = SpeechStarted(at=101.0)

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(SpeechStarted(at=100.0))
        await pipe.push(audio(1))
        await primary.finalise("settled")  # the primary finished with everything up to here
        await pipe.push(audio(2))  # after the final, before the next utterance: not part of one
        await pipe.push(started)
        await pipe.push(audio(3))
        await pipe.push(audio(4))
        primary.fail(OverloadedError("gone"))
        await wait_until(lambda: stage.switched and bool(whisper.heard))
        replayed.extend(whisper.heard)

    await run(stage, feed, CallContext(call_id="CAreplay"))
    assert replayed == [started, audio(3), audio(4)]


async def test_a_failure_while_processing_a_frame_switches_and_that_frame_is_not_lost() -> None:
    primary = Recogniser("deepgram", fail_on_audio=3)
    whisper = Recogniser("whisper")
    stage = stt_fallback(primary, lambda: whisper)
    announce = Announcements()
    ctx = CallContext(call_id="CAprocess", announce=announce)
    started = SpeechStarted(at=100.0)

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(started)
        for n in range(1, 6):
            await pipe.push(audio(n))
        await pipe.push(DTMF("1"))
        await pipe.push(SpeechStopped(at=100.2))
        await recorder.wait_for(Transcript)

    recorder = await run(stage, feed, ctx)
    assert [t.text for t in recorder.of(Transcript)] == ["whisper heard 5 frames"], "audio 1 to 5, none lost"
    assert announce.notices == [Notice.APOLOGY]
    assert [incident.kind for incident in ctx.ledger.incidents] == [IncidentKind.STT_FALLBACK]
    assert recorder.of(DTMF) == [DTMF("1")], "frames the stage does not consume still pass"


async def test_a_primary_failing_to_start_leaves_the_backup_in_its_place() -> None:
    primary = Recogniser("deepgram", fail_at_start=CredentialsError("refused", provider="deepgram"))
    whisper = Recogniser("whisper")
    stage = stt_fallback(primary, lambda: whisper)
    announce = Announcements()

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(SpeechStarted(at=100.0))
        await pipe.push(audio(1))
        await pipe.push(SpeechStopped(at=100.1))
        await recorder.wait_for(Transcript)

    recorder = await run(stage, feed, CallContext(call_id="CAstart", announce=announce))
    assert stage.active is whisper
    assert [t.text for t in recorder.of(Transcript)] == ["whisper heard 1 frames"]
    assert announce.notices == [Notice.APOLOGY]


async def test_what_the_primary_says_after_it_failed_is_dropped() -> None:
    primary = Recogniser("deepgram")
    stage = stt_fallback(primary, lambda: Recogniser("whisper"))

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        primary.fail(OverloadedError("gone"))
        await wait_until(lambda: stage.switched)
        await primary.finalise("a late transcript from the dead socket")
        await anyio.sleep(0.01)

    recorder = await run(stage, feed, CallContext(call_id="CAlate"))
    assert recorder.of(Transcript) == []


async def test_control_frames_reach_the_serving_stage_and_go_on_up() -> None:
    primary = Recogniser("deepgram")
    whisper = Recogniser("whisper")
    stage = stt_fallback(primary, lambda: whisper)
    steered: list[Frame] = []

    async def on_control(frame: Frame) -> None:
        steered.append(frame)

    async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
        await stage.control(LanguageChanged("de"))
        primary.fail(OverloadedError("gone"))
        await wait_until(lambda: stage.active is whisper)
        await stage.control(LanguageChanged("fr"))

    await Pipeline([stage, FrameRecorder()], on_control=on_control).run(CallContext(call_id="CActl"), feed)
    assert primary.controls == [LanguageChanged("de")] and whisper.controls == [LanguageChanged("fr")]
    assert steered == [LanguageChanged("de"), LanguageChanged("fr")]


async def test_a_backup_that_cannot_start_ends_the_call_as_unavailable() -> None:
    primary = Recogniser("deepgram")

    def broken_backup() -> Processor:
        raise CredentialsError("the local model is missing", provider="whisper")

    stage = stt_fallback(primary, broken_backup)

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        primary.fail(OverloadedError("gone"))
        await anyio.sleep(5)

    with pytest.raises(BaseExceptionGroup) as caught:
        await run(stage, feed, CallContext(call_id="CAdead"))
    assert ended_reason(caught.value) is EndReason.STT_UNAVAILABLE


async def test_a_backup_failing_in_its_start_ends_the_call_as_unavailable() -> None:
    primary = Recogniser("deepgram")
    stage = stt_fallback(primary, lambda: Recogniser("whisper", fail_at_start=OverloadedError("no model")))

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        primary.fail(OverloadedError("gone"))
        await anyio.sleep(5)

    with pytest.raises(BaseExceptionGroup) as caught:
        await run(stage, feed, CallContext(call_id="CAnostart"))
    assert ended_reason(caught.value) is EndReason.STT_UNAVAILABLE


async def test_a_backup_failing_later_ends_the_call_as_unavailable() -> None:
    primary = Recogniser("deepgram")
    whisper = Recogniser("whisper")
    stage = stt_fallback(primary, lambda: whisper)
    announce = Announcements()

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        primary.fail(OverloadedError("gone"))
        await wait_until(lambda: bool(announce.notices))
        whisper.fail(OverloadedError("whisper too"))
        await anyio.sleep(5)

    began = time.monotonic()
    with pytest.raises(BaseExceptionGroup) as caught:
        await run(stage, feed, CallContext(call_id="CAboth", announce=announce))
    assert time.monotonic() - began < 4, "the call ends when the backup fails, not later"
    assert ended_reason(caught.value) is EndReason.STT_UNAVAILABLE
    assert "whisper failed too" in str(ended(caught.value))


async def test_stop_stops_both_stages_and_may_be_called_twice() -> None:
    primary = Recogniser("deepgram")
    whisper = Recogniser("whisper")
    stage = stt_fallback(primary, lambda: whisper)

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        primary.fail(OverloadedError("gone"))
        await wait_until(lambda: stage.active is whisper)

    await run(stage, feed, CallContext(call_id="CAstop"))
    await stage.stop()
    assert (primary.stopped, whisper.stopped) == (2, 2)


# -- a voice: the agent's text of turns not yet spoken in full is replayed ---------------------


class Voice(Processor):
    """A voice double: ``AgentTurnDone`` is pushed back when the turn is spoken; keeps what it was given."""

    consumes = frozenset({AgentText, AgentTurnDone, Interruption})
    produces = frozenset({AgentTurnDone})

    def __init__(self, name: str, *, speak: bool = True) -> None:
        super().__init__()
        self.name = name
        self.given: list[Frame] = []
        self.speak = speak
        self._fail = anyio.Event()

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        tg.start_soon(self._run)

    async def _run(self) -> None:
        await self._fail.wait()
        raise OverloadedError("Deepgram speak unreachable", provider="deepgram")

    def fail(self) -> None:
        self._fail.set()

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, AgentText | AgentTurnDone):
            self.given.append(frame)
            if isinstance(frame, AgentTurnDone) and self.speak:
                await self.push(frame)
            return
        await self.push(frame)


async def test_a_failed_voice_hands_the_unspoken_turns_to_the_local_voice() -> None:
    aura, local = Voice("aura"), Voice("local")
    stage = FallbackStage(aura, lambda: local, replay=Replay.AGENT_TEXT, incident=IncidentKind.TTS_FALLBACK,
                          unavailable=EndReason.TTS_UNAVAILABLE)
    announce = Announcements()
    ctx = CallContext(call_id="CAvoice", announce=announce)

    async def feed(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(AgentText("Hello.", 0))
        await pipe.push(AgentTurnDone(0))  # spoken in full by aura
        await pipe.push(AgentText("Cut short.", 1))
        await pipe.push(Interruption(at=1.0))  # the caller barged in: turn 1 is not to be spoken again
        aura.speak = False  # aura stalls on turn 2
        await pipe.push(AgentText("We open at nine.", 2))
        await pipe.push(AgentTurnDone(2))
        aura.fail()
        await recorder.wait_for(AgentTurnDone, 2)

    recorder = await run(stage, feed, ctx)
    assert local.given == [AgentText("We open at nine.", 2), AgentTurnDone(2)]
    assert [f.turn_id for f in recorder.of(AgentTurnDone)] == [0, 2]
    assert announce.notices == [Notice.APOLOGY]
    assert [incident.kind for incident in ctx.ledger.incidents] == [IncidentKind.TTS_FALLBACK]
