"""Crash safety and scale-out with real processes: SIGKILL mid-call, then restart or hand-off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from aybiza.edge.calls import open_call_store
from aybiza.pipeline import Usage

pytestmark = pytest.mark.anyio

CHILD = Path(__file__).with_name("_call_process.py")
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serving(*args: str) -> Iterator[subprocess.Popen[str]]:
    """A call-serving child process that printed READY (killed on exit if still running)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(CHILD), "serve", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "READY":
            child.kill()
            _, err = child.communicate()
            raise AssertionError(f"child did not get ready: {line!r} {err}")
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()


def _kill_9(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_sigkill_mid_call_then_restart_archives_it_as_interrupted(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    with serving(str(tmp_path), *([redis_url] if redis_url else [])) as child:
        _kill_9(child)

    store = await open_call_store(tmp_path, redis_url=redis_url)  # "restart"
    try:
        recovered: list[str] = []
        with anyio.fail_after(10):  # Redis: until the dead process's 0.6 s lease runs out
            while not recovered:
                recovered = await store.recover_interrupted()
                if not recovered:
                    await anyio.sleep(0.1)
        assert recovered == ["open-1"]
        interrupted = await store.get("open-1")
        assert interrupted is not None and interrupted.status == "interrupted"
        assert [t.user for t in interrupted.turns] == ["Hi, I'd like to book a cleaning.", "Tuesday morning, please."]
        assert interrupted.usage == Usage(stt_seconds={"nova-3": 2.0}) and interrupted.caller == "+15550002"
        for call_id in ("done-1", "done-2"):
            done = await store.archive.get(call_id)
            assert done is not None and done.status == "ended" and len(done.turns) == 2
            assert done.usage == Usage(stt_seconds={"nova-3": 5.0})
        assert await store.archive.count() == 3
        assert await store.live() == []
    finally:
        await store.aclose()


def test_call_started_on_one_process_is_continued_on_another(tmp_path: Path, redis_url: str) -> None:
    with serving(str(tmp_path), redis_url) as process_a:
        _kill_9(process_a)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process_b = subprocess.run([sys.executable, str(CHILD), "resume", str(tmp_path), redis_url, "open-1"],
                               capture_output=True, text=True, env=env, timeout=60, check=True)
    context_line, record_line = process_b.stdout.strip().splitlines()
    assert json.loads(context_line) == [
        {"role": "user", "text": "Hi, I'd like to book a cleaning."},
        {"role": "assistant", "text": "Sure. Which day suits you?"},
        {"role": "user", "text": "Tuesday morning, please."},
        {"role": "assistant", "text": "Tuesday at ten is free. Shall I book it?"},
    ]
    record = json.loads(record_line)
    assert record["status"] == "ended"
    assert [t["turn_id"] for t in record["turns"]] == [1, 2, 3]
    assert record["turns"][2]["agent"] == "Done. You said yes to: Tuesday at ten is free. Shall I book it?"

    async def archived() -> None:
        store = await open_call_store(tmp_path, redis_url=redis_url, readonly=True)
        try:
            found = await store.archive.get("open-1")
            assert found is not None and found.status == "ended" and len(found.turns) == 3
            assert await store.recover_interrupted() == []  # nothing left behind by the killed process
        finally:
            await store.aclose()

    anyio.run(archived)
