"""Failsafe renderings kept on disk, so a restart does not synthesise the same apologies again.

The failsafe voice renders the default agent's apology texts at every start
(about 1.4 s of CPU with piper), yet they only change when the texts or the
voice do. :class:`RenderedCache` stores each rendering under the SHA-256 of
(format, the voice's ``identity``, text, language); a voice without an
identity (one whose output we cannot pin down) is never cached. Writes go
to a temporary name and are renamed; a file whose digest does not match its
content (torn, truncated, edited) is ignored and rendered again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

__all__ = ["RenderedCache"]

log = logging.getLogger("aybiza.rendered_cache")

_MAGIC = b"AYBZPCM1"
_HEADER = len(_MAGIC) + 4 + 32  # magic, sample rate (u32 LE), SHA-256 of key + rate + samples
_KEEP = 512  # renderings kept; each agent edit of a failsafe text leaves one behind


class RenderedCache:
    """PCM16 renderings by content hash of (voice identity, text, language) in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def key(identity: str, text: str, language: str) -> str:
        digest = hashlib.sha256()
        for part in (_MAGIC.decode(), identity, text, language):
            encoded = part.encode()
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
        return digest.hexdigest()

    def path(self, identity: str, text: str, language: str) -> Path:
        return self.directory / f"{self.key(identity, text, language)}.pcm"

    def load(self, identity: str, text: str, language: str) -> tuple[bytes, int] | None:
        """The stored rendering, or None when there is none or it is not sound."""
        key = self.key(identity, text, language)
        path = self.directory / f"{key}.pcm"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("cannot read the rendering %s (%s); rendering again", path.name, error)
            return None
        rate = int.from_bytes(data[len(_MAGIC):len(_MAGIC) + 4], "little") if len(data) >= _HEADER else 0
        pcm = data[_HEADER:]
        if not data.startswith(_MAGIC) or not rate or len(pcm) % 2 or data[len(_MAGIC) + 4:_HEADER] != _digest(
                key, rate, pcm):
            log.warning("ignoring a damaged rendering %s; rendering again", path.name)
            return None
        return pcm, rate

    def store(self, identity: str, text: str, language: str, pcm: bytes, rate: int) -> None:
        """Keep a rendering (a failure to write costs the next start time, nothing more)."""
        key = self.key(identity, text, language)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(dir=self.directory, prefix=f".{key[:16]}.", suffix=".partial")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(_MAGIC + rate.to_bytes(4, "little") + _digest(key, rate, pcm) + pcm)
                os.replace(partial, self.directory / f"{key}.pcm")  # readers see the whole file or none
            finally:
                Path(partial).unlink(missing_ok=True)
            self._prune()
        except OSError as error:
            log.warning("could not keep a failsafe rendering in %s: %s", self.directory, error)

    def _prune(self) -> None:
        try:
            files = sorted(self.directory.glob("*.pcm"), key=lambda p: p.stat().st_mtime, reverse=True)
            for stale in files[_KEEP:]:
                stale.unlink(missing_ok=True)
        except OSError:
            pass  # another process pruned it first


def _digest(key: str, rate: int, pcm: bytes) -> bytes:
    return hashlib.sha256(key.encode() + rate.to_bytes(4, "little") + pcm).digest()
