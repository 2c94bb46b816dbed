"""Calls through the routing stack on the lab, while a timeline injects faults.

:func:`run_calls` drives concurrent calls (health prober, router, failover
executor) turn after turn and records every attempt; :func:`route_check` routes
a few callers with measured health and runs one turn each.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from aybiza.errors import CallError
from aybiza.routing.failover import FailoverExecutor, FailoverPolicy, Message, RetryBudget, TurnFailed
from aybiza.routing.health import HealthConfig, HealthProber, HealthRegistry
from aybiza.routing.regions import Catalog, Region, default_catalog
from aybiza.routing.router import CallInfo, CallRouting, RoutingPolicy, route

from .lab import NetLab
from .servers import FakeRegionClient, answer_for
from .summary import FaultEvent, FaultStep, RunResult, TurnResult

__all__ = [
    "LabClient",
    "BedrockLabClient",
    "lab_client",
    "lab_catalog",
    "LabSettings",
    "run_calls",
    "route_check",
]


# -- clients ------------------------------------------------------------------------------------


class LabClient(Protocol):
    """What a run needs from a client: stream a turn from a region, probe a region, close."""

    def stream_turn(self, region: str, messages: Sequence[Message]) -> AsyncIterator[str]:
        """Stream the answer to ``messages`` from ``region``."""
        ...

    async def probe(self, region: Region) -> None:
        """Raise unless the region answers."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class BedrockLabClient:
    """The real boto3 ConverseStream path (:class:`aybiza.processors.llm.bedrock.BedrockStreamer`,
    with its production deadlines) against the lab's fake Bedrock servers.

    Sets dummy AWS credentials in the environment if none are set (the fakes ignore them).
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        model_id: str = "anthropic.claude-3-haiku-20240307-v1:0",
        probe_timeout_s: float = 1.5,
    ) -> None:
        import httpx

        from aybiza.processors.llm.bedrock import BedrockStreamer

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "lab")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "lab")
        self._streamers = {
            name: BedrockStreamer(region=name, model_id=model_id, endpoint_url=url) for name, url in urls.items()
        }
        self._probes = {name: httpx.AsyncClient(base_url=url, timeout=probe_timeout_s) for name, url in urls.items()}

    async def stream_turn(self, region: str, messages: Sequence[Message]) -> AsyncIterator[str]:
        """A :data:`~aybiza.routing.failover.StreamTurn` over ConverseStream."""
        from aybiza.processors.llm.sentences import ChatMessage, ReplyRequest, TextDelta

        conversation = tuple(
            ChatMessage("assistant" if m["role"] == "assistant" else "user", m["content"]) for m in messages
        )
        reply = self._streamers[region].stream_reply(ReplyRequest(system="", messages=conversation))
        try:
            async for event in reply:
                if isinstance(event, TextDelta) and event.text:
                    yield event.text
        finally:
            await reply.aclose()

    async def probe(self, region: Region) -> None:
        """Any HTTP answer below 500 from the region's endpoint means it is reachable."""
        import httpx

        try:
            response = await self._probes[region.name].get("/ping")
        except httpx.TransportError as exc:
            raise ConnectionError(f"{region.name}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise ConnectionError(f"{region.name}: probe answered {response.status_code}")

    async def aclose(self) -> None:
        """Close the probe clients (the boto3 clients are shared by the process)."""
        for client in self._probes.values():
            await client.aclose()


def lab_catalog(lab: NetLab, catalog: Catalog | None = None) -> Catalog:
    """The catalog restricted to the lab's regions, each pointed at its lab address.

    Regions the lab does not emulate are dropped, so nothing (not even a probe)
    goes to a real endpoint.
    """
    pointed = (catalog or default_catalog()).with_endpoints(lab.urls, probe_path="/ping")
    return dataclasses.replace(pointed, regions=tuple(r for r in pointed.regions if r.name in lab.regions))


def lab_client(lab: NetLab, tokens: int = 10) -> LabClient:
    """The client matching the lab's wire."""
    if lab.wire == "bedrock":
        return BedrockLabClient(lab.urls)
    return FakeRegionClient(lab.urls, tokens=tokens)


# -- driving calls through the routing stack ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabSettings:
    """The routing stack's knobs for a lab run."""

    health: HealthConfig = HealthConfig()
    failover: FailoverPolicy = FailoverPolicy(first_token_timeout_s=1.0, stall_timeout_s=0.5)
    routing: RoutingPolicy = RoutingPolicy(data_residency=True)
    probe_interval_s: float = 2.0
    probe_unhealthy_interval_s: float = 1.0
    probe_edge_interval_s: float = 0.5
    probe_timeout_s: float = 1.5
    think_s: float = 0.1
    tokens: int = 10


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
    settings = settings or LabSettings()
    catalog = lab_catalog(lab, catalog)
    client = lab_client(lab, settings.tokens)
    registry = HealthRegistry(
        catalog.names, settings.health, baselines_ms={name: r.rtt_ms for name, r in lab.regions.items()}
    )
    prober = HealthProber(
        registry,
        catalog.regions,
        client.probe,
        interval_s=settings.probe_interval_s,
        unhealthy_interval_s=settings.probe_unhealthy_interval_s,
        edge_interval_s=settings.probe_edge_interval_s,
        timeout_s=settings.probe_timeout_s,
    )
    executor = FailoverExecutor(client.stream_turn, health=registry, budget=RetryBudget(), policy=settings.failover)
    result = RunResult()
    active: dict[tuple[str, str], float] = {}
    try:
        for _ in range(2):  # measure latency and warm every pool before the first call
            await prober.probe_once()
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
            tg.start_soon(prober.run)
            tg.start_soon(faults)
            async with anyio.create_task_group() as calls:
                for index, number in enumerate(callers):
                    calls.start_soon(_call, index, number, executor, registry, catalog, settings, result, finished)
            tg.cancel_scope.cancel()
    finally:
        for (region, kind), at in list(active.items()):
            await anyio.to_thread.run_sync(lab.restore, region, kind)
            result.faults.append(FaultEvent(kind, region, at, time.monotonic()))
        result.ended_at = time.monotonic()
        await client.aclose()
    return result


async def _call(
    index: int,
    number: str,
    executor: FailoverExecutor,
    registry: HealthRegistry,
    catalog: Catalog,
    settings: LabSettings,
    result: RunResult,
    finished: Callable[[], bool],
) -> None:
    routing = CallRouting(CallInfo.from_number(number), catalog, settings.routing)
    messages: list[Message] = []
    # Calls that start together stay in lockstep; stagger them over about one turn, with jittered pauses.
    rng = random.Random(index)
    await anyio.sleep((index * 0.137) % 0.6)
    turn_number = 0
    while not finished():
        turn_number += 1
        messages.append({"role": "user", "content": f"caller {index} question {turn_number}"})
        started = time.monotonic()
        expected = "".join(answer_for(messages, settings.tokens))
        heard: list[str] = []
        region = ""
        turn = None
        error = ""
        try:
            current = routing.next_turn(registry.snapshot())
            region = current.region
            turn = executor.turn(current.regions, messages)
            async for chunk in turn:
                heard.append(chunk)
        except (TurnFailed, CallError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        text = "".join(heard)
        if not error and text != expected:
            error = f"heard {text!r}, expected {expected!r}"
        record = turn.record if turn is not None else None
        result.turns.append(
            TurnResult(
                call=index,
                caller=number,
                started_at=started,
                ended_at=time.monotonic(),
                ok=not error,
                region=region,
                answered_by=record.answered_by if record else None,
                first_token_at=record.first_token_at if record else None,
                attempts=[
                    (a.region, a.outcome, a.started_at, a.first_token_at, a.ended_at)
                    for a in (record.attempts if record else [])
                ],
                error=error,
            )
        )
        messages.append({"role": "assistant", "content": text or "(silence)"})
        await anyio.sleep(settings.think_s * rng.uniform(0.5, 1.5))




async def route_check(
    lab: NetLab, numbers: Mapping[str, str], settings: LabSettings | None = None
) -> dict[str, dict[str, Any]]:
    """Probe the lab, route each caller with the measured health, and run one real turn each.

    Returns per label: the routed region, who answered, the measured RTT of that region.
    """
    settings = settings or LabSettings()
    catalog = lab_catalog(lab)
    client = lab_client(lab, settings.tokens)
    registry = HealthRegistry(catalog.names, settings.health)
    prober = HealthProber(registry, catalog.regions, client.probe, timeout_s=settings.probe_timeout_s)
    executor = FailoverExecutor(client.stream_turn, health=registry, policy=settings.failover)
    out: dict[str, dict[str, Any]] = {}
    try:
        for _ in range(3):
            await prober.probe_once()
        snapshot = registry.snapshot()
        for label, number in numbers.items():
            chosen = route(CallInfo.from_number(number), snapshot, catalog, settings.routing)
            messages: list[Message] = [{"role": "user", "content": f"hello from {label}"}]
            text, record = await executor.complete(chosen.regions, messages)
            view = snapshot.get(chosen.region)
            out[label] = {
                "region": chosen.region,
                "fallbacks": list(chosen.fallbacks),
                "answered_by": record.answered_by,
                "measured_rtt_ms": round(view.latency_ms, 1) if view and view.latency_ms else None,
                "heard_ok": text == "".join(answer_for(messages, settings.tokens)),
            }
    finally:
        await client.aclose()
    return out
