"""Where finished recordings go: the data directory (0600 files) or an S3 bucket through boto3.

A recording is always written to the data directory first, as the call goes
(``recordings/<call>.part``, private from its first byte). When the call
ends it is renamed to ``<call>.wav`` — or, with a bucket configured
(``AYBIZA_RECORDING_S3_BUCKET``), uploaded to ``<prefix><call>.wav`` with
boto3's managed transfer (multipart for long calls) and the local copy
removed. An upload that fails keeps the file on disk and says so in the
record: a recording is never lost to an S3 outage. The endpoint URL makes
MinIO, a VPC endpoint or a test server (moto) work the same.

:meth:`RecordingStore.local_path` and :meth:`RecordingStore.open_object`
read a recording back for ``GET /api/calls/{id}/recording``, from disk or
from the bucket (a byte range of it, for a player that seeks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..private import private_dir, private_file
from .info import RecordingInfo

__all__ = ["RecordingInfo", "RecordingStore", "S3Object"]

log = logging.getLogger("aybiza.recording")

_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class S3Object:
    """A recording read from the bucket: its bytes in chunks, their length, and the range they are (if one)."""

    chunks: Iterator[bytes]
    size: int
    content_range: str | None = None


class RecordingStore:
    """The process's recordings: local files, uploaded to S3 at the end of a call when a bucket is set."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = Path(settings.data_dir) / "recordings"
        self.bucket = settings.recording_s3_bucket
        self._client: Any = None
        self._lock = threading.Lock()

    def partial_path(self, call_id: str) -> Path:
        """The file a call's recording is streamed to while the call runs (created 0600)."""
        private_dir(self.directory)
        return private_file(self.directory / f"{_file_name(call_id)}.part")

    def finish(self, call_id: str, partial: Path, info: RecordingInfo) -> RecordingInfo:
        """File the finished recording (blocking: run it in a thread); ``info`` with where it went."""
        name = f"{_file_name(call_id)}.wav"
        final = self.directory / name
        os.replace(partial, final)
        if not self.bucket:
            return info.model_copy(update={"storage": "file", "key": name})
        key = f"{self.settings.recording_s3_prefix}{name}"
        try:
            self.client().upload_file(str(final), self.bucket, key,
                                      ExtraArgs={"ContentType": "audio/wav", "ServerSideEncryption": "AES256"})
        except Exception as error:  # noqa: BLE001 - any S3 failure: keep the file, say why in the record
            log.error("recording of %s not uploaded to s3://%s/%s (kept on disk): %s", call_id, self.bucket, key,
                      error)
            return info.model_copy(update={"storage": "file", "key": name, "error": str(error)[:300]})
        final.unlink(missing_ok=True)
        return info.model_copy(update={"storage": "s3", "key": key, "url": f"s3://{self.bucket}/{key}"})

    def purge(self, older_than_days: float, *, now: float | None = None) -> int:
        """Delete recordings kept on disk that are older than ``older_than_days`` (retention); how many.

        A bucket's recordings are its lifecycle rules' to expire: the server
        never lists a bucket. Left-over ``.part`` files (a process that died
        mid-call) go the same way.
        """
        if not self.directory.is_dir():
            return 0
        cutoff = (time.time() if now is None else now) - older_than_days * 86400
        removed = 0
        for path in [*self.directory.glob("*.wav"), *self.directory.glob("*.part")]:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def local_path(self, info: RecordingInfo) -> Path | None:
        """Where a recording kept on disk is (None when it is not there); only ever inside ``recordings/``."""
        path = self.directory / Path(info.key).name
        return path if info.storage == "file" and path.is_file() else None

    def open_object(self, info: RecordingInfo, byte_range: str | None = None) -> S3Object | None:
        """A recording in the bucket, whole or one ``bytes=a-b`` range of it (blocking: run it in a thread)."""
        extra = {"Range": byte_range} if byte_range else {}
        try:
            response = self.client().get_object(Bucket=self.bucket, Key=info.key, **extra)
        except Exception as error:  # noqa: BLE001 - missing object, bad range, bucket down: the API says so
            log.warning("recording s3://%s/%s not read: %s", self.bucket, info.key, error)
            return None
        return S3Object(response["Body"].iter_chunks(_CHUNK), int(response["ContentLength"]),
                        response.get("ContentRange"))

    def client(self) -> Any:
        """The S3 client (created once; boto3's default credential chain)."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                settings = self.settings
                self._client = boto3.client(
                    "s3", region_name=settings.recording_s3_region,
                    endpoint_url=settings.recording_s3_endpoint_url or None,
                    config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                                  read_timeout=30))
            return self._client


def _file_name(call_id: str) -> str:
    """A call id as a file name: itself when plain (a Twilio CallSid), else a digest (no path tricks)."""
    if _SAFE.match(call_id):
        return call_id
    return "call-" + hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:32]


