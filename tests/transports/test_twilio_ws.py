"""The Twilio Media Streams transport: its output stage, the stream's pump and close, and whole calls over it.

The whole calls go through :func:`aybiza.calls.serve_twilio_stream` (admission, the one-time token, the
call's session) on a real :class:`~aybiza.runtime.Runtime` whose stack is a few stand-in stages, so no
model loads; the failsafe voice is espeak-ng. Random and mutated messages end the call cleanly and never
leak a task.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.lowlevel
import numpy as np
import pytest
from anyio.abc import TaskGroup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.websockets import WebSocketDisconnect

from aybiza.agents import AgentConfig
from aybiza.calls import serve_twilio_stream
from aybiza.errors import CallEnded, EndReason, ProtocolError
from aybiza.pipeline import (
    DTMF,
    AgentSpeaking,
    AgentText,
    AgentTurnDone,
    CallContext,
    CallLedger,
    EndOfCall,
    Frame,
    InputAudio,
    Interruption,
    OutputAudio,
    Pipeline,
    Processor,
    Stage,
    Transcript,
)
from aybiza.processors.turns import TurnTaker
from aybiza.processors.vad import VADProcessor
from aybiza.routing.router import CallRouting
from aybiza.runtime import Runtime
from aybiza.stack import SpeechStack
from aybiza.testing.fake_twilio import FakeTwilio
from aybiza.testing.twilio_caller import ServerClear, ServerMark, ServerMedia, TwilioCallerProtocol
from aybiza.tools.toolbox import CallActions
from aybiza.transports.twilio import TwilioProtocol
from aybiza.transports.twilio_ws import MARK_EVERY_SAMPLES, TwilioOutput, TwilioStream, accept_stream

from ._runtime import stand_in_runtime

TOKEN = "good-token"


# -- Twilio's end of the socket ---------------------------------------------------------------------


class FakeTwilioSocket:
    """Just enough of Starlette's WebSocket, as Twilio's end of a Media Stream.

    Scripted messages come in; what we send is recorded. After the script the
    socket disconnects, or with ``stay_open`` waits until we close it. With a
    ``caller``, every mark we send is echoed back at once (the audio "played").
    """

    def __init__(self, incoming: Iterable[str | bytes] = (), *, caller: TwilioCallerProtocol | None = None,
                 stay_open: bool = False) -> None:
        self.incoming: deque[str | bytes] = deque(incoming)
        self.caller = caller
        self.stay_open = stay_open
        self.sent: list[str] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.headers: dict[str, str] = {}
        self.client = None  # Starlette's peer address (host, port); none here
        self._more = anyio.Event()

    async def accept(self) -> None:
        return None

    async def receive(self) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        while not self.incoming:
            if self.close_code is not None or not self.stay_open:
                return {"type": "websocket.disconnect", "code": 1000}
            self._more = anyio.Event()
            await self._more.wait()
        message = self.incoming.popleft()
        if isinstance(message, bytes):
            return {"type": "websocket.receive", "bytes": message}
        return {"type": "websocket.receive", "text": message}

    async def send_text(self, text: str) -> None:
        if self.close_code is not None:
            raise WebSocketDisconnect(1000)
        self.sent.append(text)
        if self.caller is not None:
            event = self.caller.receive(text)
            if isinstance(event, ServerMark):
                self.push(self.caller.mark(event.name))

    def push(self, message: str | bytes) -> None:
        """Twilio sends another message."""
        self.incoming.append(message)
        self._more.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._more.set()

    def events(self) -> list[str]:
        """The ``event`` of every message we sent."""
        return [json.loads(message)["event"] for message in self.sent]


def _started(caller: TwilioCallerProtocol) -> TwilioProtocol:
    """The server's protocol after Twilio's ``connected`` and ``start``."""
    protocol = TwilioProtocol()
    protocol.receive(caller.connected())
    protocol.receive(caller.start())
    return protocol


def _tone(rate: int, seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


# -- the output stage ----------------------------------------------------------------------------------


class Phone:
    """A started stream's output stage, what it sent to Twilio (as Twilio reads it) and what it steered up."""

    def __init__(self) -> None:
        self.caller = TwilioCallerProtocol()
        self.protocol = _started(self.caller)
        self.sent: list[str] = []
        self.output = TwilioOutput(self.protocol, self._send)
        self.controls: list[Frame] = []
        self.ctx = CallContext("CAout", ledger=CallLedger())

    async def _send(self, text: str) -> None:
        self.sent.append(text)

    def heard(self) -> list[ServerMedia | ServerMark | ServerClear]:
        """What we sent, parsed by Twilio's side."""
        return [self.caller.receive(text) for text in self.sent]

    def media(self) -> bytes:
        return b"".join(event.payload for event in self.heard() if isinstance(event, ServerMedia))

    def marks(self) -> list[str]:
        return [event.name for event in self.heard() if isinstance(event, ServerMark)]

    async def echo_marks(self) -> None:
        """Twilio reports every pending mark (the audio before it played, or was cleared)."""
        for name in self.protocol.pending_marks:
            self.protocol.receive(self.caller.mark(name))
            await self.output.mark_done()

    def speaking(self) -> list[bool]:
        return [frame.speaking for frame in self.controls if isinstance(frame, AgentSpeaking)]

    async def run(self, body: Callable[[Pipeline], Awaitable[None]]) -> None:
        """Run the output stage for one call while ``body`` pushes frames into it."""

        async def on_control(frame: Frame) -> None:
            self.controls.append(frame)

        async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
            await body(pipe)

        await Pipeline([self.output], on_control=on_control).run(self.ctx, feed)


