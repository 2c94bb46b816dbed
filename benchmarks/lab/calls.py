"""Calls through production's model path on the lab, while a timeline injects faults.

Each emulated call is what :class:`~aybiza.processors.llm.reply.ReplyProcessor`
does with a model, without the rest of the pipeline: a
:class:`~aybiza.processors.llm.routed.RoutedBedrock` per call, asked turn after
turn with :meth:`~aybiza.processors.llm.routed.RoutedBedrock.stream_reply`. So
every turn is routed by the call's own :class:`~aybiza.routing.router.CallRouting`
against a real :class:`~aybiza.routing.service.RoutingService` (catalog pointed
at the lab, health fed by the service's own prober), fails over in the
:class:`~aybiza.routing.failover.FailoverExecutor`, and reaches the regions'
fake Bedrock servers through boto3 ConverseStream
(:class:`~aybiza.processors.llm.routed.BedrockStreamers`: one client per region
and endpoint for the process, made before the first call as production's
startup does).
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio

from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.errors import CallError, ProviderError
from aybiza.pipeline import CallContext
from aybiza.processors.llm.routed import BedrockStreamers, RoutedBedrock
from aybiza.processors.llm.sentences import ChatMessage, ReplyRequest, ReplyStreamer, TextDelta, normalise_messages
from aybiza.routing.failover import FailoverPolicy
from aybiza.routing.probes import HealthProber, HttpProbe
from aybiza.routing.regions import Catalog, default_catalog
from aybiza.routing.router import CallInfo, CallRouting, RoutingPolicy
from aybiza.routing.service import RoutingService
from aybiza.routing.tiers import TierModel

from .lab import NetLab
from .servers import answer_for
from .summary import FaultEvent, FaultStep, RunResult, TurnResult

__all__ = ["LabSettings", "LabStack", "lab_catalog", "run_calls", "route_check"]

SYSTEM_PROMPT = "You are the lab's voice agent. Answer in one short sentence."


@dataclass(frozen=True, slots=True)
class LabSettings:
    """The routing stack's knobs for a lab run."""

    failover: FailoverPolicy = FailoverPolicy(first_token_timeout_s=1.0, stall_timeout_s=0.5)
    routing: RoutingPolicy = RoutingPolicy(data_residency=True)
    probe_interval_s: float = 2.0
    probe_timeout_s: float = 1.5
    # Medium audio: the fast tier in every region and no extended thinking, whose reasoning
    # stream would delay the first spoken token differently per region.
    quality_tier: str = "medium"
    language: str = "en"
    think_s: float = 0.1


def lab_catalog(lab: NetLab, catalog: Catalog | None = None) -> Catalog:
    """The catalog restricted to the lab's regions, each pointed at its lab address.

    Regions the lab does not emulate are dropped, so nothing (not even a probe)
    goes to a real endpoint.
    """
    pointed = (catalog or default_catalog()).with_endpoints(lab.urls, probe_path="/ping")
    return dataclasses.replace(pointed, regions=tuple(r for r in pointed.regions if r.name in lab.regions))


class LabStack:
    """What a process builds once and all its calls share: the routing service, its prober, streamers.

    Sets dummy AWS credentials in the environment if none are set (the fakes ignore them).
    """

    def __init__(self, lab: NetLab, settings: LabSettings, catalog: Catalog | None = None) -> None:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "lab")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "lab")
        self.settings = settings
        self.tokens = lab.tokens
        self.service = RoutingService(lab_catalog(lab, catalog), failover=settings.failover)
        self.prober: HealthProber = self.service.prober(
            interval_s=settings.probe_interval_s, timeout_s=settings.probe_timeout_s
        )
        engines = Engines(Settings(health_probes=False))
        self._streamers = BedrockStreamers(
            self.service, lambda region, endpoint, read_timeout: engines.bedrock(region, endpoint,
                                                                                 read_timeout=read_timeout),
            engines.bedrock_pool)
        self.clients: dict[str, set[int]] = {}
        """Region -> the boto3 clients (by id) its streamers used."""

    async def warm(self, probes: int = 2) -> None:
        """What production's startup does before the first call: make the boto3 clients (in a
        thread), then probe every region (the first probe only warms its connection)."""
        await anyio.to_thread.run_sync(self._streamers.warm)
        for _ in range(probes):
            await self.prober.probe_once()

    def streamer_for(self, region: str, model: TierModel) -> ReplyStreamer:
        """Production's streamer; notes which boto3 client it is built on."""
        streamer = self._streamers(region, model)
        self.clients.setdefault(region, set()).add(id(streamer.client))
        return streamer

    def call(self, call_id: str, number: str) -> RoutedBedrock:
        """The model of one new call from ``number``, with its own sticky routing."""
        ctx = CallContext(call_id=call_id, caller=number, quality_tier=self.settings.quality_tier,
                          language=self.settings.language)
        call_routing = CallRouting(CallInfo.from_number(number), self.service.catalog, self.settings.routing)
        return RoutedBedrock(ctx, self.service, call_routing, streamer_for=self.streamer_for)

    async def aclose(self) -> None:
        """Close the prober's connections (boto3's belong to the process)."""
        if isinstance(self.prober.probe, HttpProbe):
            await self.prober.probe.aclose()


@dataclass(slots=True)
class _Heard:
    text: str
    error: str
    region: str


