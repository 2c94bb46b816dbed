"""A call's tools: what the model is offered, and a round of calls run to results, on the record.

:class:`Toolbox` is the call's :class:`~aybiza.processors.llm.tooling.ToolRunner`.
It offers the model the agent's HTTP tools and the built-ins this call can
actually perform (a transfer only where the transport has call control; a
browser call has none), checks each call's arguments against its schema,
and runs a round:

* every call is put on the ledger first (so a turn that used a tool is never
  cached), then what the model said so far is flushed to the voice;
* lookups (HTTP tools, ``faq_lookup``) run concurrently; built-ins that talk
  to the caller or act on the call run after them, one at a time, in order;
* a lookup round still running after ``filler_after_s`` (about a second)
  gets one short filler line (``agent.filler``), once per turn;
* every failure — bad arguments, an unknown tool, a timeout, an HTTP error, a
  call-control error, a bug in a tool — becomes an error *result* the model
  reads and explains; only a transfer or hang-up that happened
  (:class:`~aybiza.errors.CallEnded`) and cancellation (the call ending) leave
  it as exceptions.

The built-ins act through :class:`CallActions`, which the call's session
provides: waiting until the caller heard a line, transferring (cold, or warm
with a brief and a conference), ending the call, and playing audio (DTMF
tones). Digit collection runs here: while it waits, the call's
``collecting_digits`` flag is up (a recorder pauses on it) and the caller's
keys and words go to it; the digits typed become secrets of the call's
ledger, masked in everything written about the call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn, Protocol

import anyio
import httpx

from ..agents import FAQ, AgentConfig
from ..errors import CallEnded, ProviderError
from ..pipeline import CallContext, ToolUse
from ..processors.llm.tooling import ToolCall, ToolResult, ToolSchema, ToolTurn
from .digits import DigitCollection
from .http import ToolFailed, ToolTimedOut, call_http_tool
from .schema import problems
from .specs import BuiltinToolSpec, HttpToolSpec
from .tones import dtmf_tones

__all__ = ["BUILTIN_DESCRIPTIONS", "CallActions", "FAQLookup", "Toolbox"]


class CallActions(Protocol):
    """What the call's session does for the built-ins (:class:`aybiza.session.actions.SessionActions`)."""

    @property
    def can_transfer(self) -> bool:
        """Whether the call can be handed to a person (call control at the provider)."""
        ...

    async def played(self, turn_id: int, barge_ins: int, utterances: int) -> None:
        """Return once the caller heard ``utterances`` of the turn ended after the ``barge_ins``-th barge-in.

        A later barge-in releases the wait (what the caller heard, they heard).
        """
        ...

    async def transfer(self, target: str) -> NoReturn:
        """Hand the call to ``target``: raises ``CallEnded(TRANSFERRED)``, or ProviderError when it failed."""
        ...

    async def warm_transfer(self, target: str, brief: str, *, ring_s: float) -> str:
        """Brief ``target`` and bridge them in (raises ``CallEnded(TRANSFERRED)``); else why it did not happen."""
        ...

    async def end_call(self, detail: str) -> NoReturn:
        """End the call (raises ``CallEnded(AGENT_ENDED)``)."""
        ...

    async def play(self, pcm: bytes, sample_rate: int) -> None:
        """Play audio to the caller now; return once it was heard."""
        ...


class FAQLookup(Protocol):
    """The agent's FAQ matcher (:class:`aybiza.processors.llm.faq.FAQMatcher`)."""

    def match(self, text: str) -> tuple[FAQ | None, float]:
        """The closest FAQ and its score (None below the threshold)."""
        ...


BUILTIN_DESCRIPTIONS: dict[str, str] = {
    "transfer": "Transfer the caller to a person. Use it when the caller asks for a person, or when you cannot "
                "help. Say a short handoff line first; after this tool the call leaves you.",
    "warm_transfer": "Put the caller on hold, brief a colleague about the call, then connect them. Give the "
                     "colleague a one or two sentence summary of who is calling and what they need.",
    "end_call": "Hang up, after saying goodbye, when the caller has nothing more to ask.",
    "collect_digits": "Ask the caller to type a number on their phone keypad (an account number, a PIN, a date) "
                      "and get the digits. Prefer it to asking for numbers aloud. Typed digits are never shown "
                      "in the transcript.",
    "send_digits": "Press keys on the phone line, to get through another company's phone menu. Keys 0-9, * and #; "
                   "w waits half a second.",
    "faq_lookup": "Look up the answer to the caller's question in the business's FAQ. Returns the answer, or "
                  "null when the FAQ does not cover it.",
}
"""What the model is told each built-in does (an agent's ``description`` replaces it)."""


