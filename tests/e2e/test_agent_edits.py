"""Agent edits without a restart: a changed agent file is heard on the next call after the agent TTL.

The server reads agents through the agent-config cache (``AYBIZA_AGENT_TTL``,
1 s here); a broken edit keeps the last good configuration and says why in
the log.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import yaml

from aybiza.processors.stt.whisper import WhisperRecognizer
from aybiza.testing.caller import Wait, place_call

from .conftest import agents_dir, heard_pcm, words
from .server import AUTH_TOKEN, running_server

pytestmark = pytest.mark.slow


async def _greeting(stream_url: str, recognizer: WhisperRecognizer) -> set[str]:
    report = await place_call(stream_url, [Wait(8)], auth_token=AUTH_TOKEN)
    return words(await anyio.to_thread.run_sync(recognizer.transcribe, heard_pcm(report), 8000))


def _set_greeting(agent: Path, greeting: str) -> None:
    data = yaml.safe_load(agent.read_text())
    data["greeting"] = greeting
    agent.write_text(yaml.safe_dump(data))


@pytest.mark.anyio
async def test_an_edited_agent_is_heard_after_the_ttl_and_a_broken_edit_keeps_the_last_good(
    tmp_path: Path, recognizer: WhisperRecognizer
) -> None:
    agents = agents_dir(tmp_path)
    agent = agents / "default.yaml"
    _set_greeting(agent, "Welcome to Blue Harbor.")
    with running_server(tmp_path, {"AYBIZA_AGENTS_DIR": str(agents), "AYBIZA_AGENT_TTL": "1"}) as server:
        assert "blue" in await _greeting(server.stream_url, recognizer)

        _set_greeting(agent, "Welcome to Green Valley.")
        await anyio.sleep(1.2)
        heard = await _greeting(server.stream_url, recognizer)
        assert "green" in heard and "blue" not in heard  # the edit, without a restart

        agent.write_text(agent.read_text() + "\n  greeting: [this edit is broken\n")
        await anyio.sleep(1.2)
        assert "green" in await _greeting(server.stream_url, recognizer)  # the last good config still serves
        log = server.log()
    assert f"{agent}" in log and "last good" in log
    assert log.count("last good") == 1  # said once for this error, not on every lookup
