"""Soak figures: what counts as a leak between two idle snapshots."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.soak import call_path_objects, growth, type_growth  # noqa: E402


def test_call_path_objects_ignore_the_worker_thread_pool_and_plain_builtins() -> None:
    before = {"aybiza.pipeline.context.CallContext": 0, "builtins.dict": 5000, "asyncio.Task": 5,
              "anyio._backends._asyncio.WorkerThread": 2, "threading.Condition": 10}
    after = {"aybiza.pipeline.context.CallContext": 3, "builtins.dict": 5400, "asyncio.Task": 5,
             "anyio._backends._asyncio.WorkerThread": 9, "threading.Condition": 40}
    assert call_path_objects(after) - call_path_objects(before) == 3, "three call contexts outlived their calls"


def test_type_growth_lists_what_grew_most_first() -> None:
    assert type_growth({"a": 1, "b": 5, "c": 2}, {"a": 4, "b": 5, "d": 10}) == {"d": 10, "a": 3}


def test_growth_between_idle_snapshots() -> None:
    start = {"rss_mb": 100.0, "fds": 12, "tasks": 3, "threads": 2, "gc_objects": 1000}
    end = {"rss_mb": 101.5, "fds": 12, "tasks": 3, "threads": 4, "gc_objects": 1100}
    assert growth(start, end) == {"rss_mb": 1.5, "fds": 0, "tasks": 0, "threads": 2, "gc_objects": 100}
