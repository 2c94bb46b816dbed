"""The Twilio endpoint glue: random and mutated messages end the call cleanly, never leak a task."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.websockets import WebSocketDisconnect

from aybiza.pipeline import AgentText, AgentTurnDone, CallContext, Frame, OutputAudio, Processor
from aybiza.processors.turns import TurnTaker
from aybiza.processors.vad import VADProcessor
from aybiza.testing.twilio_caller import TwilioCallerProtocol
from aybiza.transports.twilio import Started
from aybiza.transports.twilio_ws import CallSetup, serve_stream

TOKEN = "good-token"


class FakeWebSocket:
    """Just enough of Starlette's WebSocket: scripted incoming messages, recorded outgoing ones."""

    def __init__(self, incoming: list[str | bytes]) -> None:
        self.incoming = list(incoming)
        self.sent: list[str] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.headers: dict[str, str] = {}

    async def accept(self) -> None:
        return None

    async def receive(self) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        if not self.incoming:
            return {"type": "websocket.disconnect", "code": 1000}
        message = self.incoming.pop(0)
        if isinstance(message, bytes):
            return {"type": "websocket.receive", "bytes": message}
        return {"type": "websocket.receive", "text": message}

    async def send_text(self, text: str) -> None:
        if self.close_code is not None:
            raise WebSocketDisconnect(1000)
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_code, self.close_reason = code, reason


class Speaker(Processor):
    """A stand-in agent voice: answers every AgentText with a little audio."""

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, AgentText):
            await self.push(OutputAudio(b"\x10\x00" * 1600, 16000, frame.turn_id, 0.0))
            return
        await self.push(frame)


def _setup(ended: list[str]) -> CallSetup:
    async def build(ctx: CallContext, started: Started) -> tuple[list[Processor], list[Frame]]:
        return [VADProcessor(), TurnTaker(), Speaker()], [AgentText("hello", 0), AgentTurnDone(0)]

    async def on_end(ctx: CallContext, reason: str) -> None:
        ended.append(reason)

    return CallSetup(
        check_token=lambda custom: custom.get("call_token") == TOKEN,
        build=build,
        context=lambda started: CallContext(call_id=started.call_sid),
        on_end=on_end,
        start_timeout_s=2.0,
    )


def _valid_call(frames: int = 5) -> list[str]:
    caller = TwilioCallerProtocol(custom_parameters={"call_token": TOKEN})
    messages = [caller.connected(), caller.start()]
    messages += [caller.media(b"\xff" * 160) for _ in range(frames)]
    messages += [caller.dtmf("5"), caller.stop()]
    return messages


async def _serve(messages: list[str | bytes]) -> tuple[FakeWebSocket, list[str], set[asyncio.Task[Any]]]:
    """Serve one scripted stream; also return the tasks it left behind."""
    before = asyncio.all_tasks()
    ended: list[str] = []
    websocket = FakeWebSocket(messages)
    await serve_stream(websocket, _setup(ended))  # type: ignore[arg-type]
    await anyio.lowlevel.checkpoint()
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    return websocket, ended, leftover


@pytest.mark.anyio
async def test_a_valid_call_greets_marks_and_ends_normally() -> None:
    websocket, ended, leftover = await _serve(list(_valid_call()))
    events = [json.loads(m)["event"] for m in websocket.sent]
    assert "media" in events and "mark" in events
    assert ended == ["stopped"] and websocket.close_code == 1000
    assert not leftover


@pytest.mark.anyio
async def test_a_bad_token_refuses_the_stream_before_any_pipeline() -> None:
    caller = TwilioCallerProtocol(custom_parameters={"call_token": "forged"})
    websocket, ended, leftover = await _serve([caller.connected(), caller.start()])
    assert websocket.close_code == 1008 and "token" in websocket.close_reason
    assert ended == [] and websocket.sent == []


@pytest.mark.anyio
async def test_garbage_mid_call_ends_that_call_with_the_reason() -> None:
    messages: list[str | bytes] = list(_valid_call(3))
    messages.insert(4, json.dumps({"event": "media", "streamSid": "x", "media": {"payload": "%%%"}}))
    websocket, ended, leftover = await _serve(messages)
    assert websocket.close_code == 1008
    assert ended and ended[0].startswith("protocol:")
    assert not leftover


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
def test_random_mutations_never_crash_or_leak(data: st.DataObject) -> None:
    messages: list[str | bytes] = list(_valid_call(4))
    valid = list(messages)
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(messages) - 1))
        messages[index] = _mutate(str(valid[index]), data)

    async def scenario() -> None:
        websocket, ended, leftover = await _serve(messages)
        assert websocket.close_code in (1000, 1008)
        assert len(ended) <= 1
        assert not leftover

    anyio.run(scenario)
