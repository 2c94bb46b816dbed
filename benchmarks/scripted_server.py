"""The server the load suites call: the real app and transport over a :class:`ScriptedStack`.

``python -m benchmarks.scripted_server --port P [--cpu N] [--timings JSON]``
serves ``aybiza.server.create_app(settings, stack=ScriptedStack(...))`` with
uvicorn exactly as ``aybiza serve`` does, optionally pinned to one core, and
adds read-only routes for the harness:

* ``GET /bench/stats[?reset=1&cdf=1&objects=1]``: RSS, open fds, asyncio
  tasks, threads, active calls, CPU seconds (and seconds spent waiting for a
  core), garbage-collector pauses, inbound frames and the frame-lateness
  histogram (``reset`` starts a new measuring window; ``objects`` counts the
  objects the garbage collector tracks, after a collection);
* ``GET /bench/stamps``: per call, the stamps of every complete turn;
* ``GET /bench/memory``: with ``--trace-memory``, the allocation sites that
  grew most since the previous request (to chase a soak's RSS growth).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aybiza.config import Settings
from aybiza.server import create_app
from aybiza.stack import SpeechStack
from aybiza.testing.scripted import ScriptedStack, ScriptedTimings
from benchmarks.machine import run_queue_wait_s

__all__ = ["AUTH_TOKEN", "GCPauses", "build_app", "main", "process_stats"]

AUTH_TOKEN = "aybiza-bench-auth-token"
_PAGE = os.sysconf("SC_PAGE_SIZE")


class GCPauses:
    """Times the garbage collector's pauses per generation (they stall every call on the loop)."""

    def __init__(self) -> None:
        self._started = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget the pauses counted so far."""
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]

    def install(self) -> None:
        """Start timing collections."""
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        pause = time.perf_counter() - self._started
        self.count[generation] += 1
        self.total_s[generation] += pause
        self.max_s[generation] = max(self.max_s[generation], pause)

    def summary(self, reset: bool = False) -> dict[str, Any]:
        """Per generation: collections, total and longest pause (ms)."""
        out = {f"gen{g}": {"count": self.count[g], "total_ms": round(self.total_s[g] * 1000, 2),
                           "max_ms": round(self.max_s[g] * 1000, 2)} for g in range(3)}
        if reset:
            self.reset()
        return out


GC_PAUSES = GCPauses()


def process_stats() -> dict[str, Any]:
    """This process's RSS (MB), open fds, threads and CPU seconds."""
    with open("/proc/self/statm") as statm:
        rss_pages = int(statm.read().split()[1])
    times = os.times()
    return {
        "rss_mb": round(rss_pages * _PAGE / 2**20, 2),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "cpu_s": round(times.user + times.system, 3),
        "cpu_wait_s": round(run_queue_wait_s(), 3),
    }


def build_app(settings: Settings, stack: ScriptedStack, *, slow_callback_ms: float | None = None) -> ASGIApp:
    """The aybiza app with ``/bench/*`` routes in front of it.

    ``slow_callback_ms`` turns on asyncio's debug mode and logs every callback
    that holds the event loop longer than that (to find what makes frames late).
    """
    inner = create_app(settings, stack=cast(SpeechStack, stack))
    state = inner.state.aybiza

    async def stats(request: Request) -> Response:
        body = process_stats()
        body.update(tasks=len(asyncio.all_tasks()), active_calls=len(getattr(state, "calls", ())),
                    frames_in=stack.frames_in, lateness=stack.lateness.summary(),
                    gc=GC_PAUSES.summary(reset=bool(request.query_params.get("reset"))))
        if request.query_params.get("objects"):  # slow (tens of ms): only asked for at idle
            gc.collect()
            objects = gc.get_objects()
            body["gc_objects"] = len(objects)
            kinds = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
            body["gc_types"] = dict(kinds)
            del objects
        if request.query_params.get("cdf") and stack.lateness.count:
            body["lateness_cdf_ms"] = [round(stack.lateness.percentile(q), 2) if q else 0.0 for q in range(101)]
        if request.query_params.get("reset"):
            stack.lateness.reset()
        return JSONResponse(body)

    async def stamps(request: Request) -> Response:
        return JSONResponse({call_id: [t.as_dict() for t in book.turns if t.complete]
                             for call_id, book in stack.calls.items()})

    snapshots: list[Any] = []

    async def memory(request: Request) -> Response:
        """Allocation sites that grew most since the previous call (needs ``--trace-memory``)."""
        import tracemalloc

        if not tracemalloc.is_tracing():
            return JSONResponse({"error": "start the server with --trace-memory"}, status_code=409)
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        top = []
        if snapshots:
            for stat in snapshot.compare_to(snapshots[-1], "lineno")[:20]:
                frame = stat.traceback[0]
                top.append({"where": f"{frame.filename}:{frame.lineno}",
                            "size_diff_kb": round(stat.size_diff / 1024, 1), "count_diff": stat.count_diff})
        snapshots[:] = [snapshot]
        return JSONResponse({"traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2), "growth": top})

    bench = Starlette(routes=[Route("/bench/stats", stats), Route("/bench/stamps", stamps),
                              Route("/bench/memory", memory)])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and slow_callback_ms is not None:
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = slow_callback_ms / 1000
            logging.getLogger("asyncio").addHandler(logging.StreamHandler())
        if scope["type"] == "http" and scope["path"].startswith("/bench/"):
            await bench(scope, receive, send)
        else:
            await inner(scope, receive, send)

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description="aybiza with scripted STT/LLM/TTS, for benchmarks")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, help="pin this process to one core")
    parser.add_argument("--timings", default="{}", help="ScriptedTimings fields as JSON")
    parser.add_argument("--record-turns", action="store_true")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--trace-memory", action="store_true", help="tracemalloc, for GET /bench/memory")
    parser.add_argument("--slow-callback-ms", type=float, help="log callbacks holding the loop longer than this")
    parser.add_argument("--data-dir", type=Path,
                        help="call store directory (default: a new temporary one, left behind)")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import uvicorn

    from aybiza.logs import configure

    fields = json.loads(args.timings)
    for key in ("transcripts", "reply"):
        if key in fields:
            fields[key] = tuple(fields[key])
    GC_PAUSES.install()
    if args.trace_memory:
        import tracemalloc

        tracemalloc.start(1)
    settings = Settings(host="127.0.0.1", port=args.port, public_url=f"http://127.0.0.1:{args.port}",
                        twilio_auth_token=AUTH_TOKEN,
                        data_dir=args.data_dir or Path(tempfile.mkdtemp(prefix="aybiza-bench-")),
                        max_calls=100_000, log_level=args.log_level)
    configure(settings.log_level, settings.log_format)
    stack = ScriptedStack(settings, ScriptedTimings(**fields), record_turns=args.record_turns)
    app = build_app(settings, stack, slow_callback_ms=args.slow_callback_ms)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                ws_max_size=settings.max_message_bytes, ws_ping_interval=None, lifespan="on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
