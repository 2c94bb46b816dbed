"""Shared end-to-end fixtures: the recogniser that checks what callers heard, and agent directories."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from aybiza.codecs import ulaw2lin
from aybiza.processors.stt.whisper import WhisperRecognizer
from aybiza.testing.caller import CallReport

from .server import SharedServers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServers]:
    """Servers shared by the modules that need the same settings and no fresh server (see :class:`SharedServers`)."""
    servers = SharedServers(tmp_path_factory.mktemp("shared"))
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def recognizer() -> Iterator[WhisperRecognizer]:
    """tiny.en, for checking what a caller heard."""
    recognizer = WhisperRecognizer()
    recognizer.load()
    yield recognizer


def words(text: str) -> set[str]:
    """The lower-case words of ``text``."""
    return set(re.findall(r"[a-z]+", text.lower()))


HOURS_DAYS = frozenset({"monday", "friday", "saturday"})  # all in the answer's first sentence


def heard_the_hours(heard: set[str]) -> bool:
    """Whether the default agent's opening-hours answer was heard: two of the days its first sentence names. Not one
    word of it: the local voice is rendered afresh on every call, and whisper once heard "We're hoping Monday" for
    "We're open Monday"."""
    return len(HOURS_DAYS & heard) >= 2


def heard_pcm(report: CallReport) -> bytes:
    """What the caller heard, as 8 kHz PCM16."""
    return ulaw2lin(bytes(report.heard))


def heard_after(report: CallReport, turn: int = -1) -> bytes:
    """What the caller heard after the end of their utterance ``turn`` (the agent's reply, not its greeting)."""
    return ulaw2lin(bytes(report.heard[report.turns[turn].heard_before:]))


def speech_seconds(pcm: bytes, rate: int = 8000) -> float:
    """Seconds of 20 ms frames louder than -40 dBFS (speech, not line noise)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    frame = rate // 50
    count = len(samples) // frame
    if not count:
        return 0.0
    rms = np.sqrt((samples[: count * frame].reshape(count, frame) ** 2).mean(axis=1))
    return float((rms > 32768 * 0.01).sum()) / 50


def agents_dir(tmp: Path, **variants: Mapping[str, Any]) -> Path:
    """A directory with the default agent (short greeting) and variants of it: ``name={field: value}``."""
    base = yaml.safe_load((ROOT / "agents" / "default.yaml").read_text())
    base["greeting"] = "Hello, Harbor Lane Dental."
    directory = tmp / "agents"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "default.yaml").write_text(yaml.safe_dump(base))
    for name, changes in variants.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump({**base, "id": name, **changes}))
    return directory
