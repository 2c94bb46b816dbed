"""``aybiza eval`` end to end: the shipped scenarios pass on the embedded stack; a broken expectation fails.

The first test runs the command exactly as a user would, without
``--server``: it starts its own server (``aybiza serve`` with the fake
Twilio REST API for transfers) and places the scripted calls of
``agents/default.scenarios.yaml``. Latency is reported, not judged
(``--no-latency``): this suite runs two test modules at once on a shared
machine, and speed budgets belong to ``aybiza bench``. The second test
calls a server already running (``--server``, its tokens passed) with one
scenario that holds and one whose expectation is wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import agents_dir
from .server import AUTH_TOKEN, running_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _eval(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aybiza.cli", "eval", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, **(env or {})})


def test_the_default_agents_shipped_scenarios_pass_against_a_server_the_eval_starts(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    done = _eval("agents/default.scenarios.yaml", "--no-latency", "--json", str(out),
                 "--server-log", str(tmp_path / "server.log"), env={"AYBIZA_AGENTS_DIR": str(ROOT / "agents")})
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["passed"] and report["total"] == 4 and report["failed"] == 0
    by_name = {scenario["name"]: scenario for scenario in report["scenarios"]}
    assert set(by_name) == {"opening hours", "parking", "spanish question", "speak to a person"}
    checks = {(c["scenario"], c["check"]) for s in report["scenarios"] for c in s["checks"]}
    assert ("speak to a person", "transfer (Twilio API)") in checks  # the fake REST API got the <Dial>
    assert ("spanish question", "faq") in checks
    for scenario in report["scenarios"]:
        assert scenario["call_id"].startswith("CA")
        [turn] = scenario["turns"]
        assert turn["answer"] and turn["latency_s"] is not None
    assert "4/4 scenarios passed" in done.stdout


def test_a_broken_expectation_fails_the_eval_and_says_which(tmp_path: Path) -> None:
    scenarios = {"agent": "default", "scenarios": [
        {"name": "holds", "steps": [{"say": "What are your opening hours?",
                                     "expect": {"faq": "opening_hours", "words": ["monday"]}}]},
        {"name": "broken", "steps": [{"say": "What are your opening hours?",
                                      "expect": {"faq": "parking", "regex": "free parking"}}],
         "expect": {"outcome": "transferred"}},
    ]}
    path = tmp_path / "scenarios.yaml"
    path.write_text(yaml.safe_dump(scenarios))
    out = tmp_path / "eval.json"
    agents = agents_dir(tmp_path)
    with running_server(tmp_path, {"AYBIZA_AGENTS_DIR": str(agents)}) as server:
        api_token = (server.data_dir / "api_token").read_text().strip()
        done = _eval(str(path), "--server", server.http, "--auth-token", AUTH_TOKEN, "--api-token", api_token,
                     "--agents-dir", str(agents), "--json", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert not report["passed"] and report["failed"] == 1
    holds, broken = report["scenarios"]
    assert holds["passed"] and not broken["passed"]
    failed = {c["check"]: c for c in broken["checks"] if not c["passed"]}
    assert set(failed) == {"faq", "regex", "outcome"}
    assert (failed["faq"]["expected"], failed["faq"]["actual"]) == ("parking", "opening_hours")
    assert failed["outcome"]["actual"] == "hangup"
    assert "FAIL  broken" in done.stdout and "PASS  holds" in done.stdout and "1/2 scenarios passed" in done.stdout
