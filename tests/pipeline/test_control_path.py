"""The control path: later stages steer earlier ones; every stage's wiring is checked before a call runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.pipeline import (
    DTMF,
    AgentSpeaking,
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    LanguageChanged,
    Pipeline,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    check_wiring,
)
from aybiza.processors.cache import WrappingProcessor
from aybiza.processors.fallback import FallbackStage
from aybiza.processors.stt.deepgram import DeepgramSTT
from aybiza.processors.stt.whisper import WhisperSTT
from aybiza.processors.turns import TurnTaker
from aybiza.processors.vad import VADProcessor
from aybiza.routing.service import RoutingService
from aybiza.stack import SpeechStack
from aybiza.testing.scripted import bench_agent, scripted_engines, scripted_settings
from aybiza.transports.twilio import TwilioProtocol
from aybiza.transports.twilio_ws import TwilioOutput, TwilioStream


@dataclass(frozen=True, slots=True)
class Poke(Frame):
    """A downstream frame that makes the last stage steer."""

    control: Frame


Log = list[tuple[str, Frame]]


class Listener(Processor):
    """Notes every control frame it gets in ``log`` (shared by the test's stages), then passes it on."""

    def __init__(self, name: str, log: Log, *, stop: bool = False) -> None:
        super().__init__()
        self.name = name
        self.log = log
        self.stop_here = stop

    async def control(self, frame: Frame) -> None:
        self.log.append((self.name, frame))
        if not self.stop_here:
            await self.steer(frame)


class Steerer(Processor):
    """The last stage: steers up what a Poke asks for."""

    name = "steerer"

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, Poke):
            await self.steer(frame.control)
            return
        await self.push(frame)


async def run_with_pokes(stages: list[Processor], pokes: list[Frame], log: Log) -> None:
    """Run ``stages -> Steerer`` and poke it with each control frame; what reaches the top is logged as ``top``."""

    async def on_control(frame: Frame) -> None:
        log.append(("top", frame))

    async def feed(pipe: Pipeline, tg: Any) -> None:
        for control in pokes:
            await pipe.push(Poke(control))

    await Pipeline([*stages, Steerer()], on_control=on_control).run(CallContext(call_id="control"), feed)


@pytest.mark.anyio
async def test_a_steer_reaches_every_earlier_stage_in_order_then_the_top() -> None:
    log: Log = []
    await run_with_pokes([Listener("first", log), Listener("second", log), Listener("third", log)],
                         [AgentSpeaking(True), LanguageChanged("de")], log)
    assert log == [
        ("third", AgentSpeaking(True)), ("second", AgentSpeaking(True)), ("first", AgentSpeaking(True)),
        ("top", AgentSpeaking(True)),
        ("third", LanguageChanged("de")), ("second", LanguageChanged("de")), ("first", LanguageChanged("de")),
        ("top", LanguageChanged("de")),
    ]


@pytest.mark.anyio
async def test_a_stage_that_does_not_act_on_control_frames_passes_them_up() -> None:
    log: Log = []
    await run_with_pokes([Listener("first", log), Processor(), Processor()], [AgentSpeaking(False)], log)
    assert log == [("first", AgentSpeaking(False)), ("top", AgentSpeaking(False))]


@pytest.mark.anyio
async def test_a_stage_may_keep_a_control_frame_to_itself() -> None:
    log: Log = []
    await run_with_pokes([Listener("first", log), Listener("keeper", log, stop=True)], [AgentSpeaking(True)], log)
    assert log == [("keeper", AgentSpeaking(True))]


@pytest.mark.anyio
async def test_control_frames_go_through_a_wrapped_stage_and_on_up() -> None:
    log: Log = []
    await run_with_pokes([Listener("first", log), WrappingProcessor(Listener("inner", log))], [AgentSpeaking(True)],
                         log)
    assert log == [("inner", AgentSpeaking(True)), ("first", AgentSpeaking(True)), ("top", AgentSpeaking(True))]


@pytest.mark.anyio
async def test_without_a_sink_the_top_drops_control_frames() -> None:
    steerer = Steerer()

    async def feed(pipe: Pipeline, tg: Any) -> None:
        await pipe.push(Poke(AgentSpeaking(True)))  # nobody listens: nothing happens

    await Pipeline([Processor(), steerer]).run(CallContext(call_id="quiet"), feed)


