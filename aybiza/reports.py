"""What ``aybiza calls``, ``aybiza costs`` and ``aybiza route`` print (rich tables as text).

Each function reads the durable state (or the routing data) directly, so no
server needs to run, and returns the text to print.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from .config import Settings
from .edge.calls import open_call_store
from .edge.records import CallRecord
from .routing.costs import CallCost, aggregate
from .routing.health import HealthConfig, HealthSnapshot
from .routing.probes import ProbeResult
from .routing.router import CallInfo, NoEligibleRegion, format_route_table, format_score_table, route
from .routing.scenario import DESIGN_PRESET, Scenario, compute, format_scenario, measure, measured_scenario
from .routing.service import RoutingService

__all__ = ["calls_report", "costs_report", "scenario_report", "route_report", "archived_records"]


def _render(*tables: Table) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=False, color_system=None)
    for table in tables:
        console.print(table)
    return buffer.getvalue()


async def archived_records(settings: Settings, limit: int) -> list[CallRecord]:
    """Up to ``limit`` most recent call records (live and archived), read-only."""
    store = await open_call_store(settings.data_dir, redis_url=settings.redis_url or None,
                                  archive_url=settings.archive_url or None, readonly=True)
    try:
        listing = await store.list_calls(limit=limit)
        records = []
        for summary in [*listing.get("active", []), *listing.get("calls", [])]:
            record = await store.get(summary["call_id"])
            if record is not None:
                records.append(record)
        return records
    finally:
        await store.aclose()


def calls_report(settings: Settings, limit: int = 20) -> str:
    """The most recent calls, one line each."""
    records = anyio.run(archived_records, settings, limit)
    table = Table(title=f"calls ({len(records)} most recent)")
    for column in ("call", "status", "transport", "caller", "region", "turns", "seconds", "outcome", "cost $"):
        table.add_column(column, justify="right" if column in ("turns", "seconds", "cost $") else "left")
    for record in records:
        cost = (record.cost or {}).get("total_usd")
        table.add_row(record.call_id, record.status, record.transport, record.caller or "-",
                      record.route.get("region", "-"), str(len(record.turns)), f"{record.duration_s:.1f}",
                      record.outcome or "-", f"{Decimal(str(cost)):.4f}" if cost is not None else "-")
    return _render(table)


def _money_table(title: str, label: str, amounts: Mapping[str, Decimal]) -> Table:
    table = Table(title=title)
    table.add_column(label)
    table.add_column("USD", justify="right")
    for key, amount in sorted(amounts.items(), key=lambda item: -item[1]):
        table.add_row(key, f"{amount:.6f}")
    return table


def costs_report(settings: Settings, limit: int = 1000) -> str:
    """Per-call, per-model and per-region cost totals over the archived calls."""
    records = [r for r in anyio.run(archived_records, settings, limit) if r.cost]
    costs = [CallCost.from_dict(r.cost) for r in records if r.cost]
    if not costs:
        return "no priced calls yet\n"
    totals = aggregate(costs)
    per_call = Table(title=f"cost per call (latest {min(len(records), 20)} of {len(records)})")
    for column in ("call", "region", "minutes", "USD"):
        per_call.add_column(column, justify="right" if column in ("minutes", "USD") else "left")
    for record, cost in list(zip(records, costs, strict=True))[:20]:
        per_call.add_row(record.call_id, cost.region, f"{record.duration_s / 60:.2f}", f"{cost.total:.6f}")
    summary = Table(title="totals")
    summary.add_column("calls", justify="right")
    summary.add_column("total USD", justify="right")
    summary.add_column("per call USD", justify="right")
    summary.add_column("saved by the edge USD", justify="right")
    summary.add_row(str(totals.calls), f"{totals.total:.6f}", f"{totals.per_call:.6f}", f"{totals.edge_savings:.6f}")
    return _render(per_call, _money_table("by model", "model", totals.by_model),
                   _money_table("by region", "region", totals.by_region),
                   _money_table("by kind", "kind", totals.by_kind), summary)


def scenario_report(settings: Settings, *, measured: bool = False, overrides: Mapping[str, Any] | None = None) -> str:
    """The monthly and per-call cost of a deployment: the design's inputs, or ratios measured on real calls."""
    scenario: Scenario = DESIGN_PRESET
    if measured:
        records = anyio.run(archived_records, settings, 1000)
        usage = [(r.usage, r.duration_s / 60) for r in records if r.status != "active"]
        scenario = measured_scenario(measure(usage))
    if overrides:
        scenario = dataclasses.replace(scenario, **{k: v for k, v in overrides.items() if v is not None})
    return format_scenario(compute(scenario))


ROUTE_PROBE_TIMEOUT_S = 1.5
"""How long ``aybiza route`` waits for each region's probe."""


def route_report(settings: Settings, caller: str, *, residency: str | None = None, probe: bool = True) -> str:
    """Which regions were probed and how they answered, then the score table and the choice for ``caller``.

    The catalog and endpoints come from ``settings`` (``AYBIZA_CATALOG_PATH``,
    ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``). Every region is probed once, unless
    ``probe`` is false or ``AYBIZA_HEALTH_PROBES`` is off; a single probe has no
    history, so one failure counts as unhealthy here. Regions not probed show
    their health as unknown, never as healthy.
    """
    service = RoutingService.from_settings(settings, health_config=HealthConfig(unhealthy_after=1))
    lines: list[str] = []
    if settings.bedrock_endpoint_url:
        lines.append(f"Endpoint override for every region: {settings.bedrock_endpoint_url}")
    health = HealthSnapshot()
    if probe and settings.health_probes:
        results = anyio.run(lambda: service.probe_once(timeout_s=ROUTE_PROBE_TIMEOUT_S))
        lines += _probe_lines(results)
        probed = service.snapshot()
        health = HealthSnapshot.of(*(probed.regions[name] for name in results), taken_at=probed.taken_at)
    else:
        why = "--no-probe" if not probe else "AYBIZA_HEALTH_PROBES is off"
        lines.append(f"Regions not probed ({why}): their health is unknown; latencies are the catalog's priors.")
    lines.append("")
    try:
        chosen = route(CallInfo.from_number(caller), health, service.catalog, service.policy_for(residency))
        lines.append(format_route_table(chosen))
    except NoEligibleRegion as error:
        lines += [str(error), "", format_score_table(error.scores)]
    return "\n".join(lines) + "\n"


def _probe_lines(results: Mapping[str, ProbeResult]) -> list[str]:
    """One line per probed region: where the probe went and its latency, or why it failed."""
    lines = [f"Probed {len(results)} region(s) once (timeout {ROUTE_PROBE_TIMEOUT_S:g} s; "
             "a first probe's time includes connecting):"]
    width = max((len(name) for name in results), default=0)
    for name, result in results.items():
        if result.latency_s is not None:
            outcome = f"ok in {result.latency_s * 1000:.0f} ms"
        else:
            outcome = f"failed: {result.error}"
        lines.append(f"  {name.ljust(width)}  {outcome}  ({result.target})")
    return lines
