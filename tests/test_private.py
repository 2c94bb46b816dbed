"""Data at rest: the data directory is the owner's alone (0700), every call and secret file 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aybiza.config import Settings
from aybiza.edge.calls import open_call_store
from aybiza.edge.records import CallRecord
from aybiza.errors import ConfigError
from aybiza.guard import Guard
from aybiza.private import private_dir, private_sqlite, read_secret
from aybiza.twilio_auth import auth_token_for, local_token_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _a_permissive_umask() -> object:
    old = os.umask(0o022)  # what most machines have: files 0644 and directories 0755 unless we say otherwise
    yield
    os.umask(old)


@pytest.mark.anyio
async def test_call_databases_their_wal_and_the_outbox_are_private(tmp_path: Path) -> None:
    data = tmp_path / "var"
    store = await open_call_store(data)
    try:
        await store.start(CallRecord(call_id="CA1", caller="+15550001"))
        await store.end("CA1", outcome="hangup")
        archive = store.archive
        store.archive = _Down()  # type: ignore[assignment]  # the next record goes to the outbox
        await store.start(CallRecord(call_id="CA2", caller="+15550002"))
        await store.end("CA2", outcome="hangup")
        store.archive = archive
        # while open: the WAL files hold the recent writes (SQLite removes them on close)
        modes = {path.relative_to(data): _mode(path) for path in data.rglob("*")}
    finally:
        await store.aclose()
    assert _mode(data) == 0o700
    names = {path.name for path in modes}
    assert {"calls-live.db", "calls-live.db-wal", "calls-archive.db", "calls-archive.db-wal"} <= names
    assert any(path.parent.name == "outbox" for path in modes)
    for path, mode in modes.items():
        assert mode == (0o700 if (data / path).is_dir() else 0o600), path


class _Down:
    kind = "down"

    async def put(self, record: CallRecord) -> None:
        raise OSError("archive down")

    async def aclose(self) -> None:
        return None


def test_files_an_older_version_left_readable_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir(mode=0o755)
    for name in ("calls-archive.db-wal", "calls-archive.db-shm"):
        (data / name).touch(mode=0o644)
    private_sqlite(data / "calls-archive.db")
    assert _mode(data) == 0o700
    assert all(_mode(data / name) == 0o600 for name in ("calls-archive.db", "calls-archive.db-wal",
                                                         "calls-archive.db-shm"))


def test_a_shared_parent_directory_is_left_alone(tmp_path: Path) -> None:
    assert private_dir(tmp_path / "mine") == tmp_path / "mine"
    assert _mode(tmp_path / "mine") == 0o700


def test_a_secret_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("abc\n")
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match=r"readable by other users \(mode 0644\).*chmod 600"):
        read_secret(secret)
    os.chmod(secret, 0o600)
    assert read_secret(secret) == "abc"


def test_a_local_twilio_token_left_readable_stops_the_server(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    path = local_token_path(settings)
    path.write_text("0123456789abcdef")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="twilio_auth_token"):
        Guard(settings)
    with pytest.raises(ConfigError):
        auth_token_for(settings, create=False)  # `aybiza call` too


def test_new_secrets_are_made_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    guard = Guard(settings)
    assert _mode(tmp_path / "var") == 0o700
    assert _mode(local_token_path(settings)) == 0o600 and _mode(tmp_path / "var" / "api_token") == 0o600
    assert guard.api_token == (tmp_path / "var" / "api_token").read_text().strip()