@pytest.mark.anyio
async def test_phone_audio_is_sent_as_is_and_other_audio_becomes_8_khz_ulaw() -> None:
    phone = Phone()
    ulaw = bytes(range(256)) * 2

    async def body(pipe: Pipeline) -> None:
        await pipe.push(OutputAudio(b"", 8000, 1, 0.0, ulaw=ulaw))  # Aura's μ-law: no decode, no re-encode
        await pipe.push(AgentTurnDone(1))
        await pipe.push(OutputAudio(_tone(16000, 0.5), 16000, 2, 0.0))
        await pipe.push(AgentTurnDone(2))

    await phone.run(body)
    media = phone.media()
    assert media[:512] == ulaw
    assert len(media) - 512 == pytest.approx(4000, abs=40)  # 0.5 s at 8 kHz, the resampler's tail included


@pytest.mark.anyio
async def test_a_mark_every_second_of_audio_and_one_at_each_turn_end() -> None:
    phone = Phone()

    async def body(pipe: Pipeline) -> None:
        for _ in range(125):  # 2.5 s in 20 ms pieces
            await pipe.push(OutputAudio(b"", 8000, 3, 0.0, ulaw=b"\x7f" * 160))
        await pipe.push(AgentTurnDone(3))

    await phone.run(body)
    assert MARK_EVERY_SAMPLES == 8000
    assert phone.marks() == ["turn-3.1", "turn-3.2", "turn-3"]
    assert list(phone.protocol.pending_marks) == ["turn-3.1", "turn-3.2", "turn-3"]


@pytest.mark.anyio
async def test_the_caller_hears_the_agent_until_twilio_echoes_the_last_mark() -> None:
    phone = Phone()
    drained = anyio.Event()

    async def body(pipe: Pipeline) -> None:
        async def wait_drained() -> None:
            await phone.output.drained()
            drained.set()

        await pipe.push(OutputAudio(_tone(16000, 0.2), 16000, 1, 0.0))
        assert phone.speaking() == [True] and phone.output.speaking
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_drained)
            await pipe.push(AgentTurnDone(1))
            await anyio.sleep(0.01)
            assert phone.speaking() == [True]  # sent is not heard: Twilio still plays it
            assert not drained.is_set()
            await phone.echo_marks()
        assert phone.speaking() == [True, False] and not phone.output.speaking
        assert drained.is_set()

    await phone.run(body)


