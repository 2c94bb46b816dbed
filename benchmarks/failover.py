"""Failover suite: failover time per fault kind and failed turns, on emulated regions.

Builds the five-region network lab (benchmarks.lab: namespaces, veth pairs,
delay proxies with the measured RTTs from us-east-1, a fake Bedrock per region)
and drives calls through production's model path: a RoutedBedrock per call,
turn by turn, routed by its CallRouting against a RoutingService whose prober
watches the lab, failing over in the FailoverExecutor, over boto3
ConverseStream (one client per region for the process). Then:

* routes a US, a UK and a German caller with live probe latencies;
* per fault kind (crash = kill -9, blackhole = nft drop, reset = nft TCP reset,
  hang = kill -STOP) and per deadline setting, runs concurrent UK calls
  (residency: EU only) and injects the fault into eu-west-2 mid-call;
* runs >= 200 turns while eu-west-2 flaps through every fault kind;
* (full run) 5 % packet loss each way, and a US caller losing us-east-1.

Failover time = fault -> first chunk from another region, per call that was
mid-turn in the faulted region (ROUTING.md section 5.4). Needs root; without
it the result says why it was skipped.

    .venv/bin/python benchmarks/failover.py [--quick]

Writes benchmarks/results/failover.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio

from aybiza.routing.failover import FailoverPolicy
from benchmarks.lab import (
    FAULT_KINDS,
    RTT_FROM_US_EAST_1_MS,
    LabSettings,
    NetLab,
    RunResult,
    lab_unavailable_reason,
    route_check,
    run_calls,
    summarise,
)

__all__ = ["run", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "failover.json"
UK, US, DE = "+447700900123", "+12025550123", "+4930901820"
EU = ["eu-west-2", "eu-central-1"]

DEADLINES = {
    # The design's numbers (ROUTING.md 7.4): first token max(1.5 x TTFT, 1.0 s), stall 0.5 s.
    "design_ftt1.0_stall0.5": FailoverPolicy(first_token_timeout_s=1.0, stall_timeout_s=0.5),
    # The same rule with a 0.5 s floor: the lab's TTFT is ~0.25 s, so 1.5 x TTFT is below 0.5 s.
    "tight_ftt0.5_stall0.5": FailoverPolicy(first_token_timeout_s=0.5, stall_timeout_s=0.5),
    # ROUTING.md's prototype comparison point.
    "slow_ftt1.0_stall1.0": FailoverPolicy(first_token_timeout_s=1.0, stall_timeout_s=1.0),
}


def _merge(results: list[RunResult]) -> RunResult:
    merged = RunResult()
    for result in results:
        merged.turns.extend(result.turns)
        merged.faults.extend(result.faults)
        merged.ended_at += result.ended_at - result.started_at
        for region, count in result.clients.items():
            merged.clients[region] = max(count, merged.clients.get(region, 0))
    return merged


async def _fault_matrix(lab: NetLab, quick: bool) -> dict[str, Any]:
    calls = 10 if quick else 20
    repeats = 1 if quick else 3
    names = list(DEADLINES)[:2] if quick else list(DEADLINES)
    matrix: dict[str, Any] = {}
    for name in names:
        settings = LabSettings(failover=DEADLINES[name])
        matrix[name] = {}
        for kind in FAULT_KINDS:
            runs = []
            for _ in range(repeats):
                timeline = [(1.5, "inject", "eu-west-2", kind), (4.0, "restore", "eu-west-2", kind)]
                runs.append(await run_calls(lab, [UK] * calls, 4.2, timeline, settings))
            figures = summarise(_merge(runs), EU)
            matrix[name][kind] = {"calls": calls, "repeats": repeats, **figures, **figures["fault_kinds"][kind]}
            del matrix[name][kind]["fault_kinds"]
            _line(f"{name:24} {kind:9}", matrix[name][kind])
    return matrix


async def _flapping(lab: NetLab) -> dict[str, Any]:
    timeline = []
    offset = 1.0
    for kind in FAULT_KINDS:
        timeline += [(offset, "inject", "eu-west-2", kind), (offset + 1.0, "restore", "eu-west-2", kind)]
        offset += 4.0
    settings = LabSettings(failover=DEADLINES["tight_ftt0.5_stall0.5"])
    result = await run_calls(lab, [UK] * 20, offset, timeline, settings, min_turns=200)
    figures = summarise(result, EU)
    _line("flapping eu-west-2", figures)
    for kind, per_kind in figures["fault_kinds"].items():
        _line(f"  flap {kind:9}", {**per_kind, "turns": per_kind["calls_mid_turn"], "failed_turns": "-"})
    return {"calls": 20, "down_s": 1.0, "up_s": 3.0, "deadlines": "tight_ftt0.5_stall0.5", **figures}


async def _loss(lab: NetLab) -> dict[str, Any]:
    settings = LabSettings(failover=DEADLINES["tight_ftt0.5_stall0.5"])
    baseline = summarise(await run_calls(lab, [UK] * 10, 4.0, (), settings), EU)

    async def lossy() -> RunResult:
        await anyio.to_thread.run_sync(lab.loss, "eu-west-2", 5.0)
        try:
            return await run_calls(lab, [UK] * 10, 6.0, (), settings)
        finally:
            await anyio.to_thread.run_sync(lab.clear_faults, "eu-west-2")

    with_loss = summarise(await lossy(), EU)
    out = {"loss_percent_each_way": 5, "baseline": baseline, "with_loss": with_loss}
    print(
        f"5% loss on eu-west-2: turns {with_loss['turns']}, failed {with_loss['failed_turns']}, TTFT p95 "
        f"{baseline['ttft_ms_p95']} -> {with_loss['ttft_ms_p95']} ms, worst first token "
        f"{with_loss['worst_turn_first_token_ms']} ms",
        file=sys.stderr,
    )
    return out


async def _us_caller(lab: NetLab) -> dict[str, Any]:
    settings = LabSettings(failover=DEADLINES["tight_ftt0.5_stall0.5"])
    timeline = [(1.5, "inject", "us-east-1", "crash"), (4.0, "restore", "us-east-1", "crash")]
    figures = summarise(await run_calls(lab, [US] * 10, 4.2, timeline, settings))
    figures.update(figures.pop("fault_kinds")["crash"])
    _line("US caller, us-east-1 crash", figures)
    return figures


def _line(label: str, figures: dict[str, Any]) -> None:
    print(
        f"{label}: turns {figures.get('turns')}, failed {figures.get('failed_turns')}, "
        f"failover p50/p95/max ms {figures.get('failover_ms_p50')}/{figures.get('failover_ms_p95')}/"
        f"{figures.get('failover_ms_max')}",
        file=sys.stderr,
    )


async def _run(quick: bool) -> dict[str, Any]:
    reason = lab_unavailable_reason()
    environment = {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "rtt_from_edge_ms": dict(RTT_FROM_US_EAST_1_MS),
        "model_path": "RoutedBedrock per call -> FailoverExecutor -> BedrockStreamer (boto3 ConverseStream) "
        "-> FakeBedrock in each region's namespace",
    }
    if reason is not None:
        return {"skipped": reason, "environment": environment}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aybiza-netlab-") as workdir, NetLab(workdir=Path(workdir)) as lab:
        environment.update(
            delay="netem" if lab.uses_netem else "userspace delay proxy",
            lab_prefix=lab.prefix,
            guard_route=lab.guard_present(),
        )
        result: dict[str, Any] = {"quick": quick, "environment": environment}
        result["routes"] = await route_check(lab, {"US": US, "UK": UK, "DE": DE})
        result["faults"] = await _fault_matrix(lab, quick)
        result["flapping"] = await _flapping(lab)
        if not quick:
            result["loss"] = await _loss(lab)
            result["us_caller_crash"] = await _us_caller(lab)
    result["leftovers_after_teardown"] = lab.leftovers()
    result["wall_s"] = round(time.monotonic() - started, 1)
    tight = result["faults"]["tight_ftt0.5_stall0.5"]
    result["targets"] = {
        "zero_failed_turns": all(f["failed_turns"] == 0 for table in result["faults"].values() for f in table.values())
        and result["flapping"]["failed_turns"] == 0,
        "flapping_turns_at_least_200": result["flapping"]["turns"] >= 200,
        "failover_max_ms_with_0.5s_stall": max(f["failover_ms_max"] or 0.0 for f in tight.values()),
        "failover_within_1s_with_0.5s_stall": all((f["failover_ms_max"] or 0.0) <= 1000.0 for f in tight.values()),
        "one_boto3_client_per_region": all(
            count == 1
            for figures in [*(f for table in result["faults"].values() for f in table.values()), result["flapping"]]
            for count in figures["boto3_clients_per_region"].values()
        ),
    }
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """Run the suite, write ``benchmarks/results/failover.json`` and return the figures."""
    # Every failover logs a warning on its call; the figures count them, the console need not.
    calls_log = logging.getLogger("aybiza.call")
    level = calls_log.level
    calls_log.setLevel(logging.ERROR)
    try:
        result = anyio.run(_run, quick)
    finally:
        calls_log.setLevel(level)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    """Command line: ``--quick`` for the short run."""
    parser = argparse.ArgumentParser(description="failover benchmark on emulated regions")
    parser.add_argument("--quick", action="store_true", help="fewer calls, repeats and settings")
    result = run(parser.parse_args().quick)
    print(json.dumps(result.get("targets", result), indent=2))


if __name__ == "__main__":
    main()
