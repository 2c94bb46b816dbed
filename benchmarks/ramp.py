"""The capacity search both load generators run: ramp the calls up until a step fails, then bisect.

``measure(calls)`` holds that many calls live for a step and says whether
the step met its budgets (``{"pass": bool, ...}``). The search climbs from
``start`` by ``step`` to ``limit``; after the first failing step it bisects
(on multiples of 5) between the last passing and the first failing count,
``refine`` times at most. Given explicit ``steps``, it measures those
counts in order instead and stops at the first failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["Measure", "ramp"]

Measure = Callable[[int], Awaitable[dict[str, Any]]]


async def ramp(measure: Measure, *, start: int, step: int, limit: int, refine: int,
               steps: Sequence[int] = ()) -> tuple[int, int | None]:
    """The most calls that passed and the fewest that failed (None: every step passed)."""
    passed, failed_at = 0, None
    if steps:
        for target in steps:
            if not (await measure(int(target)))["pass"]:
                return passed, int(target)
            passed = int(target)
        return passed, None
    target = start
    while target <= limit:
        if not (await measure(target))["pass"]:
            failed_at = target
            break
        passed = target
        target += step
    high = failed_at
    for _ in range(refine if high is not None else 0):
        assert high is not None
        middle = (passed + high) // 2 // 5 * 5
        if middle <= passed or middle >= high:
            break
        if (await measure(middle))["pass"]:
            passed = middle
        else:
            high = middle
    return passed, high