@pytest.mark.anyio
async def test_barge_in_clears_twilio_at_once() -> None:
    phone = Phone()

    async def body(pipe: Pipeline) -> None:
        for _ in range(60):
            await pipe.push(OutputAudio(b"", 8000, 1, 0.0, ulaw=b"\x7f" * 160))
        await pipe.push(Interruption(at=time.monotonic()))
        assert phone.speaking() == [True, False]  # the caller stopped hearing it now, not at the echo
        await phone.output.drained()
        cleared = list(phone.protocol.pending_marks)
        assert cleared == ["turn-1.1"]
        events = phone.protocol.receive(phone.caller.mark("turn-1.1"))
        assert [event.played for event in events] == [False]  # type: ignore[union-attr]
        await pipe.push(OutputAudio(b"", 8000, 2, 0.0, ulaw=b"\x7f" * 160))  # the next reply plays normally
        assert phone.speaking() == [True, False, True]

    await phone.run(body)
    heard = phone.heard()
    clear_at = next(i for i, event in enumerate(heard) if isinstance(event, ServerClear))
    assert isinstance(heard[clear_at + 1], ServerMedia)


@pytest.mark.anyio
async def test_voice_to_voice_is_measured_at_the_first_audio_of_a_reply() -> None:
    phone = Phone()

    async def body(pipe: Pipeline) -> None:
        await pipe.push(OutputAudio(b"", 8000, 0, 0.0, ulaw=b"\x7f" * 160))  # the greeting: nobody spoke
        await pipe.push(OutputAudio(b"", 8000, -1, 0.0, ulaw=b"\x7f" * 160))  # an announcement: not a reply
        assert phone.ctx.ledger.samples == []
        phone.ctx.user_turn_ended_at = time.monotonic() - 0.3
        await pipe.push(OutputAudio(b"", 8000, 1, 0.0, ulaw=b"\x7f" * 160))
        await pipe.push(OutputAudio(b"", 8000, 1, 0.0, ulaw=b"\x7f" * 160))

    await phone.run(body)
    ((stage, seconds, _),) = phone.ctx.ledger.samples
    assert stage is Stage.VOICE_TO_VOICE and seconds == pytest.approx(0.3, abs=0.1)
    assert phone.ctx.user_turn_ended_at is None


@pytest.mark.anyio
async def test_audio_after_the_caller_left_ends_the_call_as_a_disconnect() -> None:
    caller = TwilioCallerProtocol()
    websocket = FakeTwilioSocket()
    output = TwilioOutput(_started(caller), websocket.send_text)
    await websocket.close()
    with pytest.raises(CallEnded) as raised:
        await output.process(OutputAudio(b"", 8000, 1, 0.0, ulaw=b"\x7f" * 160))
    assert raised.value.reason is EndReason.DISCONNECTED


# -- accepting a stream, pumping it, closing it ---------------------------------------------------------


def _accept(websocket: FakeTwilioSocket, **kwargs: Any) -> Awaitable[tuple[TwilioProtocol, Any] | None]:
    return accept_stream(websocket,  # type: ignore[arg-type]
                         check_token=lambda custom: custom.get("call_token") == TOKEN,
                         max_message_bytes=64 * 1024, **kwargs)


@pytest.mark.anyio
async def test_a_stream_is_accepted_at_its_start_with_a_good_token() -> None:
    caller = TwilioCallerProtocol(custom_parameters={"call_token": TOKEN, "caller": "+15555550123"})
    websocket = FakeTwilioSocket([caller.connected(), caller.start()])
    accepted = await _accept(websocket)
    assert accepted is not None
    protocol, started = accepted
    assert protocol.started and started.call_sid == caller.call_sid
    assert started.custom_parameters["caller"] == "+15555550123"
    assert websocket.close_code is None


