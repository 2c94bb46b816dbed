"""The benchmark runner: suites, budgets, a PASS/FAIL table, JSON and Markdown reports, plots.

``run_and_report(names, quick)`` runs the named suites (all of them when
none is named) in order, each through its module's ``run(quick) -> dict``
(a suite whose ``run`` takes ``progress`` gets a callback for a progress
bar), compares the figures with ``benchmarks/budgets.toml``, prints the
table and writes ``latest.json``, ``latest.md`` and PNG plots (``plots/``)
into the output directory it is given. A suite whose module is missing
is reported as not available; one that raises is an error, and the run goes
on. The exit status is 0 when every budget with a figure passed and no
suite failed, else 1.

    .venv/bin/python -m benchmarks.harness [SUITE ...] [--quick] [--out DIR]

The default output directory is ``bench-results/`` in the current working
directory (``DEFAULT_OUT``); suites write no files of their own.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import sys
import time
import tomllib
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe, summary_line

__all__ = [
    "DEFAULT_OUT",
    "SUITES",
    "Budget",
    "Check",
    "Outcome",
    "Report",
    "Suite",
    "evaluate",
    "load_budgets",
    "lookup",
    "render_markdown",
    "run_and_report",
    "run_suites",
    "write_plots",
    "write_report",
]

HERE = Path(__file__).resolve().parent
BUDGETS = HERE / "budgets.toml"
DEFAULT_OUT = Path("bench-results")  # relative: under the working directory, never inside the source tree

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Suite:
    """A named benchmark: the module(s) whose ``run(quick)`` it calls."""

    name: str
    title: str
    modules: tuple[str, ...]

    @property
    def combined(self) -> bool:
        """Several modules, whose results are nested under their short names."""
        return len(self.modules) > 1


SUITES: tuple[Suite, ...] = (
    Suite("hop", "µs per processor hop", ("benchmarks.hop",)),
    Suite("edge", "VAD + quality + LID per 20 ms frame", ("benchmarks.edge",)),
    Suite("ingress", "Twilio media message -> STT stage, real server", ("benchmarks.ingress",)),
    Suite("turn", "voice-to-voice breakdown, our stages on scripted providers", ("benchmarks.turn",)),
    Suite("capacity", "concurrent calls on one core", ("benchmarks.capacity",)),
    Suite("failover", "region failure -> next turn answered", ("benchmarks.failover",)),
    Suite("soak", "100 calls: leaks and dropped frames", ("benchmarks.soak",)),
    Suite("cache", "answer cache", ("benchmarks.cache",)),
    Suite("recording", "call recording per caller frame, PII redaction per turn", ("benchmarks.recording",)),
    Suite("providers_overhead", "our side of the provider SDKs, fakes answering at once",
          ("benchmarks.providers_overhead",)),
    Suite("accuracy", "VAD, quality and language-ID accuracy",
          ("benchmarks.accuracy.vad_accuracy", "benchmarks.accuracy.quality_accuracy",
           "benchmarks.accuracy.lid_accuracy", "benchmarks.accuracy.quality_human")),
    Suite("endpoint", "end of turn on human telephone speech: delay and cut-offs per profile",
          ("benchmarks.endpoint",)),
    Suite("voices", "human telephone speech: WER and LID per language, sounds over the agent, FAQ confirmations",
          ("benchmarks.speech_human", "benchmarks.interruptions", "benchmarks.faq_confirm")),
    Suite("console", "operator console pages with 100k archived calls", ("benchmarks.console",)),
    # issue 16: talking calls per core, and the peer comparison (pipecat-ai in its own venv)
    Suite("conversation", "talking calls per core: production providers over sockets, and the embedded stack",
          ("benchmarks.conversation",)),
    Suite("compare", "aybiza vs pipecat-ai: same callers, one core each, listening and talking",
          ("benchmarks.compare",)),
)
_BY_NAME = {suite.name: suite for suite in SUITES}


# -- budgets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """One figure's goal: ``path`` into a suite's result, and a bound (``max``, ``min``) or ``equals``."""

    suite: str
    path: tuple[str, ...]
    label: str
    unit: str = ""
    max: float | None = None
    min: float | None = None
    equals: Any = None
    note: str = ""

    def target(self) -> str:
        """The goal as text: ``<= 3 µs``, ``>= 250 calls``, ``= true``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.equals is not None:
            return f"= {json.dumps(self.equals)}"
        if self.max is not None and self.min is not None:
            return f"{_number(self.min)}..{_number(self.max)}{unit}"
        if self.max is not None:
            return f"<= {_number(self.max)}{unit}"
        return f">= {_number(self.min)}{unit}"

    def met_by(self, value: Any) -> bool:
        """Whether ``value`` meets the goal."""
        if self.equals is not None:
            return bool(value == self.equals)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return False
        return (self.max is None or value <= self.max) and (self.min is None or value >= self.min)


