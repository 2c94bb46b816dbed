"""Shared bits of the TTS tests: audio checks and a sink that records what reaches downstream."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import TypeVar

import anyio
import numpy as np
import pytest

from aybiza.pipeline.frames import Frame

F = TypeVar("F", bound=Frame)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed")


def rms(pcm: bytes) -> float:
    """Root mean square of PCM16LE samples (0 for silence, ~1000+ for speech)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


class RecordingSink:
    """The next stage: records every frame pushed to it, in order (create it inside the event loop)."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._arrived = anyio.Event()

    async def __call__(self, frame: Frame) -> None:
        self.frames.append(frame)
        self._arrived.set()
        self._arrived = anyio.Event()

    async def wait_for(self, condition: Callable[[list[Frame]], bool]) -> None:
        """Wait until ``condition(frames)`` holds (the deadline guards against a hang only)."""
        with anyio.fail_after(30):
            while not condition(self.frames):
                await self._arrived.wait()

    def has(self, kind: type[Frame], turn_id: int | None = None) -> bool:
        """Whether a frame of ``kind`` (for ``turn_id``, if given) has arrived."""
        return any(
            isinstance(f, kind) and (turn_id is None or getattr(f, "turn_id", None) == turn_id)
            for f in self.frames
        )

    def of(self, kind: type[F]) -> list[F]:
        """The frames of ``kind``, in arrival order."""
        return [f for f in self.frames if isinstance(f, kind)]