def _parameters(spec: BuiltinToolSpec) -> dict[str, Any]:
    string = {"type": "string"}
    if spec.builtin == "transfer":
        return {"type": "object", "properties": {"reason": {**string, "description": "why, in a few words"}}}
    if spec.builtin == "warm_transfer":
        return {"type": "object", "required": ["summary"], "properties": {
            "summary": {**string, "description": "what the colleague needs to know, one or two sentences"}}}
    if spec.builtin == "collect_digits":
        return {"type": "object", "properties": {
            "prompt": {**string, "description": "what to ask the caller to type, e.g. 'Please type your account "
                                                "number, then press the hash key.'"},
            "max_digits": {"type": "integer", "minimum": 1, "maximum": spec.max_digits}}}
    if spec.builtin == "send_digits":
        return {"type": "object", "required": ["digits"], "properties": {
            "digits": {**string, "pattern": "^[0-9*#A-Dw]{1,32}$"}}}
    if spec.builtin == "faq_lookup":
        return {"type": "object", "required": ["question"], "properties": {"question": string}}
    return {"type": "object", "properties": {}}


_INTERACTIVE = frozenset({"transfer", "warm_transfer", "end_call", "collect_digits", "send_digits"})
_NEEDS_TRANSFER = frozenset({"transfer", "warm_transfer"})


