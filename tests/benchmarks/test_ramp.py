"""The capacity search of both load generators: climb, then bisect between the last pass and the first failure."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.ramp import ramp

pytestmark = pytest.mark.anyio


def _server(capacity: int) -> tuple[list[int], Any]:
    measured: list[int] = []

    async def measure(calls: int) -> dict[str, Any]:
        measured.append(calls)
        return {"calls": calls, "pass": calls <= capacity}

    return measured, measure


async def test_it_climbs_by_step_then_bisects_on_multiples_of_five() -> None:
    measured, measure = _server(capacity=137)
    assert await ramp(measure, start=50, step=50, limit=400, refine=3) == (135, 140)
    assert measured == [50, 100, 150, 125, 135, 140]


async def test_every_step_passing_has_no_failing_count() -> None:
    measured, measure = _server(capacity=1000)
    assert await ramp(measure, start=20, step=20, limit=60, refine=3) == (60, None)
    assert measured == [20, 40, 60]


async def test_explicit_steps_are_measured_in_order_until_one_fails() -> None:
    measured, measure = _server(capacity=70)
    assert await ramp(measure, start=0, step=0, limit=0, refine=3, steps=[25, 50, 75, 100]) == (50, 75)
    assert measured == [25, 50, 75]


async def test_a_first_step_that_fails_leaves_nothing_passed() -> None:
    _, measure = _server(capacity=10)
    assert await ramp(measure, start=50, step=50, limit=400, refine=0) == (0, 50)
