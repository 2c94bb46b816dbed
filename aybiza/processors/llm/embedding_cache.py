"""FAQ phrasing embeddings kept on disk, so a restart does not encode every phrasing again.

Encoding an agent's FAQ phrasings is the slowest step of a server's start
(about 1.7 s of CPU for the shipped agent, more for a large FAQ), and its
result only depends on the model and the texts. :class:`EmbeddingCache`
stores the vectors under a name that is the SHA-256 of (cache format, model
identity, texts): an edited FAQ or other model weights are a different name,
so a stale file is never read, only left behind (and :meth:`EmbeddingCache.prune`
drops the oldest beyond a bound). Files are written to a temporary name and
renamed, so a reader (another process sharing the directory) sees a whole
file or none. A file that does not load, or whose content digest does not
match, is ignored, logged and rebuilt: the cache can only cost time, never
change an answer.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..packaged import PackagedModel

__all__ = ["EmbeddingCache", "model_identity"]

log = logging.getLogger("aybiza.embedding_cache")

Array = npt.NDArray[np.float32]

_FORMAT = "aybiza-embeddings-1"  # bump when the encoder's arithmetic changes (same weights, other vectors)
_KEEP = 256  # cache files kept per directory; the least recently written go first


def model_identity(model: PackagedModel) -> str:
    """A packaged model's identity for cache keys: its name and every pinned file hash."""
    return model.name + "".join(f"|{path}={digest}" for path, digest in model.files)


class EmbeddingCache:
    """Vectors of text lists, by content hash of (model identity, texts), in ``directory``."""

    def __init__(self, directory: Path, model_id: str) -> None:
        self.directory = directory
        self.model_id = model_id

    def key(self, texts: Sequence[str]) -> str:
        """The cache name of these texts' vectors (order and every character count)."""
        digest = hashlib.sha256()
        for part in (_FORMAT, self.model_id, *texts):
            encoded = part.encode()
            digest.update(len(encoded).to_bytes(8, "little"))  # length-prefixed: ("ab", "c") != ("a", "bc")
            digest.update(encoded)
        return digest.hexdigest()

    def path(self, texts: Sequence[str]) -> Path:
        """The file that holds (or would hold) these texts' vectors."""
        return self.directory / f"{self.key(texts)}.npz"

    def vectors(self, texts: Sequence[str], encode: Callable[[Sequence[str]], Array]) -> Array:
        """The texts' vectors: from the cache if a sound file is there, else ``encode(texts)``, then stored."""
        key = self.key(texts)
        path = self.directory / f"{key}.npz"
        found = self._load(path, key, len(texts))
        if found is not None:
            return found
        vectors = np.ascontiguousarray(encode(texts), dtype=np.float32)
        try:
            self._store(path, key, vectors)
        except OSError as error:  # a read-only or full disk costs the next start time, not this one
            log.warning("could not cache FAQ embeddings in %s: %s", self.directory, error)
        return vectors

    def _load(self, path: Path, key: str, rows: int) -> Array | None:
        try:
            with np.load(path, allow_pickle=False) as stored:
                vectors = np.ascontiguousarray(stored["vectors"], dtype=np.float32)
                digest = str(stored["digest"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            log.warning("ignoring a corrupt FAQ embedding cache file %s (%s); re-encoding", path.name, error)
            return None
        if vectors.ndim != 2 or vectors.shape[0] != rows or digest != _digest(key, vectors):
            log.warning("ignoring a FAQ embedding cache file that does not match its content (%s); re-encoding",
                        path.name)
            return None
        return vectors

    def _store(self, path: Path, key: str, vectors: Array) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, vectors=vectors, digest=np.array(_digest(key, vectors)))
        fd, partial = tempfile.mkstemp(dir=self.directory, prefix=f".{path.stem[:16]}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(buffer.getvalue())
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)  # atomic: readers see the old file, the new one, or none
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        self.prune()

    def prune(self, keep: int = _KEEP) -> None:
        """Drop the least recently written cache files beyond ``keep`` (every FAQ edit leaves one behind)."""
        try:
            files = sorted(self.directory.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
            for stale in files[keep:]:
                stale.unlink(missing_ok=True)
        except OSError:
            pass  # another process pruned the same file first


def _digest(key: str, vectors: Array) -> str:
    """What a sound file's vectors hash to: a torn or flipped byte is caught, not served."""
    digest = hashlib.sha256(key.encode())
    digest.update(str(vectors.shape).encode())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return digest.hexdigest()
