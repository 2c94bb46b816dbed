"""Recordings a dead process left as ``.part``: repaired, filed, linked from the interrupted call's record."""

from __future__ import annotations

import os
import time
import wave
from pathlib import Path

import pytest

from aybiza.config import Settings
from aybiza.edge.archive import SQLiteArchive
from aybiza.edge.calls import CallStore
from aybiza.edge.state_sqlite import SQLiteState
from aybiza.pipeline import CallContext
from aybiza.recording.salvage import ORPHAN_AGE_S, repair_wav, salvage_recordings
from aybiza.recording.storage import RecordingStore

RATE = 8000
CALL = "CA" + "7" * 32


def _part(path: Path, seconds: float, *, torn: bytes = b"") -> Path:
    """A stereo WAV as the recorder writes it, with ``torn`` bytes of a half-written frame after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(b"\x10\x00\x20\x00" * int(seconds * RATE))
    with path.open("ab") as handle:
        handle.write(torn)
    return path


def test_a_torn_last_frame_is_cut_and_the_header_says_what_is_on_disk(tmp_path: Path) -> None:
    path = _part(tmp_path / "x.part", 1.5, torn=b"\x01\x02\x03")
    with path.open("r+b") as handle:  # the header of an earlier write: fewer frames than there are
        handle.seek(40)
        handle.write((400).to_bytes(4, "little"))
    assert repair_wav(path) == pytest.approx(1.5)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnframes(), wav.getnchannels(), wav.getframerate()) == (12000, 2, RATE)
    assert path.stat().st_size == 44 + 12000 * 4


def test_a_part_without_audio_is_not_a_recording(tmp_path: Path) -> None:
    empty = tmp_path / "empty.part"
    empty.write_bytes(b"")
    assert repair_wav(empty) is None


async def _store(tmp_path: Path, owner: str) -> CallStore:
    return await CallStore(SQLiteState(tmp_path / "live.db"), SQLiteArchive(tmp_path / "archive.db"),
                           owner=owner).open()


@pytest.mark.anyio
async def test_an_interrupted_calls_recording_is_filed_and_linked_as_incomplete(tmp_path: Path) -> None:
    recordings = RecordingStore(Settings(data_dir=tmp_path))
    dead = await _store(tmp_path, "dead-process")
    await dead.start_call(CallContext(call_id=CALL, caller="+14155550123"))
    _part(recordings.directory / f"{CALL}.part", 2.0, torn=b"\x00")
    await dead.aclose()  # the process died: its call stays live in the state store
    os.utime(recordings.directory / f"{CALL}.part", (time.time() - 5, time.time() - 5))

    survivor = await _store(tmp_path, "next-process")
    try:
        assert await salvage_recordings(recordings, survivor) == []  # still live: someone may be recording it
        assert await survivor.recover_interrupted() == [CALL]
        assert await salvage_recordings(recordings, survivor) == [CALL]
        record = await survivor.archive.get(CALL)
        assert record is not None and record.outcome == "interrupted"
        info = record.recording
        assert info is not None and info.incomplete and info.storage == "file" and info.key == f"{CALL}.wav"
        assert info.duration_s == pytest.approx(2.0) and info.sample_rate == RATE
        path = recordings.local_path(info)
        assert path is not None and not (recordings.directory / f"{CALL}.part").exists()
        with wave.open(str(path), "rb") as wav:
            assert wav.getnframes() == 2 * RATE
        assert await salvage_recordings(recordings, survivor) == []  # once
    finally:
        await survivor.aclose()


@pytest.mark.anyio
async def test_a_part_with_no_record_is_filed_only_once_nobody_has_written_it_for_a_while(tmp_path: Path) -> None:
    recordings = RecordingStore(Settings(data_dir=tmp_path))
    orphan = _part(recordings.directory / "WB123.part", 0.5)
    store = await _store(tmp_path, "next-process")
    try:
        assert await salvage_recordings(recordings, store) == []
        assert orphan.exists()  # a call being set up may not have its record yet
        await salvage_recordings(recordings, store, now=time.time() + ORPHAN_AGE_S + 1)
        assert not orphan.exists() and (recordings.directory / "WB123.wav").exists()
    finally:
        await store.aclose()
