"""The server the load suites call: ``aybiza serve``'s app with scripted providers at the SDK seams.

``python -m benchmarks.scripted_server --port P [--cpu N] [--timings JSON] [--probe-ingress]``
builds the app the way ``aybiza serve`` does — ``create_app(settings, engines)``,
served by uvicorn with the same options — on
:func:`~aybiza.testing.scripted.scripted_settings` (Deepgram STT and TTS,
Bedrock, no region probes) and :func:`~aybiza.testing.scripted.scripted_engines`
(a scripted Deepgram client and Bedrock client in place of the SDKs' clients,
with set delays). So every call runs our real stages — the Twilio transport,
VAD, quality, ``DeepgramSTT`` with its whisper fallback, turn-taking, the
journal, ``ReplyProcessor`` over ``RoutedBedrock``/``BedrockStreamer``,
``DeepgramTTS`` with its local-voice fallback — and only the far side of the
wire is scripted. Differences from a production ``aybiza serve``: the
providers' keys are not verified over the network (there is no provider to
ask), the call store is a scratch directory, and the agent is
:func:`~aybiza.testing.scripted.bench_agent` (its answers are never cached,
so every turn reaches the model).

Instruments, added from outside: the runtime's ``SpeechStack.build`` is
wrapped so that each call's stages start with a
:class:`~aybiza.testing.scripted.FrameClock` (inbound frames counted, each
frame's lateness through the whole synchronous chain measured into one
process-wide histogram). With ``--probe-ingress`` the wrapper also numbers
each call's inbound frames and puts a probe right in front of the STT stage
that stamps when each frame's audio reaches it (``/bench/ingress``).

Read-only routes for the harness:

* ``GET /bench/stats[?reset=1&cdf=1&objects=1]``: RSS, open fds, asyncio
  tasks, threads, active calls, CPU seconds (and seconds spent waiting for a
  core), garbage-collector pauses, inbound frames and the frame-lateness
  histogram (``reset`` starts a new measuring window; ``objects`` counts the
  objects the garbage collector tracks, after a collection);
* ``GET /bench/ingress``: per call, ``[frame number, monotonic time its audio
  reached the STT stage, held back by the VAD, seconds since the transport
  stamped its arrival]`` for every frame (with ``--probe-ingress``);
* ``GET /bench/memory``: with ``--trace-memory``, the allocation sites that
  grew most since the previous request (to chase a soak's RSS growth).

Per-turn timings are not kept here: the suites read them from the call
records (``GET /api/calls/{id}``), which our stages' ledger fills.
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
from collections import Counter, deque
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.pipeline import CallContext, Frame, InputAudio, Processor
from aybiza.processors.vad import VADProcessor
from aybiza.runtime import Runtime
from aybiza.server import create_app
from aybiza.testing.scripted import (
    FrameClock,
    LatencyHistogram,
    ScriptedTimings,
    bench_agent,
    scripted_engines,
    scripted_settings,
)
from benchmarks.machine import run_queue_wait_s

__all__ = ["API_TOKEN", "AUTH_TOKEN", "BenchInstruments", "GCPauses", "bench_settings", "build_app",
           "forget_scripted_requests", "main", "process_stats"]

AUTH_TOKEN = "aybiza-bench-auth-token"
API_TOKEN = "aybiza-bench-api-token"  # call records are read with it (GET /api/calls/{id})
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


# -- ingress probes -------------------------------------------------------------------------------


class _IngressBook:
    """One call's frames: number by arrival stamp, and when each reached the STT stage."""

    __slots__ = ("count", "numbers", "order", "latest", "reached")

    KEEP = 500  # frames (10 s) a number is kept for: the VAD holds a frame back for well under a second

    def __init__(self) -> None:
        self.count = 0
        self.numbers: dict[float, int] = {}  # InputAudio.captured_at -> 1-based frame number
        self.order: deque[float] = deque()
        self.latest = 0.0  # captured_at of the newest frame in
        # (frame number, reached the STT stage at, held back by the VAD, seconds since the transport stamped it)
        self.reached: list[tuple[int, float, bool, float]] = []

    def arrived(self, captured_at: float) -> None:
        """Number a frame (frames the VAD gates away never reach the probe: their numbers expire)."""
        self.count += 1
        self.numbers[captured_at] = self.count
        self.order.append(captured_at)
        self.latest = captured_at
        if len(self.order) > self.KEEP:
            self.numbers.pop(self.order.popleft(), None)


