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