# -- wiring ---------------------------------------------------------------------------------


class Needs(Processor):
    """A stage that acts on ``kind`` and produces or steers nothing."""

    def __init__(self, kind: type[Frame]) -> None:
        super().__init__()
        self.name = f"needs-{kind.__name__}"
        self.consumes = frozenset({kind})  # type: ignore[misc]


class Makes(Processor):
    """A stage that produces transcripts downstream."""

    name = "makes"
    produces: ClassVar[frozenset[type[Frame]]] = frozenset({Transcript})


class SteersLanguage(Processor):
    name = "steers-language"
    steers: ClassVar[frozenset[type[Frame]]] = frozenset({LanguageChanged})


def test_a_consumed_frame_with_no_producer_before_and_no_steerer_after_is_reported() -> None:
    problems = check_wiring([Needs(Transcript), Makes()])
    assert problems == ["needs-Transcript consumes Transcript, but no stage before it produces it and none "
                        "after it steers it"]


def test_a_producer_before_a_steerer_after_or_a_source_wires_a_stage() -> None:
    assert check_wiring([Makes(), Needs(Transcript)]) == []
    assert check_wiring([Needs(LanguageChanged), SteersLanguage()]) == []
    assert check_wiring([Needs(AgentText)], sources={AgentText}) == []
    assert check_wiring([SteersLanguage(), Needs(LanguageChanged)]) != [], "a steer goes up, never down"


def test_turn_taking_with_no_output_after_it_never_hears_the_agent_speak() -> None:
    problems = check_wiring([Makes(), TurnTaker()], sources={SpeechStarted, SpeechStopped, DTMF})
    assert problems == ["turns consumes AgentSpeaking, but no stage before it produces it and none after it "
                        "steers it"]


def phone_output() -> TwilioOutput:
    async def send(text: str) -> None:
        return None

    return TwilioOutput(TwilioProtocol(), send)


def production_phone_stack(tmp_path: Path) -> tuple[list[Processor], list[Frame]]:
    """The processors and opening frames of a phone call on the production stack (scripted providers)."""
    settings = scripted_settings(data_dir=tmp_path)
    routing = RoutingService.from_settings(settings)
    stack = SpeechStack(settings, scripted_engines(settings), routing=routing)
    ctx = CallContext(call_id="CAwired", caller="+447700900123", transport="twilio")
    return stack.build(ctx, bench_agent(), call_routing=routing.call_routing(ctx.caller))


def test_the_production_stack_of_a_phone_call_is_wired(tmp_path: Path) -> None:
    processors, opening = production_phone_stack(tmp_path)
    stages = [*processors, phone_output()]
    assert check_wiring(stages, TwilioStream.sources | {type(frame) for frame in opening}) == []
    assert check_wiring(processors, TwilioStream.sources | {type(frame) for frame in opening}), (
        "without the output, nothing steers AgentSpeaking")


def test_the_embedded_stack_of_a_phone_call_is_wired(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)  # whisper, the FAQ responder and the local voice
    engines = Engines(settings)
    processors, opening = SpeechStack(settings, engines).build(CallContext(call_id="CAlocal"), bench_agent())
    assert [type(frame) for frame in opening] == [AgentText, AgentTurnDone]
    assert check_wiring([*processors, phone_output()], TwilioStream.sources | {AgentText, AgentTurnDone}) == []


def test_the_recogniser_that_takes_over_from_deepgram_hears_the_vads_pauses(tmp_path: Path) -> None:
    processors, _ = production_phone_stack(tmp_path)
    fallback = next(p for p in processors if isinstance(p, FallbackStage))
    vad = next(p for p in processors if isinstance(p, VADProcessor))
    backup = fallback._make_backup()
    primary = fallback.primary
    assert isinstance(backup, WhisperSTT) and isinstance(primary, DeepgramSTT)
    assert backup.caller_quiet_s is not None and backup.caller_quiet_s is primary.caller_quiet_s
    assert backup.caller_quiet_s() == vad.silent_s