@pytest.mark.anyio
@pytest.mark.parametrize(("script", "complaint"), [
    ("forged", "token"),
    ("binary", "binary"),
    ("silent", "no start"),
    ("media first", "before start"),
])
async def test_a_stream_without_a_good_start_is_refused_with_a_reason(script: str, complaint: str) -> None:
    caller = TwilioCallerProtocol(custom_parameters={"call_token": "forged" if script == "forged" else TOKEN})
    messages: list[str | bytes] = [caller.connected()]
    if script == "forged":
        messages.append(caller.start())
    elif script == "binary":
        messages.append(caller.start().encode())
    elif script == "media first":
        messages.append(json.dumps({"event": "media", "streamSid": caller.stream_sid, "sequenceNumber": "1",
                                    "media": {"payload": "/w=="}}))
    websocket = FakeTwilioSocket(messages, stay_open=True)
    with anyio.fail_after(5):
        assert await _accept(websocket, start_timeout_s=0.2) is None
    assert websocket.close_code == 1008 and complaint in websocket.close_reason
    assert websocket.sent == []


@pytest.mark.anyio
async def test_a_stream_that_hangs_up_before_start_is_just_gone() -> None:
    caller = TwilioCallerProtocol()
    websocket = FakeTwilioSocket([caller.connected()])
    assert await _accept(websocket) is None
    assert websocket.close_code is None


async def _stream(messages: Callable[[TwilioCallerProtocol], list[str | bytes]], *,
                  stay_open: bool = False) -> tuple[TwilioStream, FakeTwilioSocket]:
    caller = TwilioCallerProtocol(custom_parameters={"call_token": TOKEN})
    websocket = FakeTwilioSocket([caller.connected(), caller.start()], stay_open=stay_open)
    accepted = await _accept(websocket)
    assert accepted is not None
    for message in messages(caller):
        websocket.push(message)
    return TwilioStream(websocket, accepted[0], CallContext("CAstream", ledger=CallLedger())), websocket  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_the_pump_pushes_caller_audio_and_keys_and_ends_at_stop() -> None:
    stream, _ = await _stream(lambda caller: [*(caller.media(bytes([n]) * 160) for n in range(3)),
                                              caller.dtmf("5"), caller.stop()])
    pushed: list[Frame] = []

    async def push(frame: Frame) -> None:
        pushed.append(frame)

    assert stream.open
    assert await stream.pump(push) is EndReason.HANGUP
    assert not stream.open
    audio = [frame for frame in pushed if isinstance(frame, InputAudio)]
    assert [frame.ulaw for frame in audio] == [bytes([n]) * 160 for n in range(3)]  # as it arrived, for Deepgram
    assert {(len(frame.pcm), frame.sample_rate) for frame in audio} == {(320, 8000)}
    assert pushed[-1] == DTMF("5")
    assert stream.sources >= {InputAudio, DTMF, EndOfCall}


@pytest.mark.anyio
async def test_a_dropped_socket_is_a_disconnect_and_garbage_a_protocol_error() -> None:
    stream, _ = await _stream(lambda caller: [caller.media(b"\xff" * 160)])

    async def push(frame: Frame) -> None:
        return None

    assert await stream.pump(push) is EndReason.DISCONNECTED
    assert not stream.open
    garbled, _ = await _stream(lambda caller: [caller.media(b"\xff" * 160), "{not json"])
    with pytest.raises(ProtocolError, match="JSON"):
        await garbled.pump(push)
    assert not garbled.open


@pytest.mark.anyio
@pytest.mark.parametrize(("reason", "detail", "code", "text"), [
    (EndReason.HANGUP, "", 1000, "hangup"),
    (EndReason.AGENT_ENDED, "goodbye said", 1000, "agent_ended"),
    (EndReason.MODEL_UNAVAILABLE, "every region failed", 1000, "model_unavailable: every region failed"),
    (EndReason.PROTOCOL_ERROR, "bad media", 1008, "protocol_error: bad media"),
    (EndReason.AUTH_FAILED, "call token rejected", 1008, "auth_failed: call token rejected"),
    (EndReason.INTERNAL_ERROR, "RuntimeError: boom", 1011, "internal_error: RuntimeError: boom"),
])
async def test_close_says_whose_fault_it_was_and_why(reason: EndReason, detail: str, code: int, text: str) -> None:
    stream, websocket = await _stream(lambda caller: [], stay_open=True)
    await stream.close(reason, detail)
    await stream.close(EndReason.SHUTDOWN, "")  # once closed, closed
    assert (websocket.close_code, websocket.close_reason) == (code, text)
    assert not stream.open and stream.control is None


