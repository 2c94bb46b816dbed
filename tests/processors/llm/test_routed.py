"""RoutedBedrock: every turn routed with the health of its moment, then failed over along its route."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.errors import OverloadedError
from aybiza.pipeline import CallContext
from aybiza.processors.llm.routed import CONTINUE, BedrockStreamers, RoutedBedrock
from aybiza.processors.llm.sentences import ChatMessage, ReplyEvent, ReplyRequest, ReplyUsage, TextDelta
from aybiza.processors.llm.tooling import ToolCall, ToolResult, ToolSchema
from aybiza.routing.failover import FailoverPolicy
from aybiza.routing.health import FailureKind
from aybiza.routing.regions import default_catalog
from aybiza.routing.router import CallInfo, CallRouting, NoEligibleRegion, RoutingPolicy
from aybiza.routing.service import RoutingService
from aybiza.routing.tiers import TierModel

UK = "+447700900123"
SYSTEM = "You are a concise booking agent."

Step = str | BaseException | ToolCall
"""A chunk of text to stream, a tool call to make, or an error to raise at that point."""


@dataclass
class ScriptedRegion:
    """A region's streamer: answers every request with ``steps``; records what it was asked."""

    region: str
    model: TierModel
    steps: Sequence[Step] = ("Hello, ", "how can I help?")
    requests: list[ReplyRequest] = field(default_factory=list)
    provider: str = "scripted"

    def stream_reply(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        self.requests.append(request)
        return self._events()

    async def _events(self) -> AsyncGenerator[ReplyEvent, None]:
        for step in self.steps:
            if isinstance(step, BaseException):
                raise step
            yield step if isinstance(step, ToolCall) else TextDelta(step)
        yield ReplyUsage(self.model.model_id, input_tokens=12, output_tokens=5)

    async def aclose(self) -> None:
        return None


class Regions:
    """``streamer_for``: one scripted streamer per (region, model), counting how many were built."""

    def __init__(self, scripts: dict[str, Sequence[Step]] | None = None) -> None:
        self.scripts = scripts or {}
        self.built: list[ScriptedRegion] = []

    def __call__(self, region: str, model: TierModel) -> ScriptedRegion:
        streamer = ScriptedRegion(region, model, self.scripts.get(region, ("Hello, ", "how can I help?")))
        self.built.append(streamer)
        return streamer

    def asked(self, region: str) -> list[ReplyRequest]:
        return [request for streamer in self.built if streamer.region == region for request in streamer.requests]


def _routed(
    regions: Regions, *, on_failover: Callable[[str, str], None] = lambda a, b: None
) -> tuple[RoutedBedrock, RoutingService, CallContext]:
    routing = RoutingService(default_catalog(), failover=FailoverPolicy(first_token_timeout_s=1.0))
    ctx = CallContext(call_id="test-routed", caller=UK, quality_tier="medium", region="eu-west-2")
    call_routing = CallRouting(CallInfo.from_number(UK), routing.catalog, RoutingPolicy(data_residency=True))
    return RoutedBedrock(ctx, routing, call_routing, streamer_for=regions, on_failover=on_failover), routing, ctx


async def _turn(model: RoutedBedrock, *texts: str) -> tuple[str, list[ReplyEvent]]:
    messages = tuple(ChatMessage("user" if i % 2 == 0 else "assistant", text) for i, text in enumerate(texts))
    events = [event async for event in model.stream_reply(ReplyRequest(SYSTEM, messages))]
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events


def _down(routing: RoutingService, region: str) -> None:
    for _ in range(routing.health.config.unhealthy_after):
        routing.health.record_probe(region, False)


@pytest.mark.anyio
async def test_a_turn_goes_to_the_callers_region_with_the_whole_conversation() -> None:
    regions = Regions()
    model, _, ctx = _routed(regions)
    text, events = await _turn(model, "hi", "Hello.", "do you open on sunday?")
    assert text == "Hello, how can I help?"
    [request] = regions.asked("eu-west-2")
    assert request.system == SYSTEM
    assert [m.text for m in request.messages] == ["hi", "Hello.", "do you open on sunday?"]
    assert isinstance(events[-1], ReplyUsage)
    assert ctx.regions_tried == ["eu-west-2"]
    assert ctx.model_tier == "fast"
    assert model.last_turn is not None and model.last_turn.answered_by == "eu-west-2"


@pytest.mark.anyio
async def test_each_turn_is_routed_with_the_health_of_its_moment() -> None:
    regions = Regions()
    failovers: list[tuple[str, str]] = []
    model, routing, ctx = _routed(regions, on_failover=lambda a, b: failovers.append((a, b)))
    await _turn(model, "first question")
    _down(routing, "eu-west-2")  # the prober saw it go down between turns
    text, _ = await _turn(model, "first question", "answer", "second question")
    assert text == "Hello, how can I help?"
    assert len(regions.asked("eu-west-2")) == 1  # the second turn never went there
    assert len(regions.asked("eu-central-1")) == 1
    assert ctx.regions_tried == ["eu-west-2", "eu-central-1"]
    assert failovers == []  # the route moved; no turn failed over
    assert model.call_routing.current is not None and model.call_routing.current.region == "eu-central-1"


@pytest.mark.anyio
async def test_a_model_that_takes_no_prefill_is_asked_to_go_on_instead() -> None:
    regions = Regions({"eu-west-2": ("Hello, ", ConnectionResetError("peer reset")),
                       "eu-central-1": ("how can I help?",)})
    # Every tier on Sonnet 4.6, which refuses a prefill (as a deployment's overrides may say).
    routing = RoutingService(default_catalog(), failover=FailoverPolicy(first_token_timeout_s=1.0),
                             model_overrides={tier: "anthropic.claude-sonnet-4-6" for tier in ("advanced", "fast")})
    ctx = CallContext(call_id="test-routed", caller=UK, quality_tier="medium", region="eu-west-2")
    call_routing = CallRouting(CallInfo.from_number(UK), routing.catalog, RoutingPolicy(data_residency=True))
    model = RoutedBedrock(ctx, routing, call_routing, streamer_for=regions)
    text, _ = await _turn(model, "hi")
    assert text == "Hello, how can I help?"
    [continued] = regions.asked("eu-central-1")
    assert "sonnet-4-6" in regions.built[-1].model.model_id
    assert continued.messages[-2] == ChatMessage("assistant", "Hello,")
    assert continued.messages[-1] == ChatMessage("user", CONTINUE)  # the conversation ends with the caller's side


@pytest.mark.anyio
async def test_a_region_failing_mid_turn_continues_the_sentence_in_the_next_one() -> None:
    regions = Regions({"eu-west-2": ("Hello, ", ConnectionResetError("peer reset")),
                       "eu-central-1": ("how can I help?",)})
    failovers: list[tuple[str, str]] = []
    model, _, ctx = _routed(regions, on_failover=lambda a, b: failovers.append((a, b)))
    text, _ = await _turn(model, "hi")
    assert text == "Hello, how can I help?"  # heard once, in one piece
    [continued] = regions.asked("eu-central-1")
    assert continued.messages[-1] == ChatMessage("assistant", "Hello,")  # prefill, trailing space removed
    assert failovers == [("eu-west-2", "eu-central-1")]
    assert ctx.regions_tried == ["eu-west-2", "eu-central-1"]
    # A dropped connection opens the breaker: the next turn goes straight to the fallback.
    await _turn(model, "hi", text, "and tomorrow?")
    assert len(regions.asked("eu-west-2")) == 1
    assert ctx.regions_tried == ["eu-west-2", "eu-central-1", "eu-central-1"]


@pytest.mark.anyio
async def test_no_eligible_region_mid_call_is_a_failed_turn() -> None:
    regions = Regions()
    model, routing, _ = _routed(regions)
    for region in ("eu-west-2", "eu-central-1"):
        _down(routing, region)
    with pytest.raises(OverloadedError, match="no region can take the turn") as raised:
        await _turn(model, "hello?")
    assert isinstance(raised.value.__cause__, NoEligibleRegion)  # the model stage apologises, then asks again
    assert regions.built == [] and model.last_turn is None


@pytest.mark.anyio
async def test_a_turn_no_region_answers_raises_and_is_recorded() -> None:
    down = OverloadedError("busy", provider="bedrock")
    regions = Regions({"eu-west-2": (down,), "eu-central-1": (down,)})
    model, _, ctx = _routed(regions)
    with pytest.raises(Exception, match="no region answered"):
        await _turn(model, "hello?")
    assert ctx.regions_tried == ["eu-west-2", "eu-central-1"]
    assert model.last_turn is not None and model.last_turn.answered_by is None


@pytest.mark.anyio
async def test_streamers_are_built_once_per_region_and_model() -> None:
    regions = Regions()
    model, routing, _ = _routed(regions)
    for turn in range(3):
        await _turn(model, f"question {turn}")
    routing.health.record_failure("eu-west-2", FailureKind.CONNECT)
    await _turn(model, "question 3")
    assert [(s.region, s.model.model_id) for s in regions.built] == [
        ("eu-west-2", "eu.anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("eu-central-1", "eu.anthropic.claude-haiku-4-5-20251001-v1:0"),
    ]


def _production_streamers(routing: RoutingService) -> BedrockStreamers:
    engines = Engines(Settings())
    return BedrockStreamers(routing, lambda region, endpoint, read_timeout: engines.bedrock(
        region, endpoint, read_timeout=read_timeout), engines.bedrock_pool)


def test_production_streamers_use_the_catalog_endpoint_and_backstop_deadlines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    catalog = default_catalog().with_endpoints({"eu-west-2": "http://127.0.0.1:9"})
    routing = RoutingService(catalog, failover=FailoverPolicy(first_token_cap_s=2.0, stall_timeout_s=0.5))
    model = routing.model_for("eu-west-2", quality_tier="high", language="en")
    streamers = _production_streamers(routing)
    streamer, again = streamers("eu-west-2", model), streamers("eu-west-2", model)
    assert streamer.model_id == model.model_id and streamer.thinking_budget == model.thinking_budget
    assert streamer.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert (streamer.first_token_timeout, streamer.stall_timeout) == (3.0, 1.5)
    assert again.client is streamer.client  # one boto3 client per region and endpoint


def test_warm_makes_every_region_client_before_the_first_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    routing = RoutingService(default_catalog().with_endpoints({"eu-west-2": "http://127.0.0.1:9"}))
    streamers = _production_streamers(routing)
    streamers.warm()
    for region in routing.catalog.names:
        started = time.perf_counter()
        streamers(region, routing.model_for(region, quality_tier="medium", language="en"))
        # A client made here would block the event loop for 0.1-0.6 s.
        assert time.perf_counter() - started < 0.05, region


ORDER = ToolSchema("order_status", "Where an order is.", {"type": "object", "properties": {}})


@pytest.mark.anyio
async def test_a_tool_exchange_fails_over_as_it_is_so_the_tool_is_not_asked_for_again() -> None:
    regions = Regions({"eu-west-2": (ConnectionResetError("peer reset"),), "eu-central-1": ("It is shipped.",)})
    model, _, _ = _routed(regions)
    call = ToolCall("tooluse_A", "order_status", {"order_id": "4321"})
    asked = (ChatMessage("user", "Where is order 4321?"), ChatMessage("assistant", "Let me check.", (call,)),
             ChatMessage("user", "", tool_results=(ToolResult("tooluse_A", "order_status", {"status": "shipped"}),)))
    events = [e async for e in model.stream_reply(ReplyRequest(SYSTEM, asked, tools=(ORDER,)))]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "It is shipped."
    assert not any(isinstance(e, ToolCall) for e in events)
    [failed], [answered] = regions.asked("eu-west-2"), regions.asked("eu-central-1")
    assert failed.messages == answered.messages == asked, "the call and its result went along, blocks and all"
    assert answered.tools == (ORDER,)


@pytest.mark.anyio
async def test_a_tool_call_cut_short_by_a_failing_region_is_made_once_by_the_next() -> None:
    lost = ToolCall("tooluse_lost", "order_status", {"order_id": "4321"})
    made = ToolCall("tooluse_made", "order_status", {"order_id": "4321"})
    regions = Regions({"eu-west-2": ("Let me check. ", lost, ConnectionResetError("peer reset")),
                       "eu-central-1": (made,)})
    model, _, ctx = _routed(regions)
    question = (ChatMessage("user", "Where is order 4321?"),)
    events = [e async for e in model.stream_reply(ReplyRequest(SYSTEM, question, tools=(ORDER,)))]
    assert [e for e in events if isinstance(e, ToolCall)] == [made], "the failed region's call never runs"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Let me check. "
    [continued] = regions.asked("eu-central-1")
    assert continued.messages[-1] == ChatMessage("assistant", "Let me check.")  # what was said, as a prefill
    assert ctx.regions_tried == ["eu-west-2", "eu-central-1"]


@pytest.mark.anyio
async def test_a_turn_cut_short_after_a_failover_is_counted_under_the_model_its_tokens_are() -> None:
    from aybiza.pipeline import AgentTurnDone, UserTurn
    from aybiza.processors.llm.reply import ReplyProcessor
    from aybiza.testing.kit import run_stage

    regions = Regions({"eu-west-2": ("Hello there. ", "How ", ConnectionResetError("peer reset")),
                       "eu-central-1": (ConnectionResetError("reset as well"),)})
    model, _, ctx = _routed(regions)
    reply = ReplyProcessor(model, system_prompt=SYSTEM)
    await run_stage([reply], [UserTurn("hi", turn_id=1)], ctx=ctx, until=lambda out: bool(out.of(AgentTurnDone)))
    asked = {streamer.model.model_id for streamer in regions.built}
    assert reply.model_id in asked  # the model the failover asked last, not the provider's name
    usage = ctx.ledger.usage()
    assert not usage.tokens and usage.answers == {reply.model_id: 1}  # "Hello there." was heard: counted
