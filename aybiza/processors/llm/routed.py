"""Claude on Bedrock across regions: every turn is routed afresh, then fails over along its route.

:class:`RoutedBedrock` is a :class:`~aybiza.processors.llm.sentences.ReplyStreamer`
(so :class:`~aybiza.processors.llm.reply.ReplyProcessor` speaks it like any
model). Each turn asks the call's :class:`~aybiza.routing.router.CallRouting`
for its route against the process's current health
(:meth:`~aybiza.routing.service.RoutingService.snapshot`), so a region that
went unhealthy between turns is left out and the call sticks to its region
otherwise (``keep_sticky`` hysteresis). The turn then runs through the
:class:`~aybiza.routing.failover.FailoverExecutor`: a retryable failure or a
missed first-token/stall deadline moves the *same* turn, with the whole
conversation (and what was already spoken, as a prefill), to the route's next
region. A turn with no eligible region left (every region failed or was
ejected since the call began) is a failed turn like any other: the model
stage apologises, asks again, and ends the call if it happens again. The
call's region follows the route, so its cost and metrics name where it runs.

**Tool calls fail over without running twice.** The executor moves text;
the conversation it carries is rebuilt here from the request's own messages,
so tool calls and results already in it (a tool that ran, its result) go to
the next region as they are — the model there reads the result instead of
asking again. Tool calls the model makes in a request are collected per
attempt and handed on only once the request has completed: a region that
fails halfway through a tool call discards it, and the region that answers
in its place makes its own, once. Tools run in the model stage, after the
request, never inside this router.

The model is chosen per region and per turn from the call's quality tier and
language; ``streamer_for(region, model)`` supplies the streamer (production:
:class:`BedrockStreamers`, on the process's shared boto3 clients and reader
threads); a call past its agent's cost budget steps down a tier. Every region
tried is recorded on the call; each failover is reported to ``on_failover``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from contextlib import aclosing
from typing import Any

from ...errors import OverloadedError
from ...pipeline import CallContext
from ...routing.failover import FailoverExecutor, Message, TurnRecord
from ...routing.router import CallRouting, NoEligibleRegion
from ...routing.service import RoutingService
from ...routing.tiers import TierModel, supports_prefill
from .bedrock import BedrockStreamer
from .sentences import ChatMessage, ReplyEvent, ReplyRequest, ReplyStreamer, ReplyUsage, TextDelta
from .tooling import ToolCall

__all__ = ["RoutedBedrock", "StreamerFor", "BedrockStreamers"]

CONTINUE = ("(The line dropped while you were answering. Go on from exactly where your answer stopped, "
            "without repeating anything you already said.)")
"""What a model that takes no prefill is asked when a turn fails over mid-reply."""

StreamerFor = Callable[[str, TierModel], ReplyStreamer]
"""``streamer_for(region, model)``: the streamer that asks ``model`` in ``region``."""


ClientFor = Callable[[str, "str | None", float], Any]
"""``client_for(region, endpoint_url, read_timeout)``: the process's boto3 client (the engines keep one each)."""


class BedrockStreamers:
    """Production's ``streamer_for``: ConverseStream streamers on the process's boto3 clients.

    One client per region and endpoint (the catalog's, a fake or VPC endpoint,
    else boto3's default) for the process, and the process's reader threads.
    The executor owns the deadlines; the streamers' are only a backstop.
    """

    def __init__(self, routing: RoutingService, client_for: ClientFor, pool: Executor) -> None:
        self.routing = routing
        self._client_for = client_for
        self._pool = pool

    def __call__(self, region: str, model: TierModel) -> BedrockStreamer:
        policy = self.routing.failover
        first_token, stall = policy.first_token_cap_s + 1.0, policy.stall_timeout_s + 1.0
        client = self._client_for(region, self.routing.catalog.region(region).endpoint_url,
                                  max(first_token, stall))
        return BedrockStreamer(region=region, model_id=model.model_id, client=client, pool=self._pool,
                               thinking_budget=model.thinking_budget, first_token_timeout=first_token,
                               stall_timeout=stall)

    def warm(self) -> None:
        """Create every catalog region's client now (blocking: at startup, in a thread).

        A client made on first use would block the event loop (0.1-0.6 s), stalling
        every call's audio and inflating the health probes' latency, in the middle
        of the first turn (or the first failover) that needs it.
        """
        for region in self.routing.catalog.names:
            self(region, self.routing.model_for(region, quality_tier="high", language="en"))