# -- whole calls through the session --------------------------------------------------------------------


class Ears(Processor):
    """Stands in for the recogniser (never hears anything: the tests' callers say nothing)."""

    name = "ears"
    produces = frozenset({Transcript})


class Speaker(Processor):
    """A stand-in agent voice: answers every AgentText with 0.1 s of a tone; ``fail`` text raises."""

    name = "speaker"
    consumes = frozenset({AgentText})
    produces = frozenset({OutputAudio})

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, AgentText):
            if frame.text == "fail":
                raise RuntimeError("the voice broke")
            await self.push(OutputAudio(_tone(16000, 0.1), 16000, frame.turn_id, time.monotonic()))
            return
        await self.push(frame)


class StandInStack(SpeechStack):
    """A call's stages for these tests: the real VAD and turn-taking around stand-ins; the agent greets."""

    greeting = "hello"

    def build(self, ctx: CallContext, agent: AgentConfig, *, call_routing: CallRouting | None = None,
              history: Sequence[Mapping[str, str]] = (), resumed: bool = False, turn_offset: int = 0,
              actions: CallActions | None = None) -> tuple[list[Processor], list[Frame]]:
        stages: list[Processor] = [VADProcessor(), Ears(), TurnTaker(), Speaker()]
        return stages, [AgentText(self.greeting, 0), AgentTurnDone(0)]


def _runtime(root: Path, **values: Any) -> Runtime:
    return stand_in_runtime(root, StandInStack, **values)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    return _runtime(tmp_path_factory.mktemp("twilio-ws"))


def _caller(runtime: Runtime, *, agent: str = "default", call_sid: str | None = None) -> TwilioCallerProtocol:
    """Twilio's side of a call the signed webhook announced (its token minted for its CallSid)."""
    caller = TwilioCallerProtocol()
    token = runtime.tokens.mint(call_sid if call_sid is not None else caller.call_sid, "+15555550123", agent)
    assert token is not None
    caller.custom_parameters = {"call_token": token, "caller": "+15555550123", "agent": agent}
    return caller


def _valid_call(caller: TwilioCallerProtocol, frames: int = 5) -> list[str | bytes]:
    messages: list[str | bytes] = [caller.connected(), caller.start()]
    messages += [caller.media(b"\xff" * 160) for _ in range(frames)]
    messages += [caller.dtmf("5"), caller.stop()]
    return messages


async def _serve(runtime: Runtime, websocket: FakeTwilioSocket) -> set[asyncio.Task[Any]]:
    """Serve one stream; return the tasks it left behind."""
    before = asyncio.all_tasks()
    with anyio.fail_after(20):
        await serve_twilio_stream(websocket, runtime)  # type: ignore[arg-type]
    await anyio.lowlevel.checkpoint()
    return {task for task in asyncio.all_tasks() - before if not task.done()}


@pytest.fixture
def counted(runtime: Runtime) -> Iterator[Callable[[], dict[str, Any]]]:
    """What the metrics counted since the test began: calls ended, errors and incidents."""
    before = runtime.metrics.snapshot()

    def since() -> dict[str, Any]:
        now = runtime.metrics.snapshot()
        diff: dict[str, Any] = {"calls": now["calls_total"] - before["calls_total"]}
        for key in ("errors", "incidents"):
            diff[key] = {k: v - before[key].get(k, 0) for k, v in now[key].items() if v != before[key].get(k, 0)}
        return diff

    yield since
    assert runtime.admission.active == 0 and runtime.calls == {}  # every slot given back


@pytest.mark.anyio
async def test_a_valid_call_greets_marks_and_ends_normally(runtime: Runtime,
                                                           counted: Callable[[], dict[str, Any]]) -> None:
    caller = _caller(runtime)
    websocket = FakeTwilioSocket(_valid_call(caller))
    assert not await _serve(runtime, websocket)
    assert "media" in websocket.events() and "mark" in websocket.events()
    assert (websocket.close_code, websocket.close_reason) == (1000, "hangup")
    assert counted() == {"calls": 1, "errors": {}, "incidents": {}}
    assert runtime.metrics.snapshot()["calls_by_country"].get("US", 0) >= 1


