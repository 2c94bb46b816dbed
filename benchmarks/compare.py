"""``aybiza bench compare``: aybiza and pipecat-ai side by side, the same callers, one core each.

Reproducible by anyone with a checkout and PyPI: pipecat-ai (pinned,
:data:`PIPECAT`) is installed with its dependencies into its **own** virtual
environment under the cache directory (``$AYBIZA_BENCH_CACHE``, default
``~/.cache/aybiza-bench``), never into the project's. If that install fails
(no network, no wheel for this platform) the suite says so and reports no
pipecat figure: nothing about pipecat is a constant in our code — measured,
or not shown.

Servers, each pinned to the same core in turn, the callers on the other:

* **aybiza**: ``benchmarks.scripted_server`` — ``aybiza serve``'s app, every
  call through our real stages (transport, VAD, quality, Deepgram STT stage,
  end of turn, journal, Bedrock model stage, Aura TTS stage) with the far
  side of the provider SDKs scripted in-process; the turn ends on a fixed
  silence (no smart-turn model: pipecat's example runs none either);
* **pipecat**: ``benchmarks.pipecat_server`` in pipecat's venv — built as
  pipecat's Twilio example builds it (FastAPI, ``TwilioFrameSerializer``,
  ``FastAPIWebsocketTransport``, Silero ``VADProcessor``), with a canned
  replier in place of STT→LLM→TTS in the talking mode (see its docstring: it
  does less work per turn than our stages do, so its figure is generous).

Modes, with the same load generator: **listening** (``benchmarks.loadgen``'s
``capacity`` ramp: callers speak now and then, mostly listen) and **talking**
(``benchmarks.conversation_load``: caller and agent each ~40 % of the call, a
barge-in every third turn). Capacity: the largest step with p99 inbound
frame lateness (and, talking, agent-audio lateness) <= 20 ms and no failed
call; CPU per call (over the steps whose core was not saturated) and RSS per
call are slopes over the steps, and ``calls_per_core_by_cpu_time`` is how
many calls a whole core's CPU time would pay for — the figure that holds on
a busy machine, where other work makes frames late at any load (steps where
the server waited for its core more than 20 % of the time are left out of
the slope; "not measured" when too few remain). The servers run one after
the other, so a machine whose load changes between runs skews the lateness
verdicts: read them with each run's ``server_waiting_for_cpu_percent``.

Run: ``aybiza bench compare`` or ``.venv/bin/python -m benchmarks.compare [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aybiza.testing.processes import free_port, serving
from benchmarks.callers import ProgressFn, labelled, run_callers
from benchmarks.capacity import rss_per_call_mb
from benchmarks.conversation import cpu_per_call
from benchmarks.loadgen import ServerProcess, cpu_plan, scripted_server
from benchmarks.machine import wait_for_quiet

__all__ = ["PIPECAT", "cache_dir", "cpu_per_call", "ensure_pipecat", "ratio_table", "run"]

ROOT = Path(__file__).resolve().parents[1]
PIPECAT = "pipecat-ai[websocket]==1.14.0"
LATENESS_P99_MS = 20.0

LISTEN_OURS = {"start": 50, "step": 50, "max_calls": 800, "settle_s": 4.0, "window_s": 8.0, "refine": 2}
LISTEN_PIPECAT = {"start": 2, "step": 4, "max_calls": 200, "settle_s": 4.0, "window_s": 8.0, "refine": 2}
TALK_OURS = {"start": 50, "step": 50, "max_calls": 600, "settle_s": 4.0, "window_s": 8.0, "refine": 2}
TALK_PIPECAT = {"start": 2, "step": 4, "max_calls": 200, "settle_s": 4.0, "window_s": 8.0, "refine": 2}
QUICK = {"settle_s": 3.0, "window_s": 5.0, "refine": 1}


def cache_dir() -> Path:
    """Where pipecat's venv lives: ``$AYBIZA_BENCH_CACHE`` or ``~/.cache/aybiza-bench``."""
    return Path(os.environ.get("AYBIZA_BENCH_CACHE") or Path.home() / ".cache" / "aybiza-bench")


def _uvicorn_pin() -> str:
    """The uvicorn we serve with, so both servers run the same ASGI server."""
    from importlib.metadata import version

    return f"uvicorn=={version('uvicorn')}"


def ensure_pipecat(progress: ProgressFn | None = None) -> tuple[Path | None, str]:
    """pipecat's venv python (installing it once), or None and why not."""
    venv = cache_dir() / ("venv-" + PIPECAT.replace("[", "-").replace("]", "").replace("==", "-"))
    python = venv / "bin" / "python"
    marker = venv / ".aybiza-installed"
    if marker.exists() and python.exists():
        return python, f"{PIPECAT} from {venv}"
    if progress is not None:
        progress(0.0, f"installing {PIPECAT} into {venv}")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        # --no-compile: Python compiles the few modules the server imports when it imports them.
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-compile", PIPECAT,
                               _uvicorn_pin()], capture_output=True, text=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as error:
        return None, f"could not install {PIPECAT}: {error}"
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        return None, f"could not install {PIPECAT} (pip exited {done.returncode}): {tail}"
    marker.write_text(PIPECAT + "\n")
    return python, f"{PIPECAT} from {venv} (installed now)"


