"""Run a benchmark's caller process beside a server and collect its JSON result.

The capacity ramp (``benchmarks.loadgen``), the conversation load
(``benchmarks.conversation_load``) and the comparison with pipecat all start
their callers the same way: a child Python on its own core, progress lines on
stderr, one JSON document on stdout. One runner keeps the three alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

__all__ = ["PROGRESS", "ProgressFn", "child_env", "labelled", "run_callers"]

ROOT = Path(__file__).resolve().parents[1]
PROGRESS = "@progress"  # a caller process's stderr line: "@progress 0.250 text"

ProgressFn = Callable[[float, str], None]


class _Server(Protocol):
    """What the runner needs of a running server: where it is and how it ended."""

    @property
    def base(self) -> str: ...

    @property
    def pid(self) -> int: ...

    def log_tail(self, lines: int = 30) -> str: ...


def child_env() -> dict[str, str]:
    """This environment with the repo first on the path and one BLAS thread (each child has one core)."""
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def labelled(progress: ProgressFn | None, label: str) -> ProgressFn | None:
    """``progress`` with ``label: `` before each text (several runs share one progress line)."""
    if progress is None:
        return None
    report = progress
    return lambda fraction, text: report(fraction, f"{label}: {text}")


def run_callers(module: str, args: Sequence[str], *, server: _Server, params: dict[str, Any], cpu: int | None,
                label: str, progress: ProgressFn | None = None,
                while_running: AbstractContextManager[Any] | None = None, error_lines: int = 30) -> dict[str, Any]:
    """Run ``python -m module args`` against ``server``; its stdout's JSON.

    Progress lines on its stderr go to ``progress``; any other stderr line is
    kept, and the last ``error_lines`` of them (with the server's log tail)
    make the error when the process fails. ``while_running`` (a profiler, say)
    is entered while the callers run.
    """
    command = [sys.executable, "-m", module, *args, "--base", server.base, "--server-pid", str(server.pid),
               "--params", json.dumps(params)]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    callers = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=ROOT,
                               text=True)
    errors: list[str] = []

    def read_progress() -> None:
        assert callers.stderr is not None
        for line in callers.stderr:
            if line.startswith(PROGRESS):
                _, fraction, *text = line.rstrip("\n").split(" ", 2)
                if progress is not None:
                    progress(float(fraction), text[0] if text else "")
            else:
                errors.append(line.rstrip("\n"))

    reader = threading.Thread(target=read_progress, daemon=True)  # the reader thread owns stderr
    reader.start()
    with while_running if while_running is not None else nullcontext():
        assert callers.stdout is not None
        stdout = callers.stdout.read()
        callers.wait()
    reader.join(5)
    if callers.returncode != 0:
        raise RuntimeError(f"{label} callers exited with {callers.returncode}:\n" + "\n".join(errors[-error_lines:])
                           + f"\n--- server log ---\n{server.log_tail()}")
    result: dict[str, Any] = json.loads(stdout)
    return result