@pytest.mark.anyio
async def test_a_bad_token_refuses_the_stream_before_any_session(runtime: Runtime,
                                                                 counted: Callable[[], dict[str, Any]]) -> None:
    caller = TwilioCallerProtocol(custom_parameters={"call_token": "forged"})
    websocket = FakeTwilioSocket([caller.connected(), caller.start()])
    await _serve(runtime, websocket)
    assert websocket.close_code == 1008 and "token" in websocket.close_reason
    assert websocket.sent == [] and counted()["calls"] == 0


@pytest.mark.anyio
async def test_a_token_works_once_and_only_for_the_call_it_was_minted_for(
        runtime: Runtime, counted: Callable[[], dict[str, Any]]) -> None:
    other = _caller(runtime, call_sid="CA" + "0" * 32)  # minted for another CallSid
    websocket = FakeTwilioSocket(_valid_call(other))
    await _serve(runtime, websocket)
    assert websocket.close_code == 1008 and "callSid" in websocket.close_reason and websocket.sent == []
    replayed = TwilioCallerProtocol(custom_parameters=other.custom_parameters, call_sid="CA" + "0" * 32)
    websocket = FakeTwilioSocket(_valid_call(replayed))  # the token was spent on the refused stream
    await _serve(runtime, websocket)
    assert websocket.close_code == 1008 and "token" in websocket.close_reason
    assert counted()["calls"] == 0


@pytest.mark.anyio
async def test_a_stream_beyond_the_phone_budget_is_refused(tmp_path: Path) -> None:
    small = _runtime(tmp_path, max_calls=1)
    ticket = small.admission.admit("twilio")
    websocket = FakeTwilioSocket(_valid_call(_caller(small)))
    await _serve(small, websocket)
    assert (websocket.close_code, websocket.close_reason) == (1013, "at capacity")
    assert websocket.sent == []
    assert ticket is not None
    ticket.release()
    websocket = FakeTwilioSocket(_valid_call(_caller(small)))
    await _serve(small, websocket)
    assert websocket.close_code == 1000 and small.admission.active == 0


@pytest.mark.anyio
async def test_garbage_mid_call_ends_that_call_with_the_reason(runtime: Runtime,
                                                               counted: Callable[[], dict[str, Any]]) -> None:
    caller = _caller(runtime)
    messages = _valid_call(caller, 3)
    messages.insert(4, json.dumps({"event": "media", "streamSid": "x", "media": {"payload": "%%%"}}))
    websocket = FakeTwilioSocket(messages)
    assert not await _serve(runtime, websocket)
    assert websocket.close_code == 1008 and websocket.close_reason.startswith("protocol_error: ")
    assert counted() == {"calls": 1, "errors": {"protocol_error": 1}, "incidents": {}}


