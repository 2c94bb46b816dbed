"""The model stage every chat provider shares: the conversation, sentences as they come, and tool rounds.

:class:`ReplyProcessor` keeps the conversation, asks a
:class:`~aybiza.processors.llm.sentences.ReplyStreamer` (Bedrock, an
OpenAI-compatible server, or a router that fails over between regions) for a
reply to each :class:`UserTurn` on a :class:`Worker`, pushes
:class:`AgentText` sentence by sentence and then :class:`AgentTurnDone`.
Thinking text is never spoken.

**Tools.** When the model calls tools, the round's text and calls become an
assistant message, the call's :class:`~aybiza.processors.llm.tooling.ToolRunner`
runs them (one filler line if they take long; see :mod:`aybiza.tools.toolbox`),
their results become the next user message, and the model is asked again, up
to ``max_tool_rounds`` times a turn. A failing tool is an error result the
model reads and explains; it never ends the call. While a tool waits on the
caller (collecting digits), keys and words go to it instead of starting a turn.

**Barge-in during a tool: finish it and keep it.** A tool may have acted (a
booking made, a payment taken), so cancelling it would lose what happened.
An interruption while tools run drops the queued speech (the TTS and output
stages flush as usual) but not the tools: they finish, and their results go
into the history, paired with the calls. Then the turn waits for the caller:
if a new caller turn arrives, it is answered with the results in context (the
interrupted turn ends there); if the caller falls quiet without one (a cough,
"uh-huh"), the turn goes on after ``resume_after_s`` and the model speaks the
result — the agent is never left silent. An interruption outside the tool
phase cancels the reply in flight as before. The call ending cancels
everything, tools included: nothing outlives the call's task group.

A turn no provider answers (every region failed) is never silence: the
caller hears an apology and "could you say that again?" in the local voice;
after ``max_failed_turns`` such turns in a row the stage ends the call
(``EndReason.MODEL_UNAVAILABLE``) and the call's fallback (a transfer, or a
goodbye) follows. A round after a tool that fails counts the same way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from ...errors import CallEnded, EndReason, ProviderError
from ...pipeline import (
    DTMF,
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    IncidentKind,
    Interruption,
    Notice,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Stage,
    UserTurn,
    Worker,
)
from .sentences import (
    ChatMessage,
    ReplyRequest,
    ReplyStreamer,
    ReplyUsage,
    SentenceSplitter,
    TextDelta,
    normalise_messages,
)
from .tooling import ToolCall, ToolResult, ToolRunner, ToolTurn

__all__ = ["ReplyProcessor"]

_MAX_WAIT_FOR_CALLER_S = 15.0  # after an interrupted tool round: resume at the latest then


@dataclass(slots=True)
class _Turn:
    """One agent turn in progress (it may take several model rounds, so several utterances)."""

    turn_id: int
    language: str
    started: float
    said: list[str] = field(default_factory=list)
    round_said: list[str] = field(default_factory=list)
    first_token: bool = True
    answered_by: str = ""
    open: bool = False  # text pushed since the last AgentTurnDone
    ended: int = 0  # AgentTurnDone pushed for the turn
    ended_since: tuple[int, int] = (0, 0)  # (barge-ins, AgentTurnDone pushed since the last one)


class ReplyProcessor(Processor):
    """UserTurn → AgentText per sentence (tool rounds in between) → AgentTurnDone, with the conversation kept."""

    name = "llm"
    consumes = frozenset({UserTurn, Interruption, DTMF})
    produces = frozenset({AgentText, AgentTurnDone})

    def __init__(
        self,
        streamer: ReplyStreamer,
        *,
        system_prompt: str,
        history: Sequence[ChatMessage] = (),
        max_history: int = 40,
        max_sentence_chars: int = 240,
        max_failed_turns: int = 2,
        tools: ToolRunner | None = None,
        max_tool_rounds: int = 4,
        resume_after_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.streamer = streamer
        self.system_prompt = system_prompt
        self.history: list[ChatMessage] = list(history)
        self.max_history = max_history
        self.max_sentence_chars = max_sentence_chars
        self.max_failed_turns = max_failed_turns
        self.tools = tools
        self.max_tool_rounds = max_tool_rounds
        self.resume_after_s = resume_after_s
        self._failed_in_a_row = 0
        self._worker: Worker[UserTurn] = Worker(self._reply, maxsize=8)
        self._tool_phase = False
        self._interrupted_tools = False
        self._turns_seen = 0
        self._barge_ins = 0
        self._caller_speaking = False
        self._quiet_since = time.monotonic()
        # Preemptive replies (aybiza.processors.preempt): awaited before a tool runs or a failure is
        # apologised for, so that neither happens on a guess at a turn not yet confirmed.
        self.turn_gate: Callable[[int], Awaitable[None]] | None = None

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        self._worker.start(tg, name=f"{self.name}-worker")

    async def stop(self) -> None:
        await self._worker.close()
        if self.tools is not None:
            await self.tools.aclose()
        await self.streamer.aclose()

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, UserTurn):
            if self.tools is not None and self.tools.wants_speech:
                self.tools.hear(frame.text)  # the caller answered a tool (spoke instead of typing)
                return
            self._turns_seen += 1
            await self._worker.put(frame)
            return
        if isinstance(frame, Interruption):
            self._barge_ins += 1
            if self._tool_phase:
                self._interrupted_tools = True  # the tools finish; their speech is dropped
                self._worker.flush(cancel_current=False)
            else:
                self._worker.flush()
        elif isinstance(frame, DTMF):
            if self.tools is not None:
                self.tools.key(frame.digit)
        elif isinstance(frame, SpeechStarted):
            self._caller_speaking = True
        elif isinstance(frame, SpeechStopped):
            self._caller_speaking = False
            self._quiet_since = time.monotonic()
        await self.push(frame)

    @property
    def idle(self) -> bool:
        """No reply in progress or queued (a cancelled one has finished its clean-up)."""
        return not self._worker.busy and not self._worker.pending

    def _request(self, language: str) -> ReplyRequest:
        recent = self.history[-self.max_history :]
        schemas = self.tools.schemas if self.tools is not None else ()
        return ReplyRequest(self.system_prompt, tuple(normalise_messages(recent)), language, schemas)

    async def _reply(self, user: UserTurn) -> None:
        ctx = self.ctx
        assert ctx is not None, "ReplyProcessor used before start()"
        ledger = ctx.ledger
        asked_at = len(self.history)
        self.history.append(ChatMessage("user", user.text))
        turn = _Turn(user.turn_id, user.language, time.monotonic())
        try:
            for round_index in range(self.max_tool_rounds + 1):
                calls = await self._round(turn)
                if not calls:
                    break
                if round_index == self.max_tool_rounds:
                    ctx.log.warning("turn %d: the model still calls tools after %d rounds; stopping",
                                    turn.turn_id, self.max_tool_rounds)
                    break
                if self.turn_gate is not None:
                    await self.turn_gate(turn.turn_id)  # a preemptive reply: tools wait for the confirmed turn
                if not await self._run_tools(calls, turn):
                    return  # interrupted during the tools, and the caller's next turn will answer
        except ProviderError as exc:
            if self.turn_gate is not None:
                await self.turn_gate(turn.turn_id)  # a guess: no apology (nor count) before the turn is confirmed
            ledger.model_errors += 1
            ledger.incident(IncidentKind.MODEL_FAILED, f"{type(exc).__name__}: {exc}")
            ctx.log.error("%s reply failed (%s, retryable=%s): %s", self.streamer.provider, type(exc).__name__,
                          exc.retryable, exc)
            if not turn.round_said:
                self._failed_in_a_row += 1
                if self._failed_in_a_row >= self.max_failed_turns:
                    raise CallEnded(EndReason.MODEL_UNAVAILABLE,
                                    f"{self._failed_in_a_row} turns in a row got no answer: {exc}") from exc
                await ctx.announce(Notice.RETRY)
                if not turn.said and len(self.history) == asked_at + 1:
                    # The caller was asked to say it again: the question that got no answer is not kept (else
                    # the next request carries it merged with what the caller says next, and both get answered).
                    del self.history[asked_at:]
        if turn.round_said:
            self._failed_in_a_row = 0
        if turn.said:
            # The id its tokens are counted under: the usage's, or (cut short before usage came) the model asked.
            ledger.answered(turn.answered_by or self.model_id)
        if turn.open or not turn.ended:
            await self._end_utterance(turn, force=True)

    @property
    def model_id(self) -> str:
        """The model the streamer asked last (a routed streamer's changes with failover), else the provider.

        Answers and tokens of a turn are counted under this one id, so a call's
        per-model rows add up (the console's turns per model).
        """
        return str(getattr(self.streamer, "model_id", "") or self.streamer.provider)

    async def _end_utterance(self, turn: _Turn, *, force: bool = False) -> None:
        """Push ``AgentTurnDone`` for what was said since the last one (nothing said: only when forced)."""
        if not (turn.open or force):
            return
        turn.open = False
        turn.ended += 1
        barge_ins, ended = turn.ended_since
        turn.ended_since = (self._barge_ins, ended + 1 if barge_ins == self._barge_ins else 1)
        await self.push(AgentTurnDone(turn.turn_id))

    def _progress(self, turn: _Turn) -> tuple[int, int]:
        barge_ins, ended = turn.ended_since
        return (self._barge_ins, ended if barge_ins == self._barge_ins else 0)

    async def _round(self, turn: _Turn) -> list[ToolCall]:
        """Ask the model once, speaking as it streams; the tool calls it made (none: the turn's answer is done)."""
        ctx = self.ctx
        assert ctx is not None
        ledger = ctx.ledger
        request = self._request(turn.language)
        splitter = SentenceSplitter(self.max_sentence_chars)
        turn.round_said = []
        calls: list[ToolCall] = []
        complete = False
        try:
            async with aclosing(self.streamer.stream_reply(request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        if not event.text:
                            continue  # the model is writing a tool call
                        if turn.first_token:
                            turn.first_token = False
                            ledger.time(Stage.LLM_FIRST_TOKEN, time.monotonic() - turn.started)
                        for sentence in splitter.push(event.text):
                            await self._say(turn, sentence)
                    elif isinstance(event, ToolCall):
                        calls.append(event)
                    elif isinstance(event, ReplyUsage):
                        turn.answered_by = event.model_id
                        ledger.add_tokens(event.model_id, event.input_tokens, event.output_tokens)
                        if event.latency_ms is not None:
                            ledger.time(Stage.LLM_PROVIDER_LATENCY, event.latency_ms / 1000.0)
            rest = splitter.flush()
            if rest:
                await self._say(turn, rest)
            complete = True
        finally:
            text = " ".join(turn.round_said)
            kept = tuple(calls) if complete and self.tools is not None else ()
            if text or kept:
                self.history.append(ChatMessage("assistant", text, kept))
        if calls and self.tools is None:
            ctx.log.warning("the model called %s, but this agent has no tools", ", ".join(c.name for c in calls))
            return []
        return calls

    async def _say(self, turn: _Turn, sentence: str) -> None:
        ctx = self.ctx
        assert ctx is not None
        if not turn.said:
            ctx.ledger.time(Stage.LLM_FIRST_SENTENCE, time.monotonic() - turn.started)
        turn.said.append(sentence)
        turn.round_said.append(sentence)
        turn.open = True
        await self.push(AgentText(sentence, turn.turn_id, turn.language))

    async def _run_tools(self, calls: Sequence[ToolCall], turn: _Turn) -> bool:
        """Run a round of tools (not cancelled by barge-in); False when a new caller turn will answer instead."""
        assert self.tools is not None
        turns_before = self._turns_seen

        async def say(text: str) -> None:
            if not self._interrupted_tools:  # the caller is talking: no filler, no prompt over them
                turn.open = True
                await self.push(AgentText(text, turn.turn_id, turn.language))
                await self._end_utterance(turn)

        async def finish() -> None:
            await self._end_utterance(turn)

        self._tool_phase = True
        self._interrupted_tools = False
        try:
            results: list[ToolResult] = await self.tools.run(
                calls, ToolTurn(turn.turn_id, turn.language, say, finish, spoken=lambda: bool(turn.said),
                                progress=lambda: self._progress(turn)))
        finally:
            self._tool_phase = False
        self.history.append(ChatMessage("user", "", tool_results=tuple(results)))
        if self._interrupted_tools:
            self._interrupted_tools = False
            return await self._caller_done(turns_before)
        return True

    async def _caller_done(self, turns_before: int) -> bool:
        """After a barge-in during tools: False once a new caller turn arrived, True once they fell quiet."""
        deadline = time.monotonic() + _MAX_WAIT_FOR_CALLER_S
        while time.monotonic() < deadline:
            if self._turns_seen > turns_before or self._worker.pending:
                return False
            if not self._caller_speaking and time.monotonic() - self._quiet_since >= self.resume_after_s:
                return True
            await anyio.sleep(0.05)
        return True
