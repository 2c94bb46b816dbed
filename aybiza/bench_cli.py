"""``aybiza bench [SUITE ...] [--out DIR]``: run the latency benchmarks of a source checkout against their budgets.

The suites live in ``benchmarks/`` next to the ``aybiza`` package (they are
not installed with it); :func:`bench_main` finds them, runs them through
``benchmarks.harness`` and returns its exit status. The report (JSON,
Markdown, plots) goes to ``out``: by default ``bench-results/`` in the
current working directory, never into the package or the source tree.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

__all__ = ["DEFAULT_OUT", "bench_main", "benchmarks_root"]

DEFAULT_OUT = Path("bench-results")


def benchmarks_root() -> Path | None:
    """The checkout holding ``benchmarks/harness.py`` (None for an installed package)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "benchmarks" / "harness.py").is_file() else None


def bench_main(suites: list[str], quick: bool, out: Path | None = None) -> int:
    """Run ``suites`` (every suite when empty) in quick or full mode, report into ``out``; 0 when every budget is met.

    ``out`` defaults to ``bench-results/`` under the current working directory.
    1: a budget missed or a suite failed; 2: unknown suite or no benchmarks directory.
    """
    root = benchmarks_root()
    if root is None:
        print("aybiza bench needs a source checkout: benchmarks/ is not installed with the package",
              file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    harness = importlib.import_module("benchmarks.harness")
    try:
        names = harness.select(suites)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    directory = (out if out is not None else Path.cwd() / DEFAULT_OUT).resolve()
    return int(harness.run_and_report([s.name for s in names], quick, directory=directory))