class RoutedBedrock:
    """ConverseStream with a fresh route and per-turn failover on every turn of one call."""

    provider = "bedrock"

    def __init__(
        self,
        ctx: CallContext,
        routing: RoutingService,
        call_routing: CallRouting,
        *,
        streamer_for: StreamerFor,
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
        self.model_id = ""  # the model the latest attempt asked (after a failover: the next region's)
        self._streamers: dict[tuple[str, str], ReplyStreamer] = {}
        self.last_turn: TurnRecord | None = None
        """The latest turn's record (attempts, who answered, first-token times); None before the
        first turn and when the latest one found no route."""

    def _streamer(self, region: str) -> tuple[ReplyStreamer, TierModel]:
        ctx = self.ctx
        model = self.routing.model_for(region, quality_tier=ctx.quality_tier, language=ctx.language,
                                       cost_so_far=self._cost_so_far(), budget=self._budget)
        key = (region, model.model_id)
        streamer = self._streamers.get(key)
        if streamer is None:
            streamer = self._streamers[key] = self._streamer_for(region, model)
        ctx.model_tier = model.tier
        return streamer, model

    async def stream_reply(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        """The reply, from the first region of this turn's route that answers.

        Raises ``NoEligibleRegion`` when routing finds no region, ``TurnFailed`` when none answers.
        """
        self.last_turn = None
        previous = self.call_routing.current
        try:
            route = self.call_routing.next_turn(self.routing.snapshot())
        except NoEligibleRegion as error:  # every region failed or was ejected since the call began
            raise OverloadedError(f"no region can take the turn: {error}", provider="bedrock") from error
        if previous is not None and previous.region != route.region:
            self.ctx.log.info("call moves to %s: %s", route.region, route.reason)
            self.ctx.region, self.ctx.fallback_regions = route.region, route.fallbacks
        usage: list[ReplyUsage] = []
        calls: list[ToolCall] = []  # the tool calls of the attempt in progress (of the one that answered, after)
        asked = len(request.messages)

        async def stream_turn(region: str, messages: Sequence[Message]) -> AsyncIterator[str]:
            streamer, model = self._streamer(region)
            self.model_id = model.model_id
            calls.clear()
            # The request's own messages (tool blocks and all), plus what the executor added: a prefill.
            added = [ChatMessage(m["role"], m["content"]) for m in messages[asked:]]  # type: ignore[arg-type]
            if added and added[-1].role == "assistant" and not supports_prefill(model.model_id):
                # Claude 4.6 refuses a prefill: the reply cut short is asked to go on instead.
                added.append(ChatMessage("user", CONTINUE))
            attempt = ReplyRequest(request.system, (*request.messages, *added), request.language, request.tools)
            async with aclosing(streamer.stream_reply(attempt)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        yield event.text
                    elif isinstance(event, ToolCall):
                        calls.append(event)
                        yield ""  # progress: the executor's deadlines see the model answering
                    elif isinstance(event, ReplyUsage):
                        usage.append(event)

        executor = FailoverExecutor(stream_turn, health=self.routing.health, budget=self.routing.budget,
                                    policy=self.routing.failover)
        turn = executor.turn(route.regions, [{"role": m.role, "content": m.text} for m in request.messages])
        self.last_turn = turn.record
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
            if answered is not None and answered != route.region:
                self.ctx.log.warning("turn answered by %s after %s failed", answered, ", ".join(tried[:-1]))
        for call in calls:  # only once the request completed: a failed attempt's calls never run
            yield call
        for event in usage:
            yield event

    async def aclose(self) -> None:
        """Close every per-region streamer."""
        for streamer in self._streamers.values():
            await streamer.aclose()
