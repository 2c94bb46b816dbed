"""What a call record says about its recording (kept apart so the record imports nothing else of recording)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RecordingInfo"]


class RecordingInfo(BaseModel):
    """A call's recording, as its record links it: where, how long, which channels, what was paused."""

    model_config = ConfigDict(extra="ignore")

    storage: Literal["file", "s3"] = "file"
    key: str  # the file name in the data directory's recordings/, or the object key in the bucket
    url: str = ""  # s3://bucket/key for a bucket; empty for a file (served by the API)
    duration_s: float = 0.0
    sample_rate: int = 8000
    channels: list[str] = Field(default_factory=lambda: ["caller", "agent"])  # left, right
    pauses: list[tuple[float, float]] = Field(default_factory=list)  # (start, end) seconds: digit collection
    error: str = ""  # why writing stopped mid-call, or why the upload failed (the recording stayed on disk)
    incomplete: bool = False  # its process stopped mid-call: filed at the next start, ends where writing stopped