def load_budgets(path: Path = BUDGETS) -> list[Budget]:
    """The ``[[budget]]`` entries of ``budgets.toml``; ``path`` is ``"a.b"`` or a list of keys."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    budgets = []
    for entry in data.get("budget", []):
        raw_path = entry["path"]
        keys = tuple(raw_path) if isinstance(raw_path, list) else tuple(str(raw_path).split("."))
        if "max" not in entry and "min" not in entry and "equals" not in entry:
            raise ValueError(f"budget {entry.get('label', keys)!r} has no max, min or equals")
        budgets.append(Budget(suite=entry["suite"], path=keys, label=entry.get("label", ".".join(keys)),
                              unit=entry.get("unit", ""), max=entry.get("max"), min=entry.get("min"),
                              equals=entry.get("equals"), note=entry.get("note", "")))
    return budgets


def lookup(result: Mapping[str, Any], path: Sequence[str]) -> Any:
    """``result[path[0]][path[1]]...`` or None when any key is missing."""
    value: Any = result
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


# -- running -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How a suite's run went: ``ok``, ``skipped`` (it said why), ``not available`` or ``error``."""

    name: str
    status: str
    seconds: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Check:
    """One row of the table."""

    suite: str
    label: str
    value: Any
    target: str
    unit: str
    status: str  # PASS, FAIL, MISSING (no such figure), or the suite's status when it did not run

    @property
    def failed(self) -> bool:
        """FAIL and MISSING fail the run; suites that could not run do not."""
        return self.status in ("FAIL", "MISSING")


class NotAvailable(Exception):
    """The suite's module exists but has no ``run(quick) -> dict`` entry point (yet)."""


def _call_run(module_name: str, quick: bool, progress: Progress | None) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    run = getattr(module, "run", None)
    if not callable(run) or inspect.iscoroutinefunction(run) or "quick" not in inspect.signature(run).parameters:
        raise NotAvailable(f"{module_name} has no run(quick) -> dict")
    if progress is not None and "progress" in inspect.signature(run).parameters:
        result = run(quick=quick, progress=progress)
    else:
        result = run(quick=quick)
    if not isinstance(result, dict):
        raise TypeError(f"{module_name}.run returned {type(result).__name__}, not dict")
    return result


def _missing_module(error: ModuleNotFoundError, module_name: str) -> bool:
    """True when the suite's own module (not one of its imports) does not exist."""
    return error.name is not None and module_name.startswith(error.name)