class _FrameNumbers(Processor):
    """Numbers a call's inbound frames as they arrive (the Twilio caller numbers its media messages alike)."""

    name = "bench-frame-numbers"

    def __init__(self, book: _IngressBook) -> None:
        super().__init__()
        self.book = book

    async def process(self, frame: Frame) -> None:
        if type(frame) is InputAudio:
            self.book.arrived(frame.captured_at)
        await self.push(frame)


class _STTProbe(Processor):
    """Right in front of the STT stage: notes when each frame's audio reached it."""

    name = "bench-stt-probe"

    def __init__(self, book: _IngressBook) -> None:
        super().__init__()
        self.book = book

    async def process(self, frame: Frame) -> None:
        if type(frame) is InputAudio:
            book = self.book
            number = book.numbers.pop(frame.captured_at, None)
            if number is not None:
                now = time.monotonic()
                book.reached.append((number, now, frame.captured_at != book.latest, now - frame.captured_at))
        await self.push(frame)


# -- the instruments ------------------------------------------------------------------------------


class BenchInstruments:
    """What the benchmarks measure inside the server, put around each call's stages by wrapping ``build``."""

    def __init__(self, *, probe_ingress: bool = False) -> None:
        self.lateness = LatencyHistogram()
        self.frames_in = 0
        self.probe_ingress = probe_ingress
        self.ingress: dict[str, _IngressBook] = {}

    def _frame(self) -> None:
        self.frames_in += 1

    def install(self, runtime: Runtime) -> None:
        """Wrap ``runtime.stack.build``: a FrameClock first (and the ingress probes) in every call."""
        stack = runtime.stack
        build = stack.build

        def instrumented(ctx: CallContext, *args: Any, **kwargs: Any) -> tuple[list[Processor], list[Frame]]:
            processors, opening = build(ctx, *args, **kwargs)
            first: list[Processor] = [FrameClock(self.lateness.add, self._frame)]
            if self.probe_ingress:
                book = self.ingress[ctx.call_id] = _IngressBook()
                first.append(_FrameNumbers(book))
                stt = _stt_index(processors)
                processors = [*processors[:stt], _STTProbe(book), *processors[stt:]]
            return [*first, *processors], opening

        stack.build = instrumented  # type: ignore[method-assign]


def _stt_index(processors: list[Processor]) -> int:
    """Where the STT stage is in the list ``SpeechStack.build`` returned: right after the VAD."""
    for index, processor in enumerate(processors):
        if isinstance(processor, VADProcessor):
            return index + 1
    raise LookupError(f"no VAD (and so no STT stage after it) among {[p.name for p in processors]}")


def bench_settings(port: int, data_dir: Path, *, log_level: str = "WARNING") -> Settings:
    """The scripted production stack's settings for a bench server on ``port`` (agents in ``data_dir``)."""
    agents = data_dir / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    agent = bench_agent().model_dump(mode="json", exclude_defaults=True)
    (agents / f"{agent['id']}.yaml").write_text(yaml.safe_dump(agent, sort_keys=False), encoding="utf-8")
    return scripted_settings(host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}",
                             twilio_auth_token=AUTH_TOKEN, data_dir=data_dir, agents_dir=agents,
                             default_agent=agent["id"], max_calls=100_000, log_level=log_level,
                             api_token=API_TOKEN)


