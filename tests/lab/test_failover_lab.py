"""Routing and failover on an emulated five-region network with real latency.

Five network namespaces joined to this process by veth pairs, each with a fake
Bedrock behind a delay proxy giving the measured RTT from us-east-1 (ROUTING.md
section 6.1). Calls take production's model path: RoutedBedrock per call, routed
every turn by its CallRouting against a RoutingService whose prober watches the
lab, over boto3 ConverseStream. Faults are nftables rules and signals to
processes the lab started, always after the guard route is in place. Skipped,
with the reason, where namespaces cannot be created. Timings are reported
(printed here, measured in benchmarks/failover.py), not asserted.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.lab import (
    FAULT_KINDS,
    NetLab,
    RunResult,
    lab_unavailable_reason,
    route_check,
    run_calls,
    summarise,
)

pytestmark = pytest.mark.exclusive  # failover deadlines of 0.5-1 s: measured alone, not beside a loaded core

UK = "+447700900123"
US = "+12025550123"
DE = "+4930901820"
EU = ("eu-west-2", "eu-central-1")


def _skip_without_lab() -> None:
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(f"emulated regions unavailable: {reason}")
    pytest.importorskip("aiohttp")  # each region's fake Bedrock
    pytest.importorskip("boto3")  # the calls' ConverseStream client


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    _skip_without_lab()
    net = NetLab(workdir=tmp_path_factory.mktemp("netlab"))
    try:
        net.up()
        yield net
    finally:
        problems = net.down()
        left = net.leftovers()
        assert not problems and not left, f"lab teardown left {problems + left}"


def test_guard_route_is_in_place_so_nothing_leaves_the_machine(lab: NetLab) -> None:
    assert lab.guard_present()
    # An address in the lab prefix with no namespace behind it fails locally, not via eth0.
    spare = f"10.251.{lab.octet}.250"
    result = subprocess.run(["ip", "route", "get", spare], capture_output=True, text=True)
    assert result.returncode != 0 or "unreachable" in result.stdout


@pytest.mark.anyio
async def test_callers_land_in_their_home_regions(lab: NetLab) -> None:
    routes = await route_check(lab, {"US": US, "UK": UK, "DE": DE})
    print(json.dumps(routes))
    assert routes["US"]["region"] == routes["US"]["answered_by"] == "us-east-1"
    assert routes["UK"]["region"] == routes["UK"]["answered_by"] == "eu-west-2"
    assert routes["DE"]["region"] == routes["DE"]["answered_by"] == "eu-central-1"
    assert routes["UK"]["fallbacks"] == ["eu-central-1"]  # residency: EU only
    assert routes["DE"]["fallbacks"] == ["eu-west-2"]
    assert all(entry["heard_ok"] for entry in routes.values())


def _calls_mid_turn_at_fault(result: RunResult, region: str) -> dict[int, int]:
    """Call index -> index (in the call's turns) of the turn that was in ``region`` at the fault."""
    fault = result.faults[0]
    hit: dict[int, int] = {}
    for turn in result.turns:
        for attempt_region, outcome, started, _, ended in turn.attempts:
            if (
                attempt_region == region
                and outcome not in ("ok", "skipped")
                and started <= fault.at
                and (ended is None or ended >= fault.at)
            ):
                calls = [t for t in result.turns if t.call == turn.call]
                hit[turn.call] = calls.index(turn)
    return hit


@pytest.mark.anyio
@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_region_fault_mid_call_moves_the_call_to_its_fallback(lab: NetLab, kind: str) -> None:
    timeline = [(1.5, "inject", "eu-west-2", kind), (3.9, "restore", "eu-west-2", kind)]
    result = await run_calls(lab, [UK] * 10, 4.0, timeline)
    figures = summarise(result, EU)
    print(kind, json.dumps(figures))
    assert figures["failed_turns"] == 0, figures["failed_examples"]
    assert figures["residency_violations"] == 0
    # Every call and turn shares one boto3 client per region.
    assert figures["boto3_clients_per_region"] == {"eu-west-2": 1, "eu-central-1": 1}
    hit = _calls_mid_turn_at_fault(result, "eu-west-2")
    assert hit, "the fault hit no call mid-turn"
    for call, index in hit.items():
        turns = [t for t in result.turns if t.call == call]
        interrupted = turns[index]
        assert interrupted.ok and interrupted.answered_by == "eu-central-1"
        assert interrupted.regions_tried[:2] == ["eu-west-2", "eu-central-1"]
        if index + 1 < len(turns):  # the next turn goes straight to the fallback
            assert turns[index + 1].answered_by == "eu-central-1"
            assert turns[index + 1].regions_tried == ["eu-central-1"]


@pytest.mark.anyio
async def test_german_caller_stays_in_the_eu_when_frankfurt_goes_dark(lab: NetLab) -> None:
    timeline = [(1.2, "inject", "eu-central-1", "blackhole"), (3.4, "restore", "eu-central-1", "blackhole")]
    result = await run_calls(lab, [DE] * 6, 3.5, timeline)
    figures = summarise(result, EU)
    print(json.dumps(figures))
    assert figures["failed_turns"] == 0, figures["failed_examples"]
    assert figures["residency_violations"] == 0
    # London answered while Frankfurt was dark; nothing ever left the EU (on a loaded machine probe
    # latency can also move the first turns to London before the fault).
    assert "eu-west-2" in figures["answered_by"] and set(figures["answered_by"]) <= {"eu-central-1", "eu-west-2"}


@pytest.mark.anyio
async def test_two_hundred_turns_with_one_region_flapping_fail_none(lab: NetLab) -> None:
    timeline = []
    offset = 1.0
    for kind in FAULT_KINDS:  # down 1 s, up 3 s, through every fault kind
        timeline += [(offset, "inject", "eu-west-2", kind), (offset + 1.0, "restore", "eu-west-2", kind)]
        offset += 4.0
    result = await run_calls(lab, [UK] * 20, offset, timeline, min_turns=200)
    figures = summarise(result, EU)
    print(json.dumps(figures))
    assert figures["turns"] >= 200
    assert figures["failed_turns"] == 0, figures["failed_examples"]
    assert figures["residency_violations"] == 0
    assert figures["turns_retried"] > 0  # the flapping region was really hit


def test_teardown_removes_everything_it_made(tmp_path: Path) -> None:
    _skip_without_lab()
    net = NetLab({"r-one": 10.0}, workdir=tmp_path)
    try:
        net.up()
        net.blackhole("r-one")
        net.hang("r-one")
        assert net.leftovers()  # the lab is really there
    finally:
        problems = net.down()
    assert problems == []
    assert net.leftovers() == []
    assert not net.guard_present()


def test_faults_are_refused_without_the_guard_route(tmp_path: Path) -> None:
    _skip_without_lab()
    net = NetLab({"r-one": 10.0}, workdir=tmp_path)
    try:
        net.up()
        subprocess.run(["ip", "route", "del", "unreachable", net.prefix], check=True)
        with pytest.raises(RuntimeError, match="guard route"):
            net.inject("r-one", "blackhole")
        subprocess.run(["ip", "route", "replace", "unreachable", net.prefix], check=True)
    finally:
        net.down()
    assert net.leftovers() == []
