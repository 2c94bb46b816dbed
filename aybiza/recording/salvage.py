"""Recordings a dead process left behind: made playable, filed, and linked from their call's record.

A call's recording is written to ``recordings/<call>.part`` as the call goes
(:mod:`aybiza.recording.recorder`). When the process dies mid-call, the
session never files it: the call is archived as ``interrupted`` by the next
process (:meth:`aybiza.edge.calls.CallStore.recover_interrupted`) and the
``.part`` stayed unlinked — what was said, recorded, and nowhere to be found.

:func:`salvage_recordings` runs at startup and after each recovery sweep. For
each ``.part`` whose call is no longer live (archived as interrupted, or
with no record at all and untouched for a while), it completes the WAV header
to the audio actually on disk (the stdlib's :mod:`wave` patches it after
each write, but a process killed mid-write leaves a torn last frame), files
it like any finished recording (kept on disk, or uploaded to the bucket),
and links it from the archived record with ``incomplete: true``: the
recording ends where the process stopped writing. A ``.part`` with no audio
in it is removed.
"""

from __future__ import annotations

import logging
import struct
import time
import wave
from pathlib import Path

import anyio
import anyio.to_thread

from ..edge.calls import CallStore
from .info import RecordingInfo
from .storage import RecordingStore

__all__ = ["repair_wav", "salvage_recordings"]

log = logging.getLogger("aybiza.recording")

ORPHAN_AGE_S = 600.0
"""A ``.part`` with no call record anywhere is salvaged once it has not been written for this long."""


def repair_wav(path: Path) -> float | None:
    """Set ``path``'s RIFF and data lengths to the whole frames on disk (torn tail cut); its seconds, or None.

    None: not a WAV with a data chunk (the process died before the first audio was written).
    """
    with path.open("r+b") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        channels = sample_width = rate = 0
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fmt = handle.read(size)
                _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
                sample_width = bits // 8
            elif name == b"data":
                break
            else:
                handle.seek(size + (size & 1), 1)
        if not (channels and sample_width and rate):
            return None
        data_start = handle.tell()
        frame = channels * sample_width
        available = max(0, path.stat().st_size - data_start)
        data = available - available % frame
        handle.truncate(data_start + data)
        handle.seek(data_start - 4)
        handle.write(struct.pack("<I", data))
        handle.seek(4)
        handle.write(struct.pack("<I", data_start - 8 + data))
    with wave.open(str(path), "rb") as check:  # what a player will see
        return check.getnframes() / check.getframerate()


async def salvage_recordings(recordings: RecordingStore, store: CallStore, *, now: float | None = None) -> list[str]:
    """File and link the ``.part`` recordings of calls no process is running; the call ids linked."""
    directory = recordings.directory
    if not directory.is_dir():
        return []
    at = time.time() if now is None else now
    linked: list[str] = []
    for partial in sorted(directory.glob("*.part")):
        call_id = partial.stem
        try:
            if await store.state.read(call_id) is not None:
                continue  # live: some process is recording it now
            record = await store.archive.get(call_id)
            if record is None and at - partial.stat().st_mtime < ORPHAN_AGE_S:
                continue  # no record yet: a call still being set up, perhaps
            if record is not None and record.recording is not None:
                continue  # already filed (a process that died after filing, before removing the part)
        except FileNotFoundError:
            continue
        seconds = await anyio.to_thread.run_sync(repair_wav, partial)
        if seconds is None:
            partial.unlink(missing_ok=True)
            log.warning("recording of %s had no audio when its process stopped; removed", call_id)
            continue
        info = RecordingInfo(key=partial.name, duration_s=round(seconds, 3), incomplete=True,
                             sample_rate=_rate(partial))
        info = await anyio.to_thread.run_sync(recordings.finish, call_id, partial, info)
        if record is None:
            log.warning("recording of %s filed as %s (%.1f s); no call record to link it from", call_id,
                        info.key, seconds)
            continue
        await store.archive.put(record.model_copy(update={"recording": info, "version": record.version + 1}))
        linked.append(call_id)
        log.warning("recording of %s (interrupted call) filed as %s and linked: %.1f s, incomplete", call_id,
                    info.key, seconds)
    return linked


def _rate(path: Path) -> int:
    with wave.open(str(path), "rb") as wav:
        return wav.getframerate()
