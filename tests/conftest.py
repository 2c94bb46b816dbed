"""Shared pytest configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The benchmark suites and the network lab (benchmarks/) are not installed with the package.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with slow tests (whole calls in real time) first, so the workers start on the long ones and the quick
    unit tests fill the gaps at the end; the slow exclusive load tests last (a stable sort: nothing else moves), so
    the timing tests that run alone never start on the heels of a 3-node, 150-call run (its processes winding down
    failed the failover lab's deadlines)."""
    def marked(item: pytest.Item, *names: str) -> bool:
        return all(item.get_closest_marker(name) is not None for name in names)

    slow_modules = {item.path for item in items if marked(item, "slow")}
    items.sort(key=lambda item: 2 if marked(item, "slow", "exclusive") else 0 if item.path in slow_modules else 1)
