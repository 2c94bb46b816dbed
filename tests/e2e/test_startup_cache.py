"""The assembled server's startup cache: built on the first start, reused on the next, and a damaged one rebuilt.

FAQ phrasing embeddings and the failsafe renderings live under ``AYBIZA_CACHE_DIR``; a
start must never serve from a damaged file: it rebuilds, logs it, and answers callers right.
"""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from aybiza.testing.caller import Say, Wait, caller_speech, place_call

from .server import AUTH_TOKEN, running_server

pytestmark = pytest.mark.slow


def test_a_damaged_startup_cache_is_rebuilt_and_calls_are_answered_right(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"AYBIZA_CACHE_DIR": str(cache)}
    with running_server(tmp_path / "first", env) as first:
        assert "ignoring" not in first.log()
    embeddings, renderings = sorted((cache / "embeddings").glob("*.npz")), sorted((cache / "failsafe").glob("*.pcm"))
    assert len(embeddings) == 1 and len(renderings) == 4  # the default agent's FAQ; its four failsafe texts
    assert (cache / "models").is_dir()  # the joined multilingual model, loaded once the server was ready
    damaged = {path: path.read_bytes()[: path.stat().st_size // 2] for path in [*embeddings, *renderings]}
    for path, data in damaged.items():
        path.write_bytes(data)

    with running_server(tmp_path / "second", env) as second:
        log = second.log()
        assert "ignoring a corrupt FAQ embedding cache file" in log
        assert len(re.findall("ignoring a damaged rendering", log)) == 4
        for path, data in damaged.items():
            assert path.read_bytes() != data, f"{path.name} was rebuilt"
        report = anyio.run(lambda: place_call(second.stream_url, [Wait(8), Say(caller_speech(
            "what are your opening hours")), Wait(20)], auth_token=AUTH_TOKEN))
        assert report.close_code == 1000 and report.turns
        record = anyio.run(second.record, report.call_sid)
    answer = " ".join(turn["agent"] for turn in record["turns"]).lower()
    assert "monday" in answer, answer  # the opening-hours FAQ, matched on rebuilt vectors