@pytest.mark.anyio
async def test_a_broken_stage_ends_the_call_after_an_apology_in_the_local_voice(
        runtime: Runtime, counted: Callable[[], dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StandInStack, "greeting", "fail")
    caller = _caller(runtime)
    websocket = FakeTwilioSocket([caller.connected(), caller.start()], caller=caller, stay_open=True)
    assert not await _serve(runtime, websocket)
    apology = b"".join(event.payload for event in map(caller.receive, websocket.sent)
                       if isinstance(event, ServerMedia))
    assert len(apology) > 8000 * 0.5  # "Sorry, a problem. Goodbye." in espeak-ng at 8 kHz
    assert websocket.events()[0] == "clear" and websocket.events()[-1] == "mark"
    assert websocket.close_code == 1011
    assert websocket.close_reason == "internal_error: RuntimeError: the voice broke"
    assert counted() == {"calls": 1, "errors": {"internal_error": 1}, "incidents": {"stage_failed": 1}}


@pytest.mark.anyio
async def test_a_broken_call_is_put_through_to_the_agents_number(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StandInStack, "greeting", "fail")
    caller = _caller(_runtime(tmp_path))  # for its SIDs
    async with FakeTwilio(caller.account_sid, "t0ken", calls=[caller.call_sid]) as twilio:
        runtime = _runtime(tmp_path, twilio_account_sid=twilio.account_sid, twilio_api_url=twilio.url)
        caller = TwilioCallerProtocol(call_sid=caller.call_sid, account_sid=caller.account_sid)
        token = runtime.tokens.mint(caller.call_sid, "+15555550123", "desk")
        assert token is not None
        caller.custom_parameters = {"call_token": token}
        websocket = FakeTwilioSocket([caller.connected(), caller.start()], caller=caller, stay_open=True)
        assert not await _serve(runtime, websocket)
    (update,) = twilio.updates
    assert update.call_sid == caller.call_sid and "<Dial><Number>+14155550100</Number></Dial>" in update.twiml
    assert websocket.close_code == 1011  # Twilio leaves the stream for the Dial; ours ends with the reason


def _mutate(message: str, data: st.DataObject) -> str | bytes:
    choice = data.draw(st.integers(0, 4))
    if choice == 0:
        return message[: data.draw(st.integers(0, len(message)))]
    if choice == 1 and message.startswith("{"):
        parsed = json.loads(message)
        key = data.draw(st.sampled_from(sorted(parsed)))
        parsed[key] = data.draw(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers())))
        return json.dumps(parsed)
    if choice == 2:
        return data.draw(st.binary(max_size=64))
    if choice == 3:
        return base64.b64encode(data.draw(st.binary(max_size=32))).decode()
    return data.draw(st.text(max_size=64))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_mutations_never_crash_or_leak(runtime: Runtime, data: st.DataObject) -> None:
    caller = _caller(runtime)
    messages = _valid_call(caller, 4)
    valid = list(messages)
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(messages) - 1))
        messages[index] = _mutate(str(valid[index]), data)
    before = runtime.metrics.snapshot()

    async def scenario() -> None:
        websocket = FakeTwilioSocket(messages)
        leftover = await _serve(runtime, websocket)
        assert websocket.close_code in (1000, 1008)  # a normal end or the peer's fault, never ours
        assert not leftover

    anyio.run(scenario)
    after = runtime.metrics.snapshot()
    assert after["calls_total"] - before["calls_total"] <= 1
    assert after["errors"].get("internal_error", 0) == before["errors"].get("internal_error", 0)
    assert runtime.admission.active == 0 and runtime.calls == {}


# -- abuse: a stream bound to its webhook, paced, timed out; silent sockets give way ---------------------


class _Peer:
    host = "198.51.100.7"
    port = 40000


def _bound_caller(runtime: Runtime, **sids: Any) -> TwilioCallerProtocol:
    """A caller whose webhook announced its account too (as /twiml does)."""
    caller = TwilioCallerProtocol(**sids)
    token = runtime.tokens.mint(caller.call_sid, "+15555550123", "default", account_sid=caller.account_sid)
    caller.custom_parameters = {"call_token": str(token), "caller": "+15555550123", "agent": "default"}
    return caller


@pytest.mark.anyio
@pytest.mark.parametrize(("change", "complaint"), [
    ({"account_sid": "AC" + "f" * 32}, "accountSid"),
    ({"caller": "+19005550199"}, "caller"),
    ({"stream_sid": "MZ\r\nforged log line"}, "streamSid"),
])
async def test_a_start_that_differs_from_the_webhook_is_refused(
        runtime: Runtime, counted: Callable[[], dict[str, Any]], change: dict[str, str], complaint: str) -> None:
    caller = _bound_caller(runtime)
    if "caller" in change:
        caller.custom_parameters["caller"] = change["caller"]
    else:
        caller = TwilioCallerProtocol(custom_parameters=caller.custom_parameters, call_sid=caller.call_sid,
                                      account_sid=change.get("account_sid", caller.account_sid),
                                      stream_sid=change.get("stream_sid"))
    websocket = FakeTwilioSocket(_valid_call(caller))
    await _serve(runtime, websocket)
    assert websocket.close_code == 1008 and complaint in websocket.close_reason and websocket.sent == []
    assert counted()["calls"] == 0


