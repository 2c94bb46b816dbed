"""One call from admission to archive, the same way for every transport.

A transport (Twilio Media Streams, WebRTC) supplies its input pump, its
output stage and, for phones, call control; :class:`CallSession` does
everything else, in this order:

1. **agent** — the agent's configuration, read through the agent-config
   cache (an edit is picked up within its TTL; a broken edit keeps the last
   good configuration);
2. **language prior** — from the call's parameters, the caller's number or
   country: every stage starts listening and speaking in it;
3. **route** — region, fallbacks and model tier, before anything runs (a
   refusal, such as a residency that cannot be met, ends the call here);
4. **record** — the call's durable record is opened (or a call live in
   another process is taken over, with its conversation);
5. **stack** — the call's stages, checked for wiring;
6. **run** — one task group for the call, until the caller hangs up or a
   stage ends it;
7. **end** — a typed :class:`~aybiza.errors.EndReason`; on any failure the
   caller first hears an apology in the local voice and the agent's fallback
   (a transfer to a person when the agent has a number and the transport can
   transfer, else a goodbye);
8. **price and archive** — the ledger is priced, the metrics are told, the
   record is committed durably before the connection closes.

Stages ask for an announcement in the local voice through ``ctx.announce``
when a fallback took over (the apology) or a turn got no answer (the apology
and "could you say that again?"). The agent's tools act on the call through
its :class:`~aybiza.session.actions.SessionActions` (transfer, hang up, play
tones, wait until a line was heard); a call the agent transferred or hung up
ends with that reason even when the provider's ``stop`` arrives first.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from ..agents import AgentConfig
from ..edge.state import CallFenced, CallStateError
from ..errors import AuthError, AybizaError, CallEnded, ConfigError, EndReason, ProtocolError
from ..outbound.gate import with_amd_gate
from ..pipeline import (
    AgentTurnDone,
    CallLedger,
    EndOfCall,
    Frame,
    IncidentKind,
    Interruption,
    Notice,
    OutputAudio,
    Pipeline,
    Processor,
    check_wiring,
)
from ..processors.language import prior_language
from ..recording.call import CallRecording
from ..routing.countries import locate_number
from ..routing.router import CallRouting, NoEligibleRegion, ResidencyRefused
from .actions import SessionActions
from .transport import CallTransport

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["CallSession", "classify"]

_ANNOUNCE_CHUNK_S = 0.1  # announcements go out in 100 ms pieces, like any agent audio
_DRAIN_GRACE_S = 3.0  # how long past its own length an apology may take to be heard


def classify(error: BaseException) -> tuple[EndReason, str]:
    """The end reason an exception that ended a call stands for, and a short detail."""
    detail = f"{type(error).__name__}: {error}"
    if isinstance(error, CallEnded):
        return error.reason, error.detail or str(error)
    if isinstance(error, ResidencyRefused):
        return EndReason.RESIDENCY_REFUSED, str(error)
    if isinstance(error, NoEligibleRegion):
        return EndReason.NO_ELIGIBLE_REGION, str(error)
    if isinstance(error, AuthError):
        return EndReason.AUTH_FAILED, str(error)
    if isinstance(error, ProtocolError):
        return EndReason.PROTOCOL_ERROR, str(error)
    return EndReason.INTERNAL_ERROR, detail


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf of a (nested) exception group."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class CallSession:
    """One call: prepares it, runs its stages, ends it with a typed reason, prices and archives it."""

    def __init__(self, runtime: Runtime, ctx: Any, transport: CallTransport) -> None:
        self.runtime = runtime
        self.ctx = ctx
        self.transport = transport
        self.agent: AgentConfig | None = None
        self.call_routing: CallRouting | None = None
        self.actions = SessionActions(ctx, transport)
        self._announcements = 0
        self.recording: CallRecording | None = None
        self._live_scope: anyio.CancelScope | None = None  # cancelled when the node ends the call (drain)
        self._ended_by: tuple[EndReason, str] | None = None
        ctx.ledger = CallLedger(runtime.metrics)
        ctx.ledger.pii = runtime.settings.redact_pii
        ctx.announce = self._announce

    # -- the whole call ---------------------------------------------------------------

    async def run(self) -> EndReason:
        """Run the call to its end; the record is archived and the connection closed before this returns."""
        ctx, runtime = self.ctx, self.runtime
        ctx.caller_country = ctx.caller_country or locate_number(ctx.caller).country
        runtime.call_started(ctx)
        self._live_scope = anyio.CancelScope()
        runtime.live.add(ctx.call_id, self.end_now)
        reason, detail = EndReason.DISCONNECTED, ""
        try:
            with self._live_scope:
                reason, detail = await self._live()
            if self._ended_by is not None:  # the node ended it: the caller hears why, then goodbye
                reason, detail = self._ended_by
                detail = await self._failsafe(reason, detail)
            elif not reason.normal and not reason.peer_fault:
                detail = await self._failsafe(reason, detail)
        except BaseException:
            reason, detail = EndReason.SHUTDOWN, "the server stopped"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._end(reason, detail)
                finally:
                    runtime.live.discard(ctx.call_id)
        return reason

    def end_now(self, reason: EndReason, detail: str) -> None:
        """End the call from outside (a node that stops): the conversation stops, the apology and goodbye follow."""
        if self._ended_by is None and self._live_scope is not None:
            self._ended_by = (reason, detail)
            self._live_scope.cancel()

    async def _live(self) -> tuple[EndReason, str]:
        """Prepare and run the call; the typed reason it ended for."""
        try:
            self.agent = await self._agent()
            self._record(self.agent)
            self._language_prior(self.agent)
            self._route(self.agent)
            history, resumed, offset = await self._open_record()
            processors, opening = self.runtime.stack.build(self.ctx, self.agent, call_routing=self.call_routing,
                                                           history=history, resumed=resumed, turn_offset=offset,
                                                           actions=self.actions)
            # Outbound calls (issue 14, item 3): the greeting waits for the answering-machine verdict.
            processors = with_amd_gate(self.runtime.outbound, self.ctx, self.agent, processors, self.actions,
                                       wait_s=self.runtime.settings.amd_wait_s)
            reason, detail = await self._converse(processors, opening)
            ending = self.actions.ending
            if ending is not None and reason in (EndReason.HANGUP, EndReason.DISCONNECTED):
                return ending  # the provider left the stream because the agent transferred (or hung up)
            return reason, detail
        except AybizaError as error:
            return self._failed(error)

    def _failed(self, error: BaseException) -> tuple[EndReason, str]:
        reason, detail = classify(error)
        ctx = self.ctx
        if reason is EndReason.INTERNAL_ERROR:
            ctx.log.error("call failed: %s", detail, exc_info=error)
            ctx.ledger.incident(IncidentKind.STAGE_FAILED, detail)
        elif reason in (EndReason.NO_ELIGIBLE_REGION, EndReason.RESIDENCY_REFUSED):
            ctx.ledger.incident(IncidentKind.ROUTE_REFUSED, detail)
            ctx.log.warning("call refused: %s", detail)
        elif reason is EndReason.AGENT_UNAVAILABLE:
            ctx.ledger.incident(IncidentKind.AGENT_FAILED, detail)
            ctx.log.warning("call ending: %s: %s", reason, detail)
        elif not reason.normal:
            ctx.log.warning("call ending: %s: %s", reason, detail)
        return reason, detail

    # -- preparing ---------------------------------------------------------------------

    async def _agent(self) -> AgentConfig:
        try:
            return await self.runtime.agents.get(self.ctx.agent_id)
        except ConfigError as error:
            raise CallEnded(EndReason.AGENT_UNAVAILABLE, f"agent {self.ctx.agent_id!r}: {error}") from error

    def _record(self, agent: AgentConfig) -> None:
        """Redaction as the agent wants it; the recording, when the agent (or the server) records calls."""
        settings, ctx = self.runtime.settings, self.ctx
        ctx.ledger.pii = settings.redact_pii if agent.redact_pii is None else agent.redact_pii
        if not (agent.record or settings.record_calls):
            return
        try:
            self.recording = CallRecording(self.runtime.recordings, ctx)
        except OSError as error:  # a full or read-only disk: the call goes on, unrecorded, and says so
            ctx.log.error("call not recorded: %s", error)
            return
        self.transport = self.recording.wrap(self.transport)
        self.actions.transport = self.transport  # tones the agent plays are recorded too

    def _language_prior(self, agent: AgentConfig) -> None:
        ctx = self.ctx
        ctx.language = agent.language
        prior = prior_language(ctx, set(self.runtime.languages) & set(agent.languages))
        if prior is not None and prior != ctx.language:
            ctx.log.info("language prior %s", prior)
            ctx.language = prior

    def _route(self, agent: AgentConfig) -> None:
        """Choose the region, fallbacks and tier now, before any stage runs."""
        routing = self.runtime.routing_for_calls
        if routing is None:
            return
        ctx = self.ctx
        self.call_routing = routing.call_routing(ctx.caller, residency=agent.residency)
        chosen = self.call_routing.next_turn(routing.snapshot())
        ctx.region, ctx.fallback_regions = chosen.region, chosen.fallbacks
        ctx.log.info("route: %s (fallbacks %s): %s", chosen.region, ", ".join(chosen.fallbacks) or "none",
                     chosen.reason)

    async def _open_record(self) -> tuple[list[dict[str, str]], bool, int]:
        """Open the call's durable record; a call live elsewhere (a reconnecting stream) is taken over."""
        store, ctx = self.runtime.store, self.ctx
        if store is None:
            return [], False, 0
        try:
            record, resumed = await store.open_call(ctx)
        except CallStateError as error:  # the call goes on; the journal is off for it
            ctx.log.warning("call record not opened: %s", error)
            return [], False, 0
        offset = max((turn.turn_id for turn in record.turns), default=-1) + 1 if record.turns else 0
        if resumed:
            ctx.log.info("resumed a call from another process: %d turn(s) on record", len(record.turns))
        return record.context(), resumed, offset

    # -- running ------------------------------------------------------------------------

    async def _converse(self, processors: list[Processor], opening: list[Frame]) -> tuple[EndReason, str]:
        transport = self.transport
        stages = [*transport.arrange(processors), self.actions.tap, transport.output]
        problems = check_wiring(stages, transport.sources | {type(frame) for frame in opening})
        if problems:
            raise ConfigError("the call's stages are not wired: " + "; ".join(problems))
        ended: list[EndReason] = []

        async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
            for frame in opening:
                await pipe.push(frame)
            reason = await transport.pump(pipe.push)
            ended.append(reason)
            await pipe.push(EndOfCall(reason.value))

        try:
            await Pipeline(stages).run(self.ctx, feed)
        except BaseExceptionGroup as group:
            return self._failed(_first(group))
        except AybizaError as error:
            return self._failed(error)
        return (ended[0] if ended else EndReason.DISCONNECTED), ""

    async def _announce(self, notice: Notice) -> None:
        """Say a notice in the local voice, now, through the transport's output (a goodbye: until it is heard)."""
        agent = self.agent
        if agent is None or not self.transport.open:
            return
        fields = {Notice.APOLOGY: ["apology"], Notice.RETRY: ["apology", "retry_prompt"],
                  Notice.HOLD: ["holding_line"], Notice.STILL_THERE: ["silence_prompt"],
                  Notice.GOODBYE: ["silence_goodbye"]}[notice]
        text = " ".join(agent.text(field, self.ctx.language) for field in fields)
        seconds = await self._say(text, self.transport.output)
        if notice is Notice.GOODBYE:
            with anyio.move_on_after(seconds + _DRAIN_GRACE_S):
                await self.transport.drained()

    async def _say(self, text: str, output: Processor) -> float:
        """Send ``text`` in the local voice to ``output`` as an announcement; its length in seconds."""
        pcm, rate = await self.runtime.failsafe.render_async(text, self.ctx.language)
        self._announcements += 1
        turn_id = -self._announcements
        step = int(rate * _ANNOUNCE_CHUNK_S) * 2
        for offset in range(0, len(pcm), step):
            await output.process(OutputAudio(pcm[offset:offset + step], rate, turn_id, time.monotonic()))
        await output.process(AgentTurnDone(turn_id))
        return len(pcm) / (2 * rate)

    # -- failing well ----------------------------------------------------------------------

    async def _failsafe(self, reason: EndReason, detail: str) -> str:
        """The caller hears an apology and the agent's fallback (transfer, or goodbye); returns the detail."""
        transport, ctx = self.transport, self.ctx
        if not transport.open:
            return detail
        agent = self.agent or self.runtime.fallback_agent()
        control = transport.control
        transfer_to = agent.transfer_to if control is not None and control.available else None
        text = f"{agent.apology} {agent.handoff if transfer_to else agent.goodbye}"
        output = transport.output
        heard = anyio.Event()

        async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
            await pipe.push(Interruption(at=time.monotonic()))  # drop whatever half-sentence was queued
            seconds = await self._say(text, output)
            with anyio.move_on_after(seconds + _DRAIN_GRACE_S):
                async with anyio.create_task_group() as listening:
                    listening.start_soon(self._pump_until_gone, pipe, listening)
                    await transport.drained()
                    heard.set()
                    listening.cancel_scope.cancel()

        try:
            await Pipeline([output]).run(ctx, feed)
        except Exception as error:  # the caller left meanwhile; nothing more to say
            ctx.log.info("the caller left during the apology: %s", type(_first(error) if isinstance(
                error, BaseExceptionGroup) else error).__name__)
        ctx.log.info("apologised (%s heard) for %s", "all" if heard.is_set() else "not all", reason)
        if transfer_to and control is not None and transport.open:
            try:
                await control.transfer(transfer_to)
                return f"{detail}; transferred to {transfer_to}".lstrip("; ")
            except AybizaError as error:
                ctx.log.error("transfer to %s failed: %s", transfer_to, error)
        return detail

    async def _pump_until_gone(self, pipe: Pipeline, group: TaskGroup) -> None:
        await self.transport.pump(pipe.push)  # marks and audio keep flowing; returns when the caller leaves
        group.cancel_scope.cancel()

    # -- ending ------------------------------------------------------------------------------

    async def _end(self, reason: EndReason, detail: str) -> None:
        """Price, count and archive the call; then close the connection."""
        ctx, runtime = self.ctx, self.runtime
        if reason.normal:
            ctx.log.info("call ended: %s", reason)
        else:
            ctx.log.warning("call ended: %s: %s", reason, detail)
        cost = runtime.price(ctx)
        runtime.call_ended(ctx, reason, cost)
        store, record = runtime.store, None
        await self._file_recording()
        if store is not None:
            try:
                record = await store.end_call(ctx, reason.value, cost=cost, detail=detail)
            except CallFenced:
                ctx.log.info("call moved to another process; it records the end")
            except CallStateError as error:
                ctx.log.error("call record not saved: %s", error)
        await self.transport.close(reason, detail)
        if record is not None and runtime.results is not None:  # post-call webhook: queued after the hangup
            await runtime.results.enqueue(record, self.agent)

    async def _file_recording(self) -> None:
        """Complete the call's recording (however the call ended) and link it from the record."""
        recording, store, ctx = self.recording, self.runtime.store, self.ctx
        if recording is None:
            return
        try:
            info = await recording.finish()
        except Exception as error:  # noqa: BLE001 - the record is archived whatever happened to the recording
            ctx.log.error("recording not saved: %s", error, exc_info=error)
            return
        if store is not None and ctx.call_id in store.owned:
            try:
                await store.update(ctx.call_id, recording=info)
            except CallStateError as error:
                ctx.log.warning("recording not linked from the record yet: %s", error)
