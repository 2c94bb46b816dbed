"""Claude on Bedrock across regions: each turn tries the call's region, then its fallbacks.

:class:`RoutedBedrock` is a :class:`~aybiza.processors.llm.sentences.ReplyStreamer`
(so :class:`~aybiza.processors.llm.sentences.ReplyProcessor` speaks it like any
model) whose turns run through the :class:`~aybiza.routing.failover.FailoverExecutor`:
a retryable failure or a missed first-token/stall deadline moves the *same*
turn, with the whole conversation (and what was already spoken, as a
prefill), to the next region. Each turn's regions come from the call's
sticky router (:class:`~aybiza.routing.router.CallRouting` over the health
every process shares), so a call stays in its region unless that region
becomes ineligible or another one wins several turns in a row. The model is
chosen per region and per turn from the call's quality tier, language and
cost so far (a call past its agent's budget steps down a tier). Every region
tried is recorded on the call; each failover is reported to ``on_failover``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing

from ...errors import OverloadedError
from ...pipeline import CallContext
from ...routing.failover import FailoverExecutor, Message
from ...routing.router import CallRouting, NoEligibleRegion
from ...routing.service import RoutingService
from ...routing.tiers import TierModel
from .sentences import ChatMessage, ReplyEvent, ReplyRequest, ReplyStreamer, ReplyUsage, TextDelta

__all__ = ["RoutedBedrock"]


class RoutedBedrock:
    """ConverseStream with per-turn failover over the call's route."""

    provider = "bedrock"

    def __init__(
        self,
        ctx: CallContext,
        routing: RoutingService,
        call_routing: CallRouting,
        *,
        streamer_for: Callable[[str, TierModel], ReplyStreamer],
        cost_budget_usd: float | None = None,
        cost_so_far: Callable[[], float] = lambda: 0.0,
        on_failover: Callable[[str, str], None] = lambda from_region, to_region: None,
    ) -> None:
        self.ctx = ctx
        self.routing = routing
        self.call_routing = call_routing
        self._streamer_for = streamer_for
        self._budget = cost_budget_usd
        self._cost_so_far = cost_so_far
        self._on_failover = on_failover
        self._streamers: dict[tuple[str, str], ReplyStreamer] = {}

    def _streamer(self, region: str) -> ReplyStreamer:
        ctx = self.ctx
        model = self.routing.model_for(region, quality_tier=ctx.quality_tier, language=ctx.language,
                                       cost_so_far=self._cost_so_far(), budget=self._budget)
        key = (region, model.model_id)
        streamer = self._streamers.get(key)
        if streamer is None:
            streamer = self._streamer_for(region, model)
            self._streamers[key] = streamer
        ctx.model_tier = model.tier
        return streamer

    async def stream_reply(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        """The reply, from the first region that answers; raises ``TurnFailed`` when none does."""
        usage: list[ReplyUsage] = []

        async def stream_turn(region: str, messages: Sequence[Message]) -> AsyncIterator[str]:
            attempt = ReplyRequest(request.system, tuple(ChatMessage(m["role"], m["content"])  # type: ignore[arg-type]
                                                         for m in messages), request.language)
            async with aclosing(self._streamer(region).stream_reply(attempt)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        yield event.text
                    elif isinstance(event, ReplyUsage):
                        usage.append(event)

        executor = FailoverExecutor(stream_turn, health=self.routing.health, budget=self.routing.budget,
                                    policy=self.routing.failover)
        try:
            current = self.call_routing.next_turn(self.routing.snapshot())
        except NoEligibleRegion as error:  # every region failed or was ejected since the call began
            raise OverloadedError(f"no region can take the turn: {error}", provider="bedrock") from error
        if current.region != self.ctx.region:
            self.ctx.log.info("route moves to %s: %s", current.region, current.reason)
            self.ctx.region, self.ctx.fallback_regions = current.region, current.fallbacks
        turn = executor.turn(current.regions, [{"role": m.role, "content": m.text} for m in request.messages])
        try:
            async for chunk in turn:
                yield TextDelta(chunk)
        finally:
            await turn.aclose()
            tried = turn.record.regions_tried
            self.ctx.regions_tried.extend(tried)
            answered = turn.record.answered_by
            for region in tried:
                if region != answered and answered is not None:
                    self._on_failover(region, answered)
            if answered is not None and answered != self.ctx.region:
                self.ctx.log.warning("turn answered by %s after %s failed", answered, ", ".join(tried[:-1]))
        for event in usage:
            yield event

    async def aclose(self) -> None:
        """Close every per-region streamer."""
        for streamer in self._streamers.values():
            await streamer.aclose()