class Toolbox:
    """The tools of one call (an agent's, minus what this call cannot do)."""

    def __init__(
        self,
        ctx: CallContext,
        agent: AgentConfig,
        *,
        actions: CallActions | None = None,
        secret: Callable[[str], str | None] = lambda name: None,
        faq: Callable[[], FAQLookup] | None = None,
        filler_after_s: float = 1.0,
    ) -> None:
        self.ctx = ctx
        self.agent = agent
        self.actions = actions
        self.filler_after_s = filler_after_s
        self._secret = secret
        self._faq_factory = faq
        self._faq: FAQLookup | None = None
        self._http: httpx.AsyncClient | None = None
        self._collection: DigitCollection | None = None
        self._fillers: set[int] = set()  # turns that had their filler
        self._tools: dict[str, HttpToolSpec | BuiltinToolSpec] = {
            tool.name: tool for tool in agent.tools if self._offered(tool)}
        self._schemas = tuple(self._schema(tool) for tool in self._tools.values())

    def _offered(self, tool: HttpToolSpec | BuiltinToolSpec) -> bool:
        if isinstance(tool, HttpToolSpec):
            return True
        if tool.builtin == "faq_lookup":
            return self._faq_factory is not None and bool(self.agent.faqs)
        if self.actions is None:
            return False
        return tool.builtin not in _NEEDS_TRANSFER or self.actions.can_transfer

    @staticmethod
    def _schema(tool: HttpToolSpec | BuiltinToolSpec) -> ToolSchema:
        if isinstance(tool, HttpToolSpec):
            return ToolSchema(tool.name, tool.description, tool.parameters)
        return ToolSchema(tool.name, tool.description or BUILTIN_DESCRIPTIONS[tool.builtin], _parameters(tool))

    # -- the ToolRunner contract ---------------------------------------------------------

    @property
    def schemas(self) -> tuple[ToolSchema, ...]:
        """The tools offered to the model on this call."""
        return self._schemas

    @property
    def wants_speech(self) -> bool:
        """Digits are being collected: the caller's words answer the collection."""
        return self._collection is not None

    def hear(self, text: str) -> None:
        """The caller spoke while digits were collected."""
        if self._collection is not None:
            self._collection.speech(text)

    def key(self, digit: str) -> None:
        """A key pressed: for the collection in progress, if any."""
        if self._collection is not None:
            self._collection.key(digit)

    async def run(self, calls: Sequence[ToolCall], turn: ToolTurn) -> list[ToolResult]:
        """A round of calls, one result each in order (see the module docstring)."""
        ledger = self.ctx.ledger
        uses = [ledger.tool_started(turn.turn_id, call.name, self._kind(call.name), call.arguments) for call in calls]
        await turn.finish()  # what the model said before calling is spoken now, not after the tools
        results: list[ToolResult | None] = [None] * len(calls)

        async def one(index: int) -> None:
            results[index] = await self._call(calls[index], uses[index], turn)

        lookups = [i for i, call in enumerate(calls) if self._kind(call.name) not in _INTERACTIVE]
        fill = any(self._fills(calls[i].name) for i in lookups)
        async with anyio.create_task_group() as outer:
            if fill and turn.turn_id not in self._fillers:
                outer.start_soon(self._filler, turn)
            async with anyio.create_task_group() as tg:
                for index in lookups:
                    tg.start_soon(one, index)
            outer.cancel_scope.cancel()
        for index in range(len(calls)):
            if results[index] is None:
                await one(index)
        return [result for result in results if result is not None]

    async def act(self, action: str, turn: ToolTurn, lines: Sequence[str] = ()) -> ToolResult:
        """An FAQ's action: ``lines`` said first, then the built-in (an error result when it cannot run here)."""
        call = ToolCall(f"action-{action}", action)
        use = self.ctx.ledger.tool_started(turn.turn_id, action, "action", {})
        declared = self.agent.tool(action)
        spec = declared if isinstance(declared, BuiltinToolSpec) else BuiltinToolSpec(builtin=action)  # type: ignore[arg-type]
        if self.actions is None or (action in _NEEDS_TRANSFER and not self.actions.can_transfer):
            return self._failed(call, use, "this call cannot be transferred")
        for line in lines:
            await turn.say(line)
        return await self._call(call, use, turn, spec=spec)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- one call -----------------------------------------------------------------------

    def _kind(self, name: str) -> str:
        tool = self._tools.get(name)
        if isinstance(tool, BuiltinToolSpec):
            return tool.builtin
        return "http" if tool is not None else "unknown"

    def _fills(self, name: str) -> bool:
        """Whether a slow call of this lookup deserves the filler line."""
        tool = self._tools.get(name)
        if isinstance(tool, HttpToolSpec):
            return tool.filler
        return isinstance(tool, BuiltinToolSpec)  # faq_lookup (the interactive ones never come here)

    async def _filler(self, turn: ToolTurn) -> None:
        await anyio.sleep(self.filler_after_s)
        self._fillers.add(turn.turn_id)
        with anyio.CancelScope(shield=True):  # a line is said whole or not at all
            await turn.say(self.agent.filler)

    async def _call(self, call: ToolCall, use: ToolUse, turn: ToolTurn,
                    spec: HttpToolSpec | BuiltinToolSpec | None = None) -> ToolResult:
        tool = spec or self._tools.get(call.name)
        if tool is None:
            return self._failed(call, use, f"there is no tool called {call.name!r}")
        if call.problem:
            return self._failed(call, use, call.problem)
        schema = tool.parameters if isinstance(tool, HttpToolSpec) else _parameters(tool)
        wrong = problems(dict(call.arguments), schema)
        if wrong:
            return self._failed(call, use, "; ".join(wrong))
        ledger, log = self.ctx.ledger, self.ctx.log
        try:
            if isinstance(tool, HttpToolSpec):
                secret = self._secret(tool.auth.secret) if tool.auth is not None else None
                content = await call_http_tool(tool, call.arguments, self._client(), secret=secret)
            else:
                content = await self._builtin(tool, call.arguments, turn)
        except CallEnded as ended:
            ledger.tool_ended(use, "ok", result={"call": ended.reason.value})
            raise
        except ToolTimedOut as error:
            return self._failed(call, use, str(error), outcome="timeout")
        except ToolFailed as error:
            return self._failed(call, use, str(error))
        except ProviderError as error:
            return self._failed(call, use, f"{type(error).__name__}: {error}")
        except anyio.get_cancelled_exc_class():
            ledger.tool_ended(use, "cancelled")
            raise
        except Exception as error:  # a bug in a tool is the model's error result, never the call's crash
            log.error("tool %s raised %s", call.name, type(error).__name__, exc_info=error)
            return self._failed(call, use, "the tool failed unexpectedly")
        ledger.tool_ended(use, "ok", result=content)
        log.info("tool %s: ok in %.0f ms", call.name, use.duration_ms or 0.0)
        return ToolResult(call.call_id, call.name, content)

    def _failed(self, call: ToolCall, use: ToolUse, message: str, outcome: str = "error") -> ToolResult:
        self.ctx.ledger.tool_ended(use, "timeout" if outcome == "timeout" else "error", error=message)
        self.ctx.log.info("tool %s: %s: %s", call.name, outcome, message)
        return ToolResult(call.call_id, call.name, {"error": message}, error=True)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        return self._http

    # -- the built-ins -----------------------------------------------------------------------

    def _require_actions(self) -> CallActions:
        if self.actions is None:
            raise ToolFailed("this call has no call control")
        return self.actions

    async def _builtin(self, tool: BuiltinToolSpec, arguments: Mapping[str, Any], turn: ToolTurn) -> dict[str, Any]:
        handler: dict[str, Callable[[BuiltinToolSpec, Mapping[str, Any], ToolTurn], Awaitable[dict[str, Any]]]] = {
            "transfer": self._transfer, "warm_transfer": self._warm_transfer, "end_call": self._end_call,
            "collect_digits": self._collect_digits, "send_digits": self._send_digits, "faq_lookup": self._faq_lookup,
        }
        return await handler[tool.builtin](tool, arguments, turn)

    async def _heard(self, turn: ToolTurn) -> None:
        await turn.finish()
        barge_ins, utterances = turn.progress()
        await self._require_actions().played(turn.turn_id, barge_ins, utterances)

    async def _transfer(self, tool: BuiltinToolSpec, arguments: Mapping[str, Any], turn: ToolTurn) -> dict[str, Any]:
        actions = self._require_actions()
        target = tool.target or self.agent.transfer_to
        if target is None or not actions.can_transfer:
            raise ToolFailed("this call cannot be transferred")
        if not turn.spoken():
            await turn.say(self.agent.handoff)
        await self._heard(turn)
        await actions.transfer(target)

    async def _warm_transfer(self, tool: BuiltinToolSpec, arguments: Mapping[str, Any],
                             turn: ToolTurn) -> dict[str, Any]:
        actions = self._require_actions()
        target = tool.target or self.agent.transfer_to
        if target is None or not actions.can_transfer:
            raise ToolFailed("this call cannot be transferred")
        await turn.say(self.agent.hold)
        await self._heard(turn)
        brief = str(arguments.get("summary") or f"A caller to {self.agent.name} asked to speak to someone.")
        why = await actions.warm_transfer(target, brief, ring_s=tool.ring_s)
        raise ToolFailed(f"the transfer did not happen: {why}; the caller is still with you")

    async def _end_call(self, tool: BuiltinToolSpec, arguments: Mapping[str, Any], turn: ToolTurn) -> dict[str, Any]:
        actions = self._require_actions()
        if not turn.spoken():
            await turn.say(self.agent.goodbye)
        await self._heard(turn)
        await actions.end_call("the agent ended the call")

    async def _send_digits(self, tool: BuiltinToolSpec, arguments: Mapping[str, Any],
                           turn: ToolTurn) -> dict[str, Any]:
        digits = str(arguments["digits"])
        await self._heard(turn)
        rate = 8000
        await self._require_actions().play(dtmf_tones(digits, rate), rate)
        return {"sent": digits}

    async def _collect_digits(self, tool: BuiltinToolSpec, arguments: Mapping[str, Any],
                              turn: ToolTurn) -> dict[str, Any]:
        self._require_actions()
        prompt = arguments.get("prompt")
        if prompt:
            await turn.say(str(prompt))
        max_digits = min(int(arguments.get("max_digits") or tool.max_digits), tool.max_digits)
        ctx = self.ctx
        ctx.collecting_digits = True
        started = time.monotonic()
        collection = DigitCollection(max_digits=max_digits, terminator=tool.terminator)
        try:
            for attempt in range(tool.attempts):
                collection = DigitCollection(max_digits=max_digits, terminator=tool.terminator)
                self._collection = collection
                await collection.wait(tool.timeout_s)
                if collection.got_something:
                    break
                if attempt + 1 < tool.attempts:
                    await turn.say(self.agent.digits_retry)
        finally:
            self._collection = None
            ctx.collecting_digits = False
            ctx.log.info("digit collection ended after %.1f s", time.monotonic() - started)
        if collection.digits:
            ctx.ledger.secret(collection.digits)
        if collection.spoken is not None:
            return {"digits": collection.digits, "caller_said_instead": collection.spoken}
        if not collection.got_something:
            raise ToolFailed("the caller pressed no keys")
        return {"digits": collection.digits,
                "complete": collection.terminated or len(collection.digits) >= max_digits}

    async def _faq_lookup(self, tool: BuiltinToolSpec, arguments: Mapping[str, Any], turn: ToolTurn) -> dict[str, Any]:
        factory = self._faq_factory
        if factory is None:
            raise ToolFailed("this agent has no FAQ")
        if self._faq is None:
            self._faq = await anyio.to_thread.run_sync(factory)
        faq, score = await anyio.to_thread.run_sync(self._faq.match, str(arguments["question"]),
                                                    abandon_on_cancel=True)
        if faq is None:
            return {"answer": None, "score": round(score, 3)}
        return {"answer": faq.answer, "topic": faq.id, "score": round(score, 3)}
