"""Recordings are filed privately on disk, or uploaded to S3 (moto's real S3 server) and read back from there."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aybiza.config import Settings
from aybiza.recording.info import RecordingInfo
from aybiza.recording.storage import RecordingStore
from aybiza.testing.s3_server import S3_CREDENTIALS, S3Server

BUCKET = "aybiza-recordings"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def _recorded(store: RecordingStore, call_id: str, content: bytes) -> Path:
    partial = store.partial_path(call_id)
    partial.write_bytes(content)
    return partial


def _read(store: RecordingStore, info: RecordingInfo) -> bytes:
    if info.storage == "file":
        path = store.local_path(info)
        assert path is not None
        return path.read_bytes()
    found = store.open_object(info)
    assert found is not None and found.content_range is None
    data = b"".join(found.chunks)
    assert len(data) == found.size
    return data


def test_a_recording_is_filed_in_the_data_directory_readable_by_the_owner_alone(tmp_path: Path) -> None:
    store = RecordingStore(Settings(data_dir=tmp_path))
    content = os.urandom(300_000)
    partial = _recorded(store, "CA" + "a" * 32, content)
    assert stat.S_IMODE(partial.stat().st_mode) == 0o600  # private from the first byte
    info = store.finish("CA" + "a" * 32, partial, RecordingInfo(storage="file", key=partial.name))
    assert info.storage == "file" and info.key == "CA" + "a" * 32 + ".wav"
    final = tmp_path / "recordings" / info.key
    assert not partial.exists() and stat.S_IMODE(final.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "recordings").stat().st_mode) == 0o700
    assert _read(store, info) == content


def test_a_call_id_that_is_not_a_plain_name_cannot_reach_outside_the_directory(tmp_path: Path) -> None:
    store = RecordingStore(Settings(data_dir=tmp_path))
    partial = _recorded(store, "../../etc/passwd", b"x")
    assert partial.parent == tmp_path / "recordings" and ".." not in partial.name


def test_a_recording_is_uploaded_to_the_bucket_and_read_back_from_it(tmp_path: Path, s3: S3Server,
                                                                      aws: None) -> None:
    store = RecordingStore(Settings(data_dir=tmp_path, recording_s3_bucket=BUCKET, recording_s3_prefix="calls/",
                                    recording_s3_endpoint_url=s3.url))
    content = os.urandom(9 * 1024 * 1024)  # past boto3's multipart threshold: a long call's upload
    partial = _recorded(store, "CA" + "b" * 32, content)
    info = store.finish("CA" + "b" * 32, partial, RecordingInfo(storage="file", key=partial.name))
    assert info.storage == "s3" and info.key == "calls/CA" + "b" * 32 + ".wav" and not info.error
    assert info.url == f"s3://{BUCKET}/{info.key}"
    assert not list((tmp_path / "recordings").iterdir())  # no copy left behind
    stored = s3.client().get_object(Bucket=BUCKET, Key=info.key)
    assert stored["ContentType"] == "audio/wav" and stored["Body"].read() == content
    assert _read(store, info) == content
    part = store.open_object(info, "bytes=1000-1999")  # a player seeking
    assert part is not None and part.size == 1000 and part.content_range == f"bytes 1000-1999/{len(content)}"
    assert b"".join(part.chunks) == content[1000:2000]


def test_an_upload_that_fails_keeps_the_recording_on_disk_and_says_why(tmp_path: Path, s3: S3Server,
                                                                        aws: None) -> None:
    store = RecordingStore(Settings(data_dir=tmp_path, recording_s3_bucket="no-such-bucket",
                                    recording_s3_endpoint_url=s3.url))
    partial = _recorded(store, "CA" + "c" * 32, b"RIFF....")
    info = store.finish("CA" + "c" * 32, partial, RecordingInfo(storage="file", key=partial.name))
    assert info.storage == "file" and "NoSuchBucket" in info.error
    assert _read(store, info) == b"RIFF...."


def test_retention_removes_recordings_on_disk_older_than_its_days(tmp_path: Path) -> None:
    store = RecordingStore(Settings(data_dir=tmp_path))
    old = store.finish("CA" + "e" * 32, _recorded(store, "CA" + "e" * 32, b"old"),
                       RecordingInfo(storage="file", key="x"))
    leftover = _recorded(store, "CA" + "f" * 32, b"a process died mid-call")
    new = store.finish("CA" + "9" * 32, _recorded(store, "CA" + "9" * 32, b"new"),
                       RecordingInfo(storage="file", key="x"))
    for path in (tmp_path / "recordings" / old.key, leftover):
        os.utime(path, (time.time() - 40 * 86400, time.time() - 40 * 86400))
    assert store.purge(30) == 2
    assert [path.name for path in (tmp_path / "recordings").iterdir()] == [new.key]
    assert RecordingStore(Settings(data_dir=tmp_path / "none")).purge(30) == 0
