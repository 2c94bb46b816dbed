"""Capacity in conversation: how many *talking* calls one server process carries on one core.

The listening capacity (``benchmarks.capacity``) places calls whose callers
mostly listen, on providers scripted inside the server. Here every call
talks, and the providers are real sockets:

* the providers (``benchmarks.conversation_providers``: the shipped Deepgram
  fake — streaming STT and Aura TTS — and Bedrock fake) run in their own
  process, pinned to the *other* core, so the server does its real
  WebSocket work to Deepgram and HTTP/eventstream work to Bedrock through
  the real SDKs;
* the server (``benchmarks.conversation_server``: ``aybiza serve``'s app,
  production settings, the default end-of-turn profile) is pinned to one core;
* the callers (``benchmarks.conversation_load``) share the other core: each
  speaks a question (~1.6 s), waits for the reply (~1.6 s of agent audio),
  pauses 0.4 s and asks again — caller and agent each speak ~40 % of the call
  (both fractions are measured and reported) — and every third turn talks
  over the reply 0.8 s into it.

Calls are added in steps; the largest step where both the inbound frame
lateness (the server's FrameClock) and the agent-audio lateness (gaps the
phone's playback buffer would play, see ``benchmarks.conversation_load``)
stay at p99 <= 20 ms with no failed call is the capacity. Dropped frames:
frames the callers sent minus frames the server's first stage saw, over the
whole ramp. RSS per call: the slope of the server's RSS against calls.

The embedded stack (``--stack embedded``: faster-whisper recognising every
utterance, the FAQ agent, Piper) is ramped in small steps, without the
providers' process, on a caller's criterion: reply latency p95 <= 2 s,
agent audio on time, no failed call. Inbound frame lateness is reported but
not judged there: a decode holds the one core for a moment, frames wait in
the socket (none is lost), and even one call breaks the 20 ms bound.

While the production ramp runs, ``py-spy`` (when installed) samples the
server (non-blocking, from the other core) and the functions holding the
core most are reported (``profile``).

On a shared machine these are floors: the server's wait for its core and
the callers' lateness are reported with each step.

Run: ``.venv/bin/python -m benchmarks.conversation [--quick] [--stack production|embedded|both]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aybiza.testing.processes import free_port, serving
from benchmarks.callers import ProgressFn, child_env, labelled, run_callers
from benchmarks.capacity import cpu_ms_per_call_second, rss_per_call_mb
from benchmarks.loadgen import ServerProcess, cpu_plan
from benchmarks.machine import wait_for_quiet

__all__ = ["LATENESS_P99_MS", "cpu_per_call", "providers", "profile_summary", "run", "run_stack", "what_limits"]

ROOT = Path(__file__).resolve().parents[1]
LATENESS_P99_MS = 20.0
IDLE_FRAMES = frozenset({"Runner.run", "Condition.wait", "_worker", "select", "poll", "wait", "_wait_for_tstate_lock"})
"""Leaf frames py-spy shows for a thread that waits (it cannot always tell, sampling without pausing)."""


@contextmanager
def providers(cpu: int | None) -> Iterator[dict[str, str]]:
    """The Deepgram and Bedrock fakes in their own process (pinned to ``cpu``): yields their URLs."""
    command = [sys.executable, "-m", "benchmarks.conversation_providers"]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), cwd=ROOT,
                               text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the providers' process exited with {process.wait(10)}")
        yield json.loads(line)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def conversation_server(stack: str, cpu: int | None, urls: dict[str, str], end_of_turn: str = "",
                        ) -> Iterator[ServerProcess]:
    """``benchmarks.conversation_server`` for ``stack`` on a free port, pinned to ``cpu``."""
    port = free_port()
    log_path = Path(tempfile.gettempdir()) / f"aybiza-conversation-{port}.log"
    scratch = tempfile.mkdtemp(prefix="aybiza-conversation-")
    command = [sys.executable, "-m", "benchmarks.conversation_server", "--port", str(port), "--stack", stack,
               "--data-dir", scratch, "--deepgram", urls.get("deepgram", ""), "--bedrock", urls.get("bedrock", ""),
               "--end-of-turn", end_of_turn]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    try:
        with serving(command, health_url=f"http://127.0.0.1:{port}/health", log_path=log_path, env=child_env(),
                     cwd=ROOT, what=f"{stack} conversation server", timeout_s=120) as process:
            yield ServerProcess(port, process, log_path)
        log_path.unlink(missing_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def sampling(pid: int, cpu: int | None, path: Path, rate: int = 50) -> Iterator[None]:
    """``py-spy record`` of ``pid`` (non-blocking, collapsed stacks into ``path``) while the block runs."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        yield
        return
    command = [spy, "record", "--pid", str(pid), "--nonblocking", "--rate", str(rate), "--format", "raw",
               "--output", str(path)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        process.send_signal(2)  # py-spy writes its output on SIGINT
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def profile_summary(collapsed: str, top: int = 15) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the functions most often on top of the stack (self) and anywhere (total)."""
    own: Counter[str] = Counter()
    idle = 0
    anywhere: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")" if " (" in f
                  else f for f in stack.split(";")]
        if frames[-1].split(" (")[0] in IDLE_FRAMES:
            idle += count  # a thread waiting (the event loop in epoll, a pool worker): not work
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    if not samples:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / samples, 1)] for name, n in counter.most_common(top)]

    return {"samples": samples, "idle_percent": round(100 * idle / samples, 1), "self_percent": share(own),
            "total_percent": share(anywhere)}


def cpu_per_call(steps: list[dict[str, Any]], max_waiting_percent: float = 20.0) -> float | None:
    """Server CPU ms per call-second: the slope over the steps whose core was neither saturated nor starved.

    Unlike the lateness verdict, a slope of CPU time against calls hardly
    moves when other work shares the machine — as long as the server still
    got the core when it wanted it: a step where it waited for the core more
    than ``max_waiting_percent`` of the time (or used 90 % of it) is left
    out. None when fewer than two steps remain (the machine was too busy).
    """
    usable = [{**s, "pass": True} for s in steps if s["server_cpu_percent"] < 90
              and (s.get("server_waiting_for_cpu_percent") or 0.0) <= max_waiting_percent]
    return cpu_ms_per_call_second(usable)


def what_limits(steps: list[dict[str, Any]], limit_ms: float, *, inbound_counts: bool = True,
                reply_p95_s: float | None = None) -> str:
    """In words, why the first failing step failed (or that none did)."""
    failing = [s for s in steps if not s["pass"]]
    if not failing:
        return "no step failed: the ramp's ceiling, not the server"
    s = min(failing, key=lambda s: s["calls"])
    reasons = []
    if s["failed_calls"]:
        reasons.append(f"{s['failed_calls']} failed calls")
    agent = s["agent_lateness_ms"].get("p99_ms")
    if agent is None or agent > limit_ms:
        reasons.append(f"agent-audio lateness p99 {agent} ms")
    if s["inbound_lateness_ms"].get("p99_ms", 0) > limit_ms and inbound_counts:
        reasons.append(f"inbound frame lateness p99 {s['inbound_lateness_ms']['p99_ms']} ms")
    reply_p95 = (s.get("reply_latency_ms") or {}).get("p95_ms")
    if reply_p95_s is not None and (reply_p95 is None or reply_p95 > reply_p95_s * 1000):
        reasons.append(f"reply latency p95 {reply_p95} ms")
    if s["calls"] < s["target"]:
        reasons.append(f"only {s['calls']} of {s['target']} calls placed")
    cause = []
    if s["server_cpu_percent"] >= 90:
        cause.append(f"the server's core saturated ({s['server_cpu_percent']} %)")
    if s["server_waiting_for_cpu_percent"] > 10:
        cause.append(f"other work took the server's core ({s['server_waiting_for_cpu_percent']} % waiting)")
    if s["client_cpu_percent"] >= 90 or (s["client_send_lateness_p99_ms"] or 0) > 10:
        cause.append(f"the callers' and providers' core was busy (callers {s['client_cpu_percent']} % CPU, "
                     f"send lateness p99 {s['client_send_lateness_p99_ms']} ms)")
    return f"at {s['calls']} calls: " + ", ".join(reasons) + ("; " + ", ".join(cause) if cause else "")


def run_stack(stack: str, params: dict[str, Any], progress: ProgressFn | None = None,
              profile: bool = False, end_of_turn: str = "") -> dict[str, Any]:
    """Providers (production only), server and callers for ``stack``; the callers' result with the verdicts."""
    server_cpu, other_cpu = cpu_plan()
    if progress is not None:
        progress(0.0, f"{stack}: waiting for a quiet machine")
    busy_before = wait_for_quiet()
    profile_path = Path(tempfile.mkdtemp(prefix="aybiza-profile-")) / "server.collapsed"
    with _maybe_providers(stack, other_cpu) as urls, \
            conversation_server(stack, server_cpu, urls, end_of_turn) as server:
        raw = run_callers("benchmarks.conversation_load", [], server=server, params=params, cpu=other_cpu,
                          label=stack, progress=labelled(progress, stack),
                          while_running=sampling(server.pid, other_cpu, profile_path) if profile else None)
    steps = raw["steps"]
    passing = [s for s in steps if s["pass"]]
    best = max(passing, key=lambda s: s["calls"]) if passing else None
    result: dict[str, Any] = {
        "stack": stack,
        "end_of_turn": end_of_turn or "default (balanced: VAD + smart-turn)",
        "criterion": (f"p99 agent-audio and inbound frame lateness <= {LATENESS_P99_MS:g} ms, no failed call"
                      if params.get("inbound_limit", True) else
                      f"reply p95 <= {params.get('reply_p95_s')} s, p99 agent-audio lateness <= "
                      f"{LATENESS_P99_MS:g} ms, no failed call (inbound lateness reported)"),
        "max_calls": raw["max_calls"],
        "first_failing_calls": raw["first_failing_calls"],
        "limited_by": what_limits(steps, LATENESS_P99_MS, inbound_counts=params.get("inbound_limit", True),
                                  reply_p95_s=params.get("reply_p95_s")),
        "rss_mb_per_call": rss_per_call_mb(steps),
        # What one talking call costs the server's core, and how many a whole core's time pays for: on a busy
        # machine this holds where the lateness verdict cannot.
        "server_cpu_ms_per_call_second": (per_call := cpu_per_call(steps)),
        "calls_per_core_by_cpu_time": round(1000 / per_call) if per_call and per_call > 0 else None,
        "idle_rss_mb": raw["idle_rss_mb"],
        "dropped_frames": raw["dropped_frames"],
        "frames_sent": raw["frames_sent"],
        "at_max": best,
        "server_cpu": server_cpu,
        "callers_and_providers_cpu": other_cpu,
        "machine_busy_percent_before": busy_before,
        "caller_audio": raw["audio"],
        "failures_sample": raw["failures_sample"],
        "curve": [{"calls": s["calls"], "agent_p99_ms": s["agent_lateness_ms"].get("p99_ms"),
                   "inbound_p99_ms": s["inbound_lateness_ms"].get("p99_ms"), "rss_mb": s["rss_mb"],
                   "reply_p50_ms": s["reply_latency_ms"].get("p50_ms"),
                   "reply_p95_ms": s["reply_latency_ms"].get("p95_ms"),
                   "server_cpu_percent": s["server_cpu_percent"],
                   "server_waiting_for_cpu_percent": s["server_waiting_for_cpu_percent"],
                   "caller_speech": s["caller_speech_fraction"], "agent_speech": s["agent_speech_fraction"],
                   "pass": s["pass"]} for s in sorted(steps, key=lambda s: s["calls"])],
        "steps": steps,
    }
    if profile and profile_path.exists():
        result["profile"] = profile_summary(profile_path.read_text(errors="replace"))
    shutil.rmtree(profile_path.parent, ignore_errors=True)
    return result


@contextmanager
def _maybe_providers(stack: str, cpu: int | None) -> Iterator[dict[str, str]]:
    if stack != "production":
        yield {}
        return
    with providers(cpu) as urls:
        yield urls


PRODUCTION = {"start": 50, "step": 50, "max_calls": 600, "settle_s": 5.0, "window_s": 10.0, "refine": 3}
PRODUCTION_QUICK = {"start": 25, "step": 50, "max_calls": 400, "settle_s": 3.0, "window_s": 5.0, "refine": 1}
# The embedded stack recognises on the server's own core: a decode holds that core for a moment, and inbound
# frames wait (buffered, not lost) — a caller does not hear that; a late reply, or gaps in it, they do. Its
# criterion: replies within REPLY_P95_S at p95, agent audio on time, no failed call (inbound lateness reported).
REPLY_P95_S = 2.0
EMBEDDED = {"steps": [1, 2, 3, 4, 6, 8, 12, 16], "settle_s": 6.0, "window_s": 15.0, "warmup_calls": 2,
            "reply_timeout_s": 8.0, "inbound_limit": False, "reply_p95_s": REPLY_P95_S}
EMBEDDED_QUICK = {"steps": [1, 2, 4, 8], "settle_s": 4.0, "window_s": 10.0, "warmup_calls": 1,
                  "reply_timeout_s": 8.0, "inbound_limit": False, "reply_p95_s": REPLY_P95_S}


def run(quick: bool = False, progress: ProgressFn | None = None, stacks: tuple[str, ...] = ("production", "embedded"),
        ) -> dict[str, Any]:
    """Both stacks' talking capacity (quick: shorter windows, coarser steps)."""
    result: dict[str, Any] = {"quick": quick}
    if "production" in stacks:
        result["production"] = run_stack("production", PRODUCTION_QUICK if quick else PRODUCTION, progress,
                                         profile=True)
    if "embedded" in stacks:
        result["embedded"] = run_stack("embedded", EMBEDDED_QUICK if quick else EMBEDDED, progress, profile=True)
    result["markdown"] = markdown(result)
    return result


def markdown(result: dict[str, Any]) -> list[str]:
    """Per stack: the verdict, what limits it, the ramp and the hot spots (lines of the report)."""
    lines: list[str] = []
    for stack in ("production", "embedded"):
        r = result.get(stack)
        if not r:
            continue
        lines += [f"**{stack}** ({r['end_of_turn']}): {r['max_calls']} talking calls per core; "
                  f"limited by: {r['limited_by']}; CPU {r['server_cpu_ms_per_call_second']} ms per call-second "
                  f"(a core's time pays for {r['calls_per_core_by_cpu_time']}); "
                  f"RSS per call {r['rss_mb_per_call']} MB; "
                  f"dropped frames {r['dropped_frames']} of {r['frames_sent']}.", "",
                  "| calls | agent-audio late p99 ms | inbound late p99 ms | reply p50/p95 ms | caller speaks "
                  "| agent speaks "
                  "| server CPU % | waiting for CPU % | RSS MB | pass |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
        lines += [f"| {c['calls']} | {c['agent_p99_ms']} | {c['inbound_p99_ms']} | "
                  f"{c['reply_p50_ms']}/{c['reply_p95_ms']} | {c['caller_speech']} | "
                  f"{c['agent_speech']} | {c['server_cpu_percent']} | {c['server_waiting_for_cpu_percent']} | "
                  f"{c['rss_mb']} | {'yes' if c['pass'] else 'no'} |" for c in r["curve"]]
        profile = r.get("profile") or {}
        if profile.get("samples"):
            lines += ["", f"Hot spots (py-spy, {profile['samples']} samples, {profile['idle_percent']} % waiting): "
                      + "; ".join(f"{name} {share} %" for name, share in profile["self_percent"][:8])]
        lines.append("")
    return lines


def main() -> None:
    """Command line: ``--quick``, ``--stack``, ``--params JSON`` (overrides the ramp)."""
    parser = argparse.ArgumentParser(description="talking calls per core")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stack", choices=["production", "embedded", "both"], default="both")
    parser.add_argument("--params", help="ramp parameters as JSON (one stack)")
    parser.add_argument("--end-of-turn", default="", help="override the end-of-turn profile (e.g. silence)")
    args = parser.parse_args()

    def show(fraction: float, text: str) -> None:
        print(f"{fraction:5.0%} {text}", file=sys.stderr)

    if args.params and args.stack != "both":
        result = run_stack(args.stack, json.loads(args.params), show, profile=True, end_of_turn=args.end_of_turn)
    else:
        stacks = ("production", "embedded") if args.stack == "both" else (args.stack,)
        result = run(args.quick, show, stacks)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