@contextmanager
def pipecat_server(python: Path, cpu: int | None, *, talk: bool, vad: bool = True) -> Iterator[ServerProcess]:
    """``benchmarks/pipecat_server.py`` in pipecat's venv on a free port, pinned to ``cpu``."""
    port = free_port()
    log_path = Path(tempfile.gettempdir()) / f"aybiza-compare-pipecat-{port}.log"
    command = [str(python), str(ROOT / "benchmarks" / "pipecat_server.py"), "--port", str(port)]
    command += ["--talk"] if talk else []
    command += [] if vad else ["--no-vad"]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of ours on its path
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    with serving(command, health_url=f"http://127.0.0.1:{port}/health", log_path=log_path, env=env, cwd=ROOT,
                 what="pipecat server", timeout_s=120) as process:
        yield ServerProcess(port, process, log_path)
    log_path.unlink(missing_ok=True)


def _drive(server: ServerProcess, mode: str, params: dict[str, Any], cpu: int | None, label: str,
           progress: ProgressFn | None) -> dict[str, Any]:
    """Run the load generator's ramp for ``mode`` against ``server``; its JSON result."""
    module, args = ("benchmarks.loadgen", ["capacity"]) if mode == "listening" else ("benchmarks.conversation_load", [])
    return run_callers(module, args, server=server, params=params, cpu=cpu, label=label,
                       progress=labelled(progress, label), error_lines=20)


def _figures(raw: dict[str, Any]) -> dict[str, Any]:
    steps = raw["steps"]
    per_call = cpu_per_call(steps)
    return {"max_calls": raw["max_calls"], "first_failing_calls": raw["first_failing_calls"],
            "server_cpu_ms_per_call_second": per_call,
            "calls_per_core_by_cpu_time": round(1000 / per_call) if per_call and per_call > 0 else None,
            "rss_mb_per_call": rss_per_call_mb(steps), "idle_rss_mb": raw["idle_rss_mb"],
            "failures_sample": raw.get("failures_sample", []),
            "curve": [{"calls": s["calls"], "pass": s["pass"], "server_cpu_percent": s["server_cpu_percent"],
                       "server_waiting_for_cpu_percent": s.get("server_waiting_for_cpu_percent"),
                       "rss_mb": s["rss_mb"],
                       "lateness_p99_ms": (s.get("lateness_ms") or s.get("inbound_lateness_ms") or {}).get("p99_ms"),
                       "agent_lateness_p99_ms": (s.get("agent_lateness_ms") or {}).get("p99_ms")}
                      for s in sorted(steps, key=lambda s: s["calls"])]}


def ratio_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: per mode, both servers' figures and aybiza's advantage (x times)."""
    lines = ["| mode | figure | aybiza | pipecat | aybiza advantage |", "|---|---|---:|---:|---:|"]
    for mode in ("listening", "talking"):
        ours, theirs = results.get(f"aybiza_{mode}"), results.get(f"pipecat_{mode}")
        if ours is None:
            continue
        for key, label, higher_is_better in (("max_calls", "calls per core (p99 lateness <= 20 ms)", True),
                                             ("calls_per_core_by_cpu_time", "calls a core's CPU time pays for", True),
                                             ("server_cpu_ms_per_call_second", "CPU ms per call-second", False),
                                             ("rss_mb_per_call", "RSS MB per call", False)):
            a = ours.get(key)
            b = theirs.get(key) if theirs else None
            ratio = "-"
            if isinstance(a, int | float) and isinstance(b, int | float) and a > 0 and b > 0:
                ratio = f"{(a / b if higher_is_better else b / a):.1f}x"
            lines.append(f"| {mode} | {label} | {_show(a)} | {_show(b)} | {ratio} |")
    return lines


def _show(value: Any) -> str:
    return "not measured" if value is None else str(value)


def run(quick: bool = False, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Install pipecat (once), then ramp both servers in both modes; the ratio table in ``markdown``."""
    python, how = ensure_pipecat(progress)
    server_cpu, callers_cpu = cpu_plan()
    result: dict[str, Any] = {"quick": quick, "pipecat": how, "server_cpu": server_cpu, "callers_cpu": callers_cpu}
    results: dict[str, dict[str, Any]] = {}
    tweak = QUICK if quick else {}
    plans: list[tuple[str, str, dict[str, Any]]] = [("aybiza", "listening", LISTEN_OURS),
                                                      ("aybiza", "talking", TALK_OURS)]
    if python is not None:
        plans += [("pipecat", "listening", LISTEN_PIPECAT), ("pipecat", "talking", TALK_PIPECAT)]
    else:
        print(f"aybiza bench compare: pipecat skipped: {how}", file=sys.stderr)
    for name, mode, params in plans:
        label = f"{name} {mode}"
        if progress is not None:
            progress(0.0, f"{label}: waiting for a quiet machine")
        busy = wait_for_quiet()
        server_context = (scripted_server(cpu=server_cpu) if name == "aybiza"
                          else pipecat_server(python, server_cpu, talk=mode == "talking"))  # type: ignore[arg-type]
        with server_context as server:
            raw = _drive(server, mode, {**params, **tweak}, callers_cpu, label, progress)
        results[f"{name}_{mode}"] = {**_figures(raw), "machine_busy_percent_before": busy}
    result.update(results)
    table = ratio_table(results)
    result["markdown"] = [f"Peer comparison ({how if python else 'pipecat not installed: ' + how}); server on core "
                          f"{server_cpu}, callers on core {callers_cpu}; capacity at p99 lateness <= "
                          f"{LATENESS_P99_MS:g} ms:", "", *table]
    print("\n".join(table), file=sys.stderr)
    return result


def main() -> None:
    """Command line: ``--quick`` for shorter windows."""
    parser = argparse.ArgumentParser(description="aybiza vs pipecat-ai, one core each")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(args.quick, progress=lambda f, text: print(f"{f:5.0%} {text}", file=sys.stderr))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
