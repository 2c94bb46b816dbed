"""Which calls are recorded and redacted: the agent's ``record`` / ``redact_pii`` and the server's settings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aybiza.agents import load_agent
from aybiza.config import Settings
from aybiza.pipeline import CallContext
from aybiza.recording.call import RecordedTransport
from aybiza.recording.storage import RecordingStore
from aybiza.session.session import CallSession
from aybiza.testing.kit import StubTransport

ROOT = Path(__file__).resolve().parents[2]


def _session(tmp_path: Path, **settings: Any) -> CallSession:
    config = Settings(data_dir=tmp_path, **settings)
    runtime = SimpleNamespace(settings=config, metrics=None, recordings=RecordingStore(config))
    return CallSession(runtime, CallContext(call_id="CA" + "d" * 32), StubTransport())  # type: ignore[arg-type]


@pytest.mark.parametrize(("setting", "agent", "redacts"), [(True, None, True), (False, None, False),
                                                            (True, False, False), (False, True, True)])
def test_the_agent_overrides_the_servers_redaction(tmp_path: Path, setting: bool, agent: bool | None,
                                                  redacts: bool) -> None:
    session = _session(tmp_path, redact_pii=setting)
    assert session.ctx.ledger.pii is setting  # before the agent is known: the server's choice
    session._record(load_agent("default", ROOT / "agents").model_copy(update={"redact_pii": agent}))
    assert session.ctx.ledger.pii is redacts


@pytest.mark.parametrize(("record_calls", "record", "recorded"), [(False, False, False), (False, True, True),
                                                                  (True, False, True)])
def test_a_call_is_recorded_when_its_agent_or_the_server_records(tmp_path: Path, record_calls: bool,
                                                                 record: bool, recorded: bool) -> None:
    session = _session(tmp_path, record_calls=record_calls)
    session._record(load_agent("default", ROOT / "agents").model_copy(update={"record": record}))
    assert isinstance(session.transport, RecordedTransport) is recorded
    assert session.actions.transport is session.transport  # tones the agent plays go through the recorder
    assert (session.recording is not None) is recorded
    assert (tmp_path / "recordings" / f"{'CA' + 'd' * 32}.part").exists() is recorded


def test_a_recording_that_cannot_be_opened_leaves_the_call_unrecorded_not_failed(tmp_path: Path) -> None:
    (tmp_path / "recordings").write_text("not a directory")
    session = _session(tmp_path, record_calls=True)
    session._record(load_agent("default", ROOT / "agents"))
    assert session.recording is None and not isinstance(session.transport, RecordedTransport)
