"""The benchmark harness: budgets, PASS/FAIL, suites that are missing or broken, reports and plots.

No timing here: the suites are stand-in modules returning fixed figures.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aybiza.bench_cli import bench_main  # noqa: E402
from aybiza.cli import build_parser  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.harness import Budget, Outcome, Report, Suite  # noqa: E402


@pytest.fixture
def fake_modules() -> Iterator[dict[str, types.ModuleType]]:
    """Install stand-in suite modules under ``benchfake_*`` names; removed afterwards."""
    installed: dict[str, types.ModuleType] = {}

    def add(name: str, run: Any) -> None:
        module = types.ModuleType(name)
        if run is not None:
            module.run = run  # type: ignore[attr-defined]
        sys.modules[name] = module
        installed[name] = module

    def ok(quick: bool = False) -> dict[str, Any]:
        return {"speed_us": 2.0 if quick else 4.0, "nested": {"a.b": 7}}

    def broken(quick: bool = False) -> dict[str, Any]:
        raise RuntimeError("the lab caught fire")

    def skipped(quick: bool = False) -> dict[str, Any]:
        return {"skipped": "needs root"}

    def with_progress(quick: bool = False, progress: Any = None) -> dict[str, Any]:
        progress(0.5, "half way")
        return {"progress_seen": True}

    async def coroutine_run(turns: int) -> None:
        return None

    add("benchfake_ok", ok)
    add("benchfake_broken", broken)
    add("benchfake_skipped", skipped)
    add("benchfake_progress", with_progress)
    add("benchfake_coroutine", coroutine_run)
    yield installed
    for name in list(installed):
        sys.modules.pop(name, None)


def test_the_shipped_budgets_name_known_suites_and_each_has_a_bound() -> None:
    budgets = harness.load_budgets()
    known = {suite.name for suite in harness.SUITES}
    assert budgets, "budgets.toml has budgets"
    for budget in budgets:
        assert budget.suite in known, budget
        assert budget.max is not None or budget.min is not None or budget.equals is not None
    goals = {(b.suite, b.path): b for b in budgets}
    assert goals[("hop", ("hop_us_median",))].max == 3.0
    assert goals[("ingress", ("ingress_ms_p99",))].max == 5.0
    assert goals[("capacity", ("max_calls",))].min == 250
    assert goals[("turn", ("overhead_ms_p95",))].max == 30.0
    assert goals[("failover", ("targets", "failover_max_ms_with_0.5s_stall"))].max == 1000.0


def test_budget_bounds() -> None:
    at_most = Budget("s", ("x",), "x", unit="ms", max=5.0)
    at_least = Budget("s", ("x",), "x", unit="calls", min=250)
    flag = Budget("s", ("x",), "x", equals=True)
    assert at_most.met_by(5.0) and at_most.met_by(0) and not at_most.met_by(5.01)
    assert not at_most.met_by(float("nan")) and not at_most.met_by("fast") and not at_most.met_by(True)
    assert at_least.met_by(250) and not at_least.met_by(249)
    assert flag.met_by(True) and not flag.met_by(False)
    assert at_most.target() == "<= 5 ms" and at_least.target() == ">= 250 calls" and flag.target() == "= true"


def test_budgets_file_accepts_dotted_and_list_paths(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text('[[budget]]\nsuite = "a"\npath = "x.y"\nmax = 1\n\n'
                    '[[budget]]\nsuite = "a"\npath = ["t", "max_0.5s"]\nmin = 2\n')
    first, second = harness.load_budgets(path)
    assert first.path == ("x", "y") and second.path == ("t", "max_0.5s")
    path.write_text('[[budget]]\nsuite = "a"\npath = "x"\n')
    with pytest.raises(ValueError, match="no max, min or equals"):
        harness.load_budgets(path)


def test_lookup_walks_nested_results() -> None:
    result = {"targets": {"max_0.5s": 12}, "flat": 3}
    assert harness.lookup(result, ("targets", "max_0.5s")) == 12
    assert harness.lookup(result, ("flat",)) == 3
    assert harness.lookup(result, ("targets", "absent")) is None
    assert harness.lookup(result, ("flat", "deeper")) is None


def test_evaluate_passes_fails_and_flags_missing_figures() -> None:
    budgets = [Budget("a", ("fast",), "fast", max=1.0), Budget("a", ("slow",), "slow", max=1.0),
               Budget("a", ("absent",), "absent", max=1.0), Budget("b", ("x",), "x", max=1.0),
               Budget("c", ("x",), "x", max=1.0)]
    outcomes = [Outcome("a", "ok", result={"fast": 0.5, "slow": 2.0}),
                Outcome("b", "not available", error="no module benchmarks.b")]
    checks = harness.evaluate(budgets, outcomes)
    assert [(c.label, c.status) for c in checks] == [("fast", "PASS"), ("slow", "FAIL"), ("absent", "MISSING"),
                                                     ("x", "NOT AVAILABLE")]
    assert [c.failed for c in checks] == [False, True, True, False]


def test_run_suite_reports_ok_skipped_error_and_unavailable(fake_modules: dict[str, Any]) -> None:
    ok = harness.run_suite(Suite("ok", "", ("benchfake_ok",)), quick=True)
    assert ok.status == "ok" and ok.result == {"speed_us": 2.0, "nested": {"a.b": 7}}
    skipped = harness.run_suite(Suite("s", "", ("benchfake_skipped",)), quick=True)
    assert skipped.status == "skipped" and skipped.error == "needs root"
    broken = harness.run_suite(Suite("b", "", ("benchfake_broken",)), quick=True)
    assert broken.status == "error" and "the lab caught fire" in (broken.error or "")
    missing = harness.run_suite(Suite("m", "", ("benchmarks.no_such_suite",)), quick=True)
    assert missing.status == "not available" and "benchmarks.no_such_suite" in (missing.error or "")
    wrong_shape = harness.run_suite(Suite("w", "", ("benchfake_coroutine",)), quick=True)
    assert wrong_shape.status == "not available" and "run(quick)" in (wrong_shape.error or "")


def test_a_combined_suite_nests_its_modules_and_skips_the_missing_ones(fake_modules: dict[str, Any]) -> None:
    suite = Suite("combo", "", ("benchfake_ok", "benchmarks.no_such_suite", "benchfake_progress"))
    seen: list[tuple[float, str]] = []
    outcome = harness.run_suite(suite, quick=False, progress=lambda f, text: seen.append((f, text)))
    assert outcome.status == "ok"
    assert outcome.result == {"benchfake_ok": {"speed_us": 4.0, "nested": {"a.b": 7}},
                              "benchfake_progress": {"progress_seen": True}}
    assert seen == [((2 + 0.5) / 3, "half way")], "progress is scaled to the module's share of the suite"


def test_select_rejects_unknown_suites_and_defaults_to_all() -> None:
    assert [s.name for s in harness.select([])] == [s.name for s in harness.SUITES]
    assert [s.name for s in harness.select(["turn", "hop"])] == ["turn", "hop"]
    with pytest.raises(ValueError, match="warp"):
        harness.select(["hop", "warp"])


def _report(checks_ok: bool = True) -> Report:
    outcomes = [
        Outcome("turn", "ok", 3.0, result={
            "overhead_ms_p95": 12.5 if checks_ok else 45.0, "breakdown_mean_ms": {"endpointing": 400.0, "stt": 150.0,
                                                                                  "llm": 350.0, "tts": 100.0,
                                                                                  "overhead": 9.0},
            "breakdown_mean_total_ms": 1009.0, "beyond_provider_mean_ms": {"stt": 0.7, "llm": 1.8, "tts": 0.5},
            "cdf_ms": {"total": [1000.0 + i for i in range(101)]}}),
        Outcome("capacity", "ok", 100.0, result={
            "max_calls": 300, "steps": [{"calls": 300, "lateness_ms": {"p50_ms": 1.0, "p99_ms": 9.0},
                                         "server_cpu_percent": 80.0, "client_cpu_percent": 30.0,
                                         "client_send_lateness_p99_ms": 2.0, "rss_mb": 200.0, "pass": True}],
            "curve": [{"calls": 50, "p50_ms": 0.5, "p99_ms": 2.0, "rss_mb": 150.0},
                      {"calls": 300, "p50_ms": 1.0, "p99_ms": 9.0, "rss_mb": 200.0}]}),
        Outcome("failover", "skipped", 0.1, result={"skipped": "needs root"}, error="needs root"),
    ]
    budgets = [Budget("turn", ("overhead_ms_p95",), "our overhead per turn (p95)", unit="ms", max=30.0),
               Budget("capacity", ("max_calls",), "calls per core", unit="calls", min=250),
               Budget("failover", ("x",), "failover time", unit="ms", max=1000.0)]
    machine = {"cores": 2, "cpu_model": "Test CPU", "memory_gb": 4.0, "os": "TestOS", "python": "CPython 3.11",
               "blas": {"blas": "openblas"}, "load_average_at_start": [0.1, 0.1, 0.1], "kernel": "6", "arch": "x"}
    return Report("2025-01-01T00:00:00+00:00", True, ["turn", "capacity", "failover"], machine, 104.0, outcomes,
                  harness.evaluate(budgets, outcomes))


def test_report_files_state_the_machine_and_every_figure_against_its_budget(tmp_path: Path) -> None:
    report = _report()
    json_path, md_path = harness.write_report(report, tmp_path)
    data = json.loads(json_path.read_text())
    assert data["passed"] is True
    assert data["machine"]["cpu_model"] == "Test CPU"
    assert [(c["suite"], c["status"]) for c in data["checks"]] == [("turn", "PASS"), ("capacity", "PASS"),
                                                                    ("failover", "SKIPPED")]
    assert data["suites"]["capacity"]["result"]["max_calls"] == 300
    markdown = md_path.read_text()
    assert "2 cores (Test CPU)" in markdown
    assert "| turn | our overhead per turn (p95) | 12.5 ms | <= 30 ms | PASS |" in markdown
    assert "| capacity | calls per core | 300 calls | >= 250 calls | PASS |" in markdown
    assert "| **total** | **1009.0** |" in markdown, "the turn breakdown table is in the report"
    assert "stt 0.70, llm 1.80, tts 0.50" in markdown, "what our stages took beyond their providers"
    assert "## failover: skipped" in markdown and "needs root" in markdown


def test_a_missed_budget_fails_the_run() -> None:
    report = _report(checks_ok=False)
    assert not report.passed
    assert report.checks[0].status == "FAIL"


def test_plots_are_written_for_cdfs_and_the_capacity_curve(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    written = harness.write_plots(_report().outcomes, tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["capacity_curve.png", "turn_breakdown.png", "turn_cdf.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_and_report_end_to_end_with_stand_in_suites(tmp_path: Path, fake_modules: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    suites = (Suite("fast", "stand-in", ("benchfake_ok",)), Suite("broken", "stand-in", ("benchfake_broken",)))
    monkeypatch.setattr(harness, "SUITES", suites)
    monkeypatch.setattr(harness, "_BY_NAME", {s.name: s for s in suites})
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budget]]\nsuite = "fast"\npath = "speed_us"\nlabel = "speed"\nunit = "µs"\nmax = 3.0\n')
    status = harness.run_and_report(["fast"], True, show_progress=False, budgets_path=budgets, directory=tmp_path)
    assert status == 0
    assert "PASS" in capsys.readouterr().out
    assert json.loads((tmp_path / "latest.json").read_text())["checks"][0]["value"] == 2.0
    status = harness.run_and_report([], False, show_progress=False, budgets_path=budgets, directory=tmp_path)
    assert status == 1, "speed 4.0 > 3.0 and a suite raised"
    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["suites"]["broken"]["status"] == "error"


def test_bench_main_refuses_unknown_suites(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["no-such-suite"], quick=True) == 2
    assert "no-such-suite" in capsys.readouterr().err


def test_harness_command_line_writes_the_report_into_out(tmp_path: Path, fake_modules: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    suites = (Suite("fast", "stand-in", ("benchfake_ok",)),)
    monkeypatch.setattr(harness, "SUITES", suites)
    monkeypatch.setattr(harness, "_BY_NAME", {s.name: s for s in suites})
    monkeypatch.setattr(harness, "run_suites", lambda chosen, quick, show_progress=True: [
        harness.run_suite(suite, quick) for suite in chosen])
    assert harness.main(["fast", "--quick", "--out", str(tmp_path / "report")]) == 0
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["latest.json", "latest.md", "plots"]


def test_aybiza_bench_reports_into_out_else_bench_results_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], bool, Path]] = []

    def run_and_report(names: list[str], quick: bool, *, directory: Path) -> int:
        seen.append((names, quick, directory))
        return 0

    monkeypatch.setattr(harness, "run_and_report", run_and_report)
    monkeypatch.chdir(tmp_path)
    assert bench_main(["hop"], quick=True) == 0
    assert bench_main(["hop", "turn"], quick=False, out=Path("elsewhere")) == 0
    here = tmp_path.resolve()
    assert seen == [(["hop"], True, here / "bench-results"), (["hop", "turn"], False, here / "elsewhere")]
    args = build_parser().parse_args(["bench", "hop", "--out", "/tmp/x"])
    assert args.suites == ["hop"] and args.out == Path("/tmp/x") and not args.full
    assert build_parser().parse_args(["bench"]).out is None, "the default is decided by bench_main"
