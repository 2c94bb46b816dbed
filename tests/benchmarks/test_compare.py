"""The peer comparison: pipecat in its own venv or not at all, the ratio table, pipecat's Twilio server on a call."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import compare  # noqa: E402
from benchmarks.conversation_load import conversation  # noqa: E402
from benchmarks.loadgen import cpu_plan  # noqa: E402


def test_the_ratio_table_divides_measured_figures_and_shows_nothing_unmeasured() -> None:
    results: dict[str, dict[str, Any]] = {
        "aybiza_listening": {"max_calls": 300, "server_cpu_ms_per_call_second": 3.1, "rss_mb_per_call": 0.13},
        "pipecat_listening": {"max_calls": 25, "server_cpu_ms_per_call_second": 38.0, "rss_mb_per_call": 9.9},
        "aybiza_talking": {"max_calls": 40, "server_cpu_ms_per_call_second": 20.0, "rss_mb_per_call": None},
    }
    table = compare.ratio_table(results)
    assert "| listening | calls per core (p99 lateness <= 20 ms) | 300 | 25 | 12.0x |" in table
    assert "| listening | CPU ms per call-second | 3.1 | 38.0 | 12.3x |" in table
    assert "| listening | RSS MB per call | 0.13 | 9.9 | 76.2x |" in table
    assert "| talking | calls per core (p99 lateness <= 20 ms) | 40 | not measured | - |" in table, "not run: no figure"
    assert "| talking | RSS MB per call | not measured | not measured | - |" in table


def test_no_pipecat_constant_in_our_code() -> None:
    """Pipecat's figures are measured by `bench compare` or not shown: none is written into a module."""
    root = Path(__file__).resolve().parents[2]
    for path in [*root.glob("aybiza/**/*.py"), *root.glob("benchmarks/*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "37 µs" not in text and "37us" not in text, path


def test_a_failed_install_is_reported_and_leaves_no_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AYBIZA_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(compare, "PIPECAT", "pipecat-ai==0.0.0.post999")  # no such release
    python, why = compare.ensure_pipecat()
    assert python is None
    assert why.startswith("could not install pipecat-ai==0.0.0.post999")


@pytest.mark.slow
def test_pipecats_twilio_server_answers_talking_callers() -> None:
    """The pipecat server as `bench compare` runs it (its own venv, pinned like ours) carries three talking calls."""
    python, why = compare.ensure_pipecat()
    if python is None:
        pytest.skip(f"pipecat not installable here: {why}")
    server_cpu, _ = cpu_plan()
    with compare.pipecat_server(python, server_cpu, talk=True) as server:
        result = asyncio.run(conversation(server.base, {"steps": [3], "settle_s": 2.0, "window_s": 8.0,
                                                        "warmup_calls": 1}, server.process.pid))
    assert result["failures_sample"] == [], json.dumps(result["failures_sample"])
    assert result["dropped_frames"] == 0 and result["frames_sent"] > 500
    [step] = result["steps"]
    assert step["reply_latency_ms"]["count"] > 0, "the canned replies were heard"
    assert step["agent_speech_fraction"] > 0.15


def test_cpu_per_call_ignores_saturated_and_starved_steps_but_not_failing_verdicts() -> None:
    steps = [{"calls": 10, "server_cpu_percent": 20.0, "pass": False, "server_waiting_for_cpu_percent": 5.0},
             {"calls": 20, "server_cpu_percent": 40.0, "pass": True, "server_waiting_for_cpu_percent": 5.0},
             {"calls": 25, "server_cpu_percent": 30.0, "pass": False, "server_waiting_for_cpu_percent": 60.0},
             {"calls": 30, "server_cpu_percent": 99.0, "pass": False, "server_waiting_for_cpu_percent": 0.0}]
    assert compare.cpu_per_call(steps) == 20.0  # 2 % of a core per call: 20 ms a call-second
    assert compare.cpu_per_call(steps[2:]) is None, "a starved and a saturated step: not measured"