@pytest.mark.anyio
async def test_a_second_stream_for_a_live_call_is_refused(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    first = _bound_caller(runtime)
    live = FakeTwilioSocket([first.connected(), first.start()], caller=first, stay_open=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_twilio_stream, cast(Any, live), runtime)
        for _ in range(1000):  # until the first stream's call is live
            if first.call_sid in runtime.calls:
                break
            await anyio.sleep(0.01)
        second = _bound_caller(runtime, call_sid=first.call_sid, account_sid=first.account_sid)
        intruder = FakeTwilioSocket(_valid_call(second))
        await _serve(runtime, intruder)
        assert intruder.close_code == 1008 and "live stream" in intruder.close_reason
        assert list(runtime.calls) == [first.call_sid] and runtime.admission.counts == {"twilio": 1}
        live.push(first.stop())
    assert live.close_code == 1000 and runtime.admission.active == 0


@pytest.mark.anyio
async def test_a_started_call_that_goes_silent_ends_on_the_media_timeout(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, media_timeout_s=0.5)
    caller = _bound_caller(runtime)
    websocket = FakeTwilioSocket([caller.connected(), caller.start(), caller.media(b"\xff" * 160)], caller=caller,
                                 stay_open=True)  # then nothing: a silent or half-open peer
    started = time.monotonic()
    assert not await _serve(runtime, websocket)
    assert (websocket.close_code, websocket.close_reason) == (1000, "media_timeout")
    assert time.monotonic() - started < 5
    assert runtime.admission.active == 0 and runtime.calls == {}


@pytest.mark.anyio
async def test_media_far_faster_than_real_time_is_dropped_then_the_call_closed(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    caller = _bound_caller(runtime)
    opening = [caller.connected(), caller.start()]
    flood = [caller.media(b"\xff" * 160) for _ in range(2000)]  # 40 s of audio at once
    websocket = FakeTwilioSocket([*opening, *flood], stay_open=True)
    await _serve(runtime, websocket)
    assert websocket.close_code == 1008 and "faster than real time" in websocket.close_reason
    metrics = runtime.metrics.render()[0].decode()
    dropped = re.search(r'^aybiza_media_dropped_frames_total\{transport="twilio"\} (\S+)$', metrics, re.M)
    assert dropped is not None and float(dropped.group(1)) > 250  # the burst allowance passed, the rest did not
    assert runtime.admission.active == 0


@pytest.mark.anyio
async def test_sockets_that_never_start_give_way_to_newer_ones(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, max_pending_streams_per_ip=2)
    silent = []
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            websocket = FakeTwilioSocket([TwilioCallerProtocol().connected()], stay_open=True)
            websocket.client = _Peer()  # type: ignore[assignment]
            silent.append(websocket)
            tg.start_soon(serve_twilio_stream, cast(Any, websocket), runtime)
            await anyio.sleep(0.01)
        assert runtime.admission.waiting == 2
        assert [w.close_code for w in silent[:3]] == [1013] * 3
        assert "waiting" in silent[0].close_reason
        caller = _bound_caller(runtime)  # a real call from the same address still gets in
        real = FakeTwilioSocket(_valid_call(caller))
        real.client = _Peer()  # type: ignore[assignment]
        await serve_twilio_stream(real, runtime)  # type: ignore[arg-type]
        assert real.close_code == 1000
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_streams_parameters_reach_the_record_few_short_and_printable(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    caller = _bound_caller(runtime)
    caller.custom_parameters |= {"note\n": "x\r\ny" * 10_000, **{f"p{n}": "v" for n in range(40)}}
    seen: list[dict[str, str]] = []
    original = runtime.call_started

    def started(ctx: CallContext) -> None:
        seen.append(dict(ctx.custom))
        original(ctx)

    runtime.call_started = started  # type: ignore[method-assign]
    websocket = FakeTwilioSocket(_valid_call(caller))
    await _serve(runtime, websocket)
    assert websocket.close_code == 1000
    (custom,) = seen
    assert len(custom) <= 16 and "call_token" not in custom and custom["caller"] == "+15555550123"
    assert all(len(v) <= 256 and "\n" not in v and "\r" not in v for v in custom.values())
    assert "note" in custom and "\n" not in "".join(custom)
