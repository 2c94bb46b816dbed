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
    """Slow exclusive load tests last (a stable sort: nothing else moves): the timing tests that run alone must not
    start on the heels of a 3-node, 150-call run (its processes winding down failed the failover lab's deadlines)."""
    items.sort(key=lambda item: all(item.get_closest_marker(name) is not None for name in ("slow", "exclusive")))