def forget_scripted_requests(engines: Engines, settings: Settings, keep: int = 64) -> None:
    """Keep only the scripted Bedrock's last ``keep`` requests.

    It remembers every request for tests to read; in a load run that is
    memory the test double holds, which a soak would count as our leak.
    """
    client = engines.bedrock(settings.bedrock_region)
    if isinstance(getattr(client, "requests", None), list):
        client.requests = deque(maxlen=keep)


def build_app(settings: Settings, engines: Engines, instruments: BenchInstruments, *,
              slow_callback_ms: float | None = None) -> ASGIApp:
    """``create_app(settings, engines)`` with the instruments in every call and ``/bench/*`` routes in front.

    ``slow_callback_ms`` turns on asyncio's debug mode and logs every callback
    that holds the event loop longer than that (to find what makes frames late).
    """
    inner = create_app(settings, engines, freeze_heap=True)  # as aybiza serve does
    runtime: Runtime = inner.state.aybiza
    instruments.install(runtime)
    lateness = instruments.lateness

    async def stats(request: Request) -> Response:
        body = process_stats()
        body.update(tasks=len(asyncio.all_tasks()), active_calls=len(runtime.calls),
                    frames_in=instruments.frames_in, lateness=lateness.summary(),
                    end_of_turn_ms=settings.end_of_turn_ms,
                    gc=GC_PAUSES.summary(reset=bool(request.query_params.get("reset"))))
        if request.query_params.get("objects"):  # slow (tens of ms): only asked for at idle
            gc.collect()
            objects = gc.get_objects()
            body["gc_objects"] = len(objects)
            kinds = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
            body["gc_types"] = dict(kinds)
            del objects
        if request.query_params.get("cdf") and lateness.count:
            body["lateness_cdf_ms"] = [round(lateness.percentile(q), 2) if q else 0.0 for q in range(101)]
        if request.query_params.get("reset"):
            lateness.reset()
        return JSONResponse(body)

    async def ingress(request: Request) -> Response:
        return JSONResponse({call_id: book.reached for call_id, book in instruments.ingress.items()})

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

    bench = Starlette(routes=[Route("/bench/stats", stats), Route("/bench/ingress", ingress),
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


def parse_timings(text: str) -> ScriptedTimings:
    """``ScriptedTimings`` from JSON fields (lists become tuples)."""
    fields: dict[str, Any] = json.loads(text)
    for key in ("transcripts", "reply"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return ScriptedTimings(**fields)


def main(argv: list[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description="aybiza serve on scripted Deepgram and Bedrock, for benchmarks")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, help="pin this process to one core")
    parser.add_argument("--timings", default="{}", help="ScriptedTimings fields as JSON")
    parser.add_argument("--probe-ingress", action="store_true", help="stamp frames reaching the STT stage")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--trace-memory", action="store_true", help="tracemalloc, for GET /bench/memory")
    parser.add_argument("--slow-callback-ms", type=float, help="log callbacks holding the loop longer than this")
    parser.add_argument("--data-dir", type=Path,
                        help="call store and agent directory (default: a new temporary one, left behind)")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    from aybiza.config import limit_math_threads
    from aybiza.logs import configure
    from aybiza.serving import serve

    limit_math_threads()
    GC_PAUSES.install()
    if args.trace_memory:
        import tracemalloc

        tracemalloc.start(1)
    settings = bench_settings(args.port, args.data_dir or Path(tempfile.mkdtemp(prefix="aybiza-bench-")),
                              log_level=args.log_level)
    configure(settings.log_level, settings.log_format)
    engines = scripted_engines(settings, parse_timings(args.timings))
    engines.check()
    forget_scripted_requests(engines, settings)
    app = build_app(settings, engines, BenchInstruments(probe_ingress=args.probe_ingress),
                    slow_callback_ms=args.slow_callback_ms)
    serve(app, settings)  # with the limits `aybiza serve` runs with
    return 0


if __name__ == "__main__":
    sys.exit(main())
