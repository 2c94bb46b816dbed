"""Data at rest: the data directory is the owner's alone, and so is every file holding calls or secrets.

Call records hold phone numbers and transcripts; SQLite keeps recent writes
in its ``-wal`` file, readable like the database. :func:`private_dir` makes a
directory mode 0700 (tightening one left wider by an older version, with a
log line), :func:`private_file` creates or tightens a file to 0600 before
anything is written to it, and :func:`read_secret` refuses a secret file that
other users can read: a token that may have leaked is not used silently.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .errors import ConfigError

__all__ = ["private_dir", "private_file", "private_sqlite", "read_secret", "write_secret"]

log = logging.getLogger("aybiza.private")

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed; make ``path`` itself mode 0700. Returns ``path``."""
    path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, _DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if missing, mode 0600; tighten an existing file. Returns ``path``."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, _FILE_MODE)
    os.close(fd)
    _tighten(path, _FILE_MODE)
    return path


def private_sqlite(path: Path) -> Path:
    """Make a SQLite database and its ``-wal``/``-shm``/``-journal`` files 0600 (created 0600 if missing).

    SQLite creates its side files with the database file's mode, so a
    database created 0600 keeps them private; existing side files are tightened.
    """
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            _tighten(side, _FILE_MODE)
    return path


def read_secret(path: Path) -> str:
    """The stripped text of a secret file; ConfigError if other users may read or write it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & _OTHERS:
        raise ConfigError(
            f"{path} holds a secret and is readable by other users (mode {mode:04o}); "
            f"run `chmod 600 {path}` (and rotate the secret if others may have read it), or delete it")
    return path.read_text(encoding="utf-8").strip()


def write_secret(path: Path, value: str) -> None:
    """Write a new secret file, mode 0600 from the start (fails if it exists)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)


def _tighten(path: Path, mode: int) -> None:
    info = path.stat()
    current = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode) and info.st_uid != os.getuid():
        return  # a shared parent such as /tmp: the files in it are private, the directory is not ours
    if current & _OTHERS:
        try:
            os.chmod(path, mode)
        except PermissionError:  # another user's file: say so, do not fail the server over it
            log.warning("%s is mode %04o and cannot be made %04o: other users may read it", path, current, mode)
            return
        log.warning("%s was mode %04o; made it %04o (call data is the owner's alone)", path, current, mode)