def run_suite(suite: Suite, quick: bool, progress: Progress | None = None) -> Outcome:
    """Run one suite; never raises (a failure is an ``error`` outcome)."""
    started = time.monotonic()
    results: dict[str, Any] = {}
    missing: list[str] = []
    try:
        for index, module_name in enumerate(suite.modules):
            part = None
            if progress is not None:
                def part(fraction: float, text: str, _i: int = index) -> None:
                    progress((_i + fraction) / len(suite.modules), text)
            try:
                result = _call_run(module_name, quick, part)
            except ModuleNotFoundError as error:
                if not _missing_module(error, module_name):
                    raise
                missing.append(f"no module {module_name}")
                continue
            except NotAvailable as error:
                missing.append(str(error))
                continue
            if suite.combined:
                results[module_name.rsplit(".", 1)[-1]] = result
            else:
                results = result
    except Exception as error:
        return Outcome(suite.name, "error", time.monotonic() - started,
                       error=f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=8)}")
    seconds = time.monotonic() - started
    if len(missing) == len(suite.modules):
        return Outcome(suite.name, "not available", seconds, error="; ".join(missing))
    if not suite.combined and "skipped" in results:
        return Outcome(suite.name, "skipped", seconds, result=results, error=str(results["skipped"]))
    return Outcome(suite.name, "ok", seconds, result=results)


def select(names: Sequence[str]) -> list[Suite]:
    """The suites named (every suite, in order, for none); ValueError names any unknown one."""
    unknown = [name for name in names if name not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(_BY_NAME)}")
    return [_BY_NAME[name] for name in names] if names else list(SUITES)


def run_suites(suites: Sequence[Suite], quick: bool, *, show_progress: bool = True) -> list[Outcome]:
    """Run suites in order under rich progress bars (one overall, one for the suite running)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    outcomes: list[Outcome] = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[note]}"),
               TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=False) as bars:
        overall = bars.add_task("benchmarks", total=len(suites), note="")
        for suite in suites:
            current = bars.add_task(f"  {suite.name}", total=1.0, note=suite.title)

            def update(fraction: float, text: str, _task: Any = current) -> None:
                bars.update(_task, completed=min(1.0, max(0.0, fraction)), note=text)

            outcome = run_suite(suite, quick, update)
            bars.update(current, completed=1.0, note=f"{outcome.status} in {outcome.seconds:.0f} s")
            bars.advance(overall)
            outcomes.append(outcome)
    return outcomes


def evaluate(budgets: Sequence[Budget], outcomes: Sequence[Outcome]) -> list[Check]:
    """A row per budget of every suite that was asked for, in suite order."""
    by_suite = {o.name: o for o in outcomes}
    checks = []
    for outcome in outcomes:
        for budget in (b for b in budgets if b.suite == outcome.name):
            target = budget.target()
            if outcome.status != "ok" or outcome.result is None:
                checks.append(Check(budget.suite, budget.label, None, target, budget.unit, outcome.status.upper()))
                continue
            value = lookup(by_suite[budget.suite].result or {}, budget.path)
            if value is None:
                checks.append(Check(budget.suite, budget.label, None, target, budget.unit, "MISSING"))
            else:
                status = "PASS" if budget.met_by(value) else "FAIL"
                checks.append(Check(budget.suite, budget.label, value, target, budget.unit, status))
    return checks


# -- reporting ---------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything one run produced."""

    started_at: str
    quick: bool
    suites: list[str]
    machine: dict[str, Any]
    wall_s: float
    outcomes: list[Outcome]
    checks: list[Check]
    plots: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No budget failed or went missing and no suite raised."""
        return not any(c.failed for c in self.checks) and not any(o.status == "error" for o in self.outcomes)

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        return {
            "started_at": self.started_at,
            "quick": self.quick,
            "suites_requested": self.suites,
            "passed": self.passed,
            "wall_s": round(self.wall_s, 1),
            "machine": self.machine,
            "checks": [asdict(c) for c in self.checks],
            "suites": {o.name: {"status": o.status, "seconds": round(o.seconds, 1), "error": o.error,
                                "result": o.result} for o in self.outcomes},
            "plots": self.plots,
        }


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 100_000:
            return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}".rstrip("0").rstrip(".")
        return f"{value:.3g}"
    return str(value)


def _value_text(check: Check) -> str:
    if check.value is None:
        return "-"
    return _number(check.value) + (f" {check.unit}" if check.unit and not isinstance(check.value, bool) else "")


def print_table(report: Report, directory: Path, console: Any | None = None) -> None:
    """The figure-vs-budget table (and one line per suite that did not run) on the console."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        console.width = max(console.width, 120)
    table = Table(title=f"aybiza benchmarks ({'quick' if report.quick else 'full'})", title_justify="left")
    for column in ("Suite", "Figure", "Value", "Budget", "Result"):
        table.add_column(column, justify="right" if column in ("Value", "Budget") else "left")
    styles = {"PASS": "green", "FAIL": "bold red", "MISSING": "bold red"}
    for check in report.checks:
        style = styles.get(check.status, "yellow")
        table.add_row(check.suite, check.label, _value_text(check), check.target,
                      f"[{style}]{check.status}[/{style}]")
    console.print(table)
    for outcome in report.outcomes:
        if outcome.status != "ok":
            first_line = (outcome.error or "").splitlines()[0] if outcome.error else ""
            console.print(f"[yellow]{outcome.name}: {outcome.status}[/yellow] {first_line}")
    console.print(f"Machine: {summary_line(report.machine)}")
    verdict = "[green]all budgets met[/green]" if report.passed else "[bold red]budget(s) missed[/bold red]"
    console.print(f"{verdict}; {report.wall_s:.0f} s; report: {directory / 'latest.md'}")