async def _ask(model: RoutedBedrock, conversation: Sequence[ChatMessage], tokens: int) -> _Heard:
    """One turn as the caller hears it; wrong or missing words are an error."""
    request = ReplyRequest(SYSTEM_PROMPT, tuple(normalise_messages(conversation)), model.ctx.language)
    expected = "".join(answer_for([{"role": m.role, "content": m.text} for m in request.messages], tokens))
    heard: list[str] = []
    error = ""
    try:
        async with aclosing(model.stream_reply(request)) as reply:
            async for event in reply:
                if isinstance(event, TextDelta):
                    heard.append(event.text)
    except (ProviderError, CallError) as exc:  # TurnFailed, a fatal provider error, NoEligibleRegion
        error = f"{type(exc).__name__}: {exc}"
    text = "".join(heard)
    if not error and text != expected:
        error = f"heard {text!r}, expected {expected!r}"
    route = model.call_routing.current
    region = route.region if route is not None and model.last_turn is not None else ""
    return _Heard(text, error, region)


async def run_calls(
    lab: NetLab,
    callers: Sequence[str],
    duration_s: float,
    timeline: Sequence[FaultStep] = (),
    settings: LabSettings | None = None,
    catalog: Catalog | None = None,
    min_turns: int = 0,
) -> RunResult:
    """Run one call per caller number, turn after turn, while ``timeline`` injects faults.

    Stops after ``duration_s`` once at least ``min_turns`` turns finished (and the
    timeline is done). Faults still in effect at the end are restored.
    """
    stack = LabStack(lab, settings or LabSettings(), catalog)
    result = RunResult()
    active: dict[tuple[str, str], float] = {}
    try:
        await stack.warm()
        result.started_at = time.monotonic()
        stop_at = result.started_at + duration_s
        timeline_done = anyio.Event()

        def finished() -> bool:
            return time.monotonic() >= stop_at and timeline_done.is_set() and len(result.turns) >= min_turns

        async def faults() -> None:
            for offset, action, region, kind in sorted(timeline):
                await anyio.sleep(max(0.0, result.started_at + offset - time.monotonic()))
                if action == "inject":
                    # The fault counts from just before the command: failover times err on the long side.
                    at = time.monotonic()
                    await anyio.to_thread.run_sync(lab.inject, region, kind)
                    active[(region, kind)] = at
                else:
                    await anyio.to_thread.run_sync(lab.restore, region, kind)
                    at = active.pop((region, kind))
                    result.faults.append(FaultEvent(kind, region, at, time.monotonic()))
            timeline_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stack.prober.run)
            tg.start_soon(faults)
            async with anyio.create_task_group() as calls:
                for index, number in enumerate(callers):
                    calls.start_soon(_call, index, number, stack, result, finished)
            tg.cancel_scope.cancel()
    finally:
        for (region, kind), at in list(active.items()):
            await anyio.to_thread.run_sync(lab.restore, region, kind)
            result.faults.append(FaultEvent(kind, region, at, time.monotonic()))
        result.ended_at = time.monotonic()
        result.clients = {region: len(ids) for region, ids in stack.clients.items()}
        await stack.aclose()
    return result


async def _call(index: int, number: str, stack: LabStack, result: RunResult, finished: Callable[[], bool]) -> None:
    model = stack.call(f"lab-call-{index}", number)
    conversation: list[ChatMessage] = []
    # Calls that start together stay in lockstep; stagger them over about one turn, with jittered pauses.
    rng = random.Random(index)
    await anyio.sleep((index * 0.137) % 0.6)
    turn_number = 0
    try:
        while not finished():
            turn_number += 1
            conversation.append(ChatMessage("user", f"caller {index} question {turn_number}"))
            started = time.monotonic()
            heard = await _ask(model, conversation, stack.tokens)
            record = model.last_turn
            result.turns.append(
                TurnResult(
                    call=index,
                    caller=number,
                    started_at=started,
                    ended_at=time.monotonic(),
                    ok=not heard.error,
                    region=heard.region,
                    answered_by=record.answered_by if record else None,
                    first_token_at=record.first_token_at if record else None,
                    attempts=[
                        (a.region, a.outcome, a.started_at, a.first_token_at, a.ended_at)
                        for a in (record.attempts if record else [])
                    ],
                    error=heard.error,
                )
            )
            conversation.append(ChatMessage("assistant", heard.text or "(silence)"))
            await anyio.sleep(stack.settings.think_s * rng.uniform(0.5, 1.5))
    finally:
        await model.aclose()


async def route_check(
    lab: NetLab, numbers: Mapping[str, str], settings: LabSettings | None = None
) -> dict[str, dict[str, Any]]:
    """Probe the lab, then one call per caller: where its first turn was routed and who answered.

    Returns per label: the routed region and fallbacks, who answered, the measured RTT of that region.
    """
    stack = LabStack(lab, settings or LabSettings())
    out: dict[str, dict[str, Any]] = {}
    try:
        await stack.warm(probes=3)
        for label, number in numbers.items():
            model = stack.call(f"route-check-{label}", number)
            try:
                heard = await _ask(model, [ChatMessage("user", f"hello from {label}")], stack.tokens)
            finally:
                await model.aclose()
            chosen = model.call_routing.current
            view = stack.service.snapshot().get(chosen.region) if chosen else None
            out[label] = {
                "region": chosen.region if chosen else None,
                "fallbacks": list(chosen.fallbacks) if chosen else [],
                "answered_by": model.last_turn.answered_by if model.last_turn else None,
                "measured_rtt_ms": round(view.latency_ms, 1) if view and view.latency_ms else None,
                "heard_ok": not heard.error,
                "error": heard.error,
            }
    finally:
        await stack.aclose()
    return out
