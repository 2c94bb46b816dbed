"""The one caller-process runner the capacity, conversation and comparison benchmarks share."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.callers import labelled, run_callers

CALLERS = textwrap.dedent('''
    import json, sys
    args = sys.argv[1:]
    print("@progress 0.500 half way", file=sys.stderr, flush=True)
    print("a warning", file=sys.stderr, flush=True)
    if "--fail" in args:
        sys.exit(3)
    print(json.dumps({"args": args}))
''')


@dataclass
class _Server:
    base: str = "http://127.0.0.1:9"
    pid: int = 4242

    def log_tail(self, lines: int = 30) -> str:
        return "server said goodbye"


@pytest.fixture
def callers_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "probe_callers.py").write_text(CALLERS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "probe_callers"


def test_the_callers_get_the_server_params_and_core_and_their_json_comes_back(callers_module: str) -> None:
    seen: list[tuple[float, str]] = []
    result = run_callers(callers_module, ["capacity"], server=_Server(), params={"calls": 5}, cpu=1, label="embedded",
                         progress=labelled(lambda fraction, text: seen.append((fraction, text)), "embedded"))
    assert result["args"] == ["capacity", "--base", "http://127.0.0.1:9", "--server-pid", "4242",
                              "--params", '{"calls": 5}', "--cpu", "1"]
    assert seen == [(0.5, "embedded: half way")]


def test_a_failed_caller_process_says_what_it_wrote_and_the_server_log(callers_module: str) -> None:
    with pytest.raises(RuntimeError) as failure:
        run_callers(callers_module, ["--fail"], server=_Server(), params={}, cpu=None, label="listening")
    message = str(failure.value)
    assert "listening callers exited with 3" in message
    assert "a warning" in message and "half way" not in message
    assert "server said goodbye" in message