def _scalars(result: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in result.items() if isinstance(v, int | float | str | bool) and k != "quick"]


def _md_suite_details(outcome: Outcome) -> list[str]:
    result = outcome.result or {}
    lines: list[str] = []
    if outcome.name == "turn" and "breakdown_mean_ms" in result:
        lines += ["Mean voice-to-voice breakdown (each turn's parts sum to its total, so the means do too; "
                  "stt, llm and tts are our stages' own timings from the call records, endpointing and the total "
                  "the caller's):", "", "| part | mean ms |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in result["breakdown_mean_ms"].items()]
        v2v, ours = result.get("voice_to_voice_ms", {}), result.get("overhead_ms", {})
        everything = result.get("all_ours_ms", {})
        lines += [f"| **total** | **{result['breakdown_mean_total_ms']:.1f}** |", "",
                  f"Voice-to-voice p50/p95/p99: {_number(v2v.get('p50_ms'))} / {_number(v2v.get('p95_ms'))} / "
                  f"{_number(v2v.get('p99_ms'))} ms; our overhead p50/p95/p99: {_number(ours.get('p50_ms'))} / "
                  f"{_number(ours.get('p95_ms'))} / {_number(ours.get('p99_ms'))} ms.", ""]
        if result.get("beyond_provider_mean_ms"):
            lines += ["Our stages beyond their scripted providers' delays, mean ms: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in result["beyond_provider_mean_ms"].items())
                      + f"; everything ours (overhead + those) p50/p95/p99: {_number(everything.get('p50_ms'))} / "
                      f"{_number(everything.get('p95_ms'))} / {_number(everything.get('p99_ms'))} ms.", ""]
    if outcome.name == "capacity" and result.get("steps"):
        lines += ["| calls | lateness p50 ms | p99 ms | server CPU % | server waiting for CPU % | callers CPU % "
                  "| callers send late p99 ms | RSS MB | pass |", "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
        for step in sorted(result["steps"], key=lambda s: s["calls"]):
            late = step["lateness_ms"]
            lines.append(f"| {step['calls']} | {_number(late['p50_ms'])} | {_number(late['p99_ms'])} | "
                         f"{step['server_cpu_percent']} | {step.get('server_waiting_for_cpu_percent', '-')} | "
                         f"{step.get('client_cpu_percent', '-')} | {_number(step['client_send_lateness_p99_ms'])} | "
                         f"{step['rss_mb']} | {'yes' if step['pass'] else 'no'} |")
        lines.append("")
    if outcome.name == "soak" and "idle_start" in result:
        lines += ["| idle | RSS MB | fds | tasks | threads | GC objects |", "|---|---:|---:|---:|---:|---:|"]
        for key in ("idle_start", "idle_end"):
            s = result[key]
            lines.append(f"| {key} | {s['rss_mb']} | {s['fds']} | {s['tasks']} | {s['threads']} | "
                         f"{s.get('gc_objects', '-')} |")
        lines.append("")
    if isinstance(result.get("markdown"), list):  # a suite's own tables (conversation, compare)
        lines += [str(line) for line in result["markdown"]] + [""]
    scalars = _scalars(result)
    if scalars:
        lines += ["| figure | value |", "|---|---|"] + [f"| {k} | {_number(v)} |" for k, v in scalars] + [""]
    return lines


def render_markdown(report: Report) -> str:
    """The Markdown report: machine, table, one section per suite, plots."""
    m = report.machine
    lines = [
        "# aybiza benchmark report", "",
        f"Run {report.started_at}, {'quick (make bench)' if report.quick else 'full'} mode, "
        f"{report.wall_s:.0f} s; suites: {', '.join(report.suites)}.", "",
        f"**Machine:** {summary_line(m)}; kernel {m.get('kernel')}, {m.get('arch')}, "
        f"{m.get('cores_usable')} usable cores.", "",
        f"**Verdict:** {'all budgets met' if report.passed else 'budget(s) missed'}.", "",
        "## Figures against budgets", "",
        "| Suite | Figure | Value | Budget | Result |", "|---|---|---:|---:|---|",
    ]
    lines += [f"| {c.suite} | {c.label} | {_value_text(c)} | {c.target} | {c.status} |" for c in report.checks]
    lines.append("")
    for outcome in report.outcomes:
        lines += [f"## {outcome.name}: {outcome.status} ({outcome.seconds:.0f} s)", ""]
        if outcome.error:
            lines += ["```", outcome.error.strip()[:2000], "```", ""]
        if outcome.status == "ok":
            lines += _md_suite_details(outcome)
        for plot in report.plots:
            if Path(plot).name.startswith(outcome.name):
                lines += [f"![{Path(plot).stem}]({plot})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_plots(outcomes: Sequence[Outcome], directory: Path) -> list[Path]:
    """PNG plots: a latency CDF per suite that reports ``cdf_ms``, the capacity curve, the soak timeline,
    the turn breakdown; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = directory / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    for outcome in outcomes:
        result = outcome.result or {}
        for key, cdfs in result.items():
            if outcome.status != "ok" or not key.endswith("cdf_ms") or not isinstance(cdfs, dict) \
                    or not any(cdfs.values()):
                continue
            fig, ax = plt.subplots(figsize=(7.5, 4.5))
            for label, points in cdfs.items():
                if points:
                    ax.plot([max(p, 1e-3) for p in points], range(len(points)), label=label)
            ax.set_xscale("log")
            ax.set_xlabel("latency (ms, log scale)")
            ax.set_ylabel("percentile")
            ax.set_ylim(0, 100)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            what = key.removesuffix("cdf_ms").strip("_").replace("_", " ")
            ax.set_title(f"{outcome.name}: {what + ' ' if what else ''}latency CDF")
            save(fig, f"{outcome.name}_{key.removesuffix('_ms')}.png")
        if outcome.name == "capacity" and result.get("curve"):
            curve = result["curve"]
            fig, ax = plt.subplots(figsize=(7.5, 4.5))
            calls = [p["calls"] for p in curve]
            ax.plot(calls, [p["p50_ms"] for p in curve], "o-", label="frame lateness p50")
            ax.plot(calls, [p["p99_ms"] for p in curve], "s-", label="frame lateness p99")
            ax.axhline(20, color="red", linestyle="--", label="p99 limit 20 ms")
            ax.set_yscale("log")
            ax.set_xlabel("concurrent calls (server on one core)")
            ax.set_ylabel("lateness (ms)")
            rss = ax.twinx()
            rss.plot(calls, [p["rss_mb"] for p in curve], "^:", color="gray", label="server RSS (MB)")
            rss.set_ylabel("RSS (MB)")
            lines, labels = ax.get_legend_handles_labels()
            more, more_labels = rss.get_legend_handles_labels()
            ax.legend(lines + more, labels + more_labels, fontsize=8, loc="upper left")
            ax.set_title(f"capacity: {result.get('max_calls')} calls per core")
            save(fig, "capacity_curve.png")
        if outcome.name == "soak" and result.get("timeline"):
            timeline = result["timeline"]
            fig, ax = plt.subplots(figsize=(7.5, 4.5))
            t = [p["t_s"] for p in timeline]
            ax.plot(t, [p["rss_mb"] for p in timeline], label="RSS (MB)")
            ax.set_xlabel("seconds")
            ax.set_ylabel("RSS (MB)")
            counts = ax.twinx()
            counts.plot(t, [p["tasks"] for p in timeline], ":", label="asyncio tasks")
            counts.plot(t, [p["fds"] for p in timeline], "--", label="open fds")
            counts.set_ylabel("count")
            lines, labels = ax.get_legend_handles_labels()
            more, more_labels = counts.get_legend_handles_labels()
            ax.legend(lines + more, labels + more_labels, fontsize=8, loc="upper left")
            ax.set_title(f"soak: {result.get('calls')} calls, {result.get('calls_placed')} placed")
            save(fig, "soak_timeline.png")
        if outcome.name == "turn" and result.get("breakdown_mean_ms"):
            parts = result["breakdown_mean_ms"]
            fig, ax = plt.subplots(figsize=(8.5, 2.4))
            left = 0.0
            for name, value in parts.items():
                ax.barh([0], [value], left=left, label=f"{name} {value:.0f} ms")
                left += value
            ax.set_yticks([])
            ax.set_xlabel("ms from the end of the caller's speech to the first reply audio (mean)")
            ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.55), frameon=False)
            ax.set_title(f"turn: mean voice-to-voice {result.get('breakdown_mean_total_ms', 0):.0f} ms")
            save(fig, "turn_breakdown.png")
    return written


def write_report(report: Report, directory: Path) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "latest.json", directory / "latest.md"
    json_path.write_text(json.dumps(report.as_json(), indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(report))
    return json_path, md_path


def run_and_report(names: Sequence[str], quick: bool, *, show_progress: bool = True,
                   budgets_path: Path = BUDGETS, directory: Path = DEFAULT_OUT) -> int:
    """Run, check, print, write the report into ``directory``; the exit status (0 = every budget met)."""
    suites = select(names)
    budgets = load_budgets(budgets_path)
    machine = describe()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    outcomes = run_suites(suites, quick, show_progress=show_progress)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report = Report(started_at, quick, [s.name for s in suites], machine, time.monotonic() - started, outcomes,
                    evaluate(budgets, outcomes))
    try:
        report.plots = [str(p.relative_to(directory)) for p in write_plots(outcomes, directory / "plots")]
    except ImportError as error:  # matplotlib missing: the figures still count
        print(f"no plots: {error}", file=sys.stderr)
    write_report(report, directory)
    print_table(report, directory)
    return 0 if report.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.harness [SUITE ...] [--quick] [--out DIR]``."""
    parser = argparse.ArgumentParser(description="aybiza latency benchmarks")
    parser.add_argument("suites", nargs="*", help=f"suites to run (default all): {', '.join(_BY_NAME)}")
    parser.add_argument("--quick", action="store_true", help="the short variants (what make bench runs)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"where the report goes (default: {DEFAULT_OUT}/ in the working directory)")
    args = parser.parse_args(argv)
    try:
        return run_and_report(args.suites, args.quick, directory=args.out)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
