"""Tool calls as the model stages see them: what a model may call, what it asked for, what came back.

Provider-neutral values (no SDK types): a :class:`ToolSchema` is offered to
the model (name, description, JSON-schema parameters); the model's stream
yields a :class:`ToolCall` once a call's arguments are complete; the
:class:`ToolRunner` (the call's toolbox, :mod:`aybiza.tools.toolbox`) runs a
round of calls and returns one :class:`ToolResult` per call, failures
included — a tool that fails is an error *result* for the model, never an
exception for the call.

Providers stream a call's arguments as JSON text in pieces (Bedrock's
``contentBlockDelta.delta.toolUse.input``, OpenAI's
``delta.tool_calls[].function.arguments``); :class:`ToolCallAssembler` joins
the pieces per block and parses them when the block ends.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ToolCall",
    "ToolCallAssembler",
    "ToolResult",
    "ToolRunner",
    "ToolSchema",
    "ToolTurn",
]


@dataclass(frozen=True, slots=True)
class ToolSchema:
    """A tool the model may call: its name, what it does, and its arguments as a JSON schema object."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for ``name`` with ``arguments``; ``problem`` says why the arguments are unusable."""

    call_id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    problem: str = ""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one call returned (``content``, a JSON object), or why it failed (``error``)."""

    call_id: str
    name: str
    content: Mapping[str, Any] = field(default_factory=dict)
    error: bool = False

    def text(self) -> str:
        """The content as compact JSON (what text-only wires, such as OpenAI's ``tool`` message, carry)."""
        return json.dumps(self.content, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass(slots=True)
class _Pending:
    call_id: str
    name: str
    pieces: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Joins streamed argument pieces per content block (by index) into complete tool calls."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[int, _Pending] = {}

    @property
    def open(self) -> bool:
        """Whether a call has started and is not complete yet."""
        return bool(self._pending)

    def start(self, index: int, call_id: str, name: str) -> None:
        """A call begins in block ``index`` (a later start with the same index adds what was missing)."""
        pending = self._pending.get(index)
        if pending is None:
            self._pending[index] = _Pending(call_id, name)
        else:
            pending.call_id = pending.call_id or call_id
            pending.name = pending.name or name

    def add(self, index: int, piece: str) -> None:
        """More of block ``index``'s arguments (JSON text)."""
        if piece:
            self._pending.setdefault(index, _Pending("", "")).pieces.append(piece)

    def finish(self, index: int) -> ToolCall | None:
        """Block ``index`` ended: its call, or None when the block was not a tool call."""
        pending = self._pending.pop(index, None)
        if pending is None:
            return None
        return _parsed(pending, index)

    def finish_all(self) -> list[ToolCall]:
        """Every call still open, in block order (OpenAI ends them all with ``finish_reason``)."""
        calls = [_parsed(self._pending[index], index) for index in sorted(self._pending)]
        self._pending.clear()
        return calls


def _parsed(pending: _Pending, index: int) -> ToolCall:
    call_id = pending.call_id or f"call_{index}"  # some servers (older Ollama) send no id
    raw = "".join(pending.pieces).strip()
    if not raw:
        return ToolCall(call_id, pending.name, {})
    try:
        arguments = json.loads(raw)
    except ValueError:
        return ToolCall(call_id, pending.name, {}, problem=f"the arguments are not valid JSON: {raw[:200]}")
    if not isinstance(arguments, dict):
        return ToolCall(call_id, pending.name, {}, problem="the arguments must be a JSON object")
    return ToolCall(call_id, pending.name, arguments)


@dataclass(frozen=True, slots=True)
class ToolTurn:
    """The agent turn a round of tools runs in, and how a tool speaks in it.

    ``say`` speaks a complete line now (a filler, a prompt for digits, a
    handoff: its ``AgentText`` and an ``AgentTurnDone``, so a voice that
    buffers until the end of a turn speaks it at once); ``finish`` ends what
    the model said so far the same way (nothing if it said nothing since);
    ``spoken`` says whether the model said anything in the turn;
    ``progress`` is what an action that must be heard first (a transfer)
    waits for: ``(barge-ins so far, utterances of the turn ended since the
    last one)`` — a barge-in drops the utterances queued before it.
    """

    turn_id: int
    language: str
    say: Callable[[str], Awaitable[None]]
    finish: Callable[[], Awaitable[None]]
    spoken: Callable[[], bool] = lambda: False
    progress: Callable[[], tuple[int, int]] = lambda: (0, 0)


class ToolRunner(Protocol):
    """The call's tools: what the model is offered, and a round of calls run to results."""

    @property
    def schemas(self) -> tuple[ToolSchema, ...]:
        """The tools offered to the model."""
        ...

    @property
    def wants_speech(self) -> bool:
        """Whether a tool is waiting on the caller (collecting digits): their next words answer it."""
        ...

    def hear(self, text: str) -> None:
        """The caller said ``text`` while a tool waits on them."""
        ...

    def key(self, digit: str) -> None:
        """The caller pressed a key."""
        ...

    async def run(self, calls: Sequence[ToolCall], turn: ToolTurn) -> list[ToolResult]:
        """Run a round of calls; one result per call, in order, failures as error results."""
        ...

    async def act(self, action: str, turn: ToolTurn, lines: Sequence[str] = ()) -> ToolResult:
        """Run a built-in action bound outside the model (an FAQ's ``action``), saying ``lines`` first.

        When the action cannot run on this call, nothing is said and the result is an error.
        """
        ...

    async def aclose(self) -> None:
        """Release what the tools hold (HTTP connections)."""
        ...
