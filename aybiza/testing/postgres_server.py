"""A real PostgreSQL server in a temporary directory on a free loopback port, for tests.

``with PostgresServer() as pg: ... pg.url`` runs ``initdb`` and
``postgres`` from the Debian ``postgresql`` package
(``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root,
so as root the data directory belongs to the ``postgres`` user the package
creates and both programs run through ``runuser``. Trust authentication on
loopback and a Unix socket inside the temporary directory; nothing outside
it is touched. :func:`postgres_bin_dir` says whether the package is there.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from .processes import free_port

__all__ = ["PostgresServer", "postgres_bin_dir"]

INSTALL_HINT = "PostgreSQL is not installed (apt-get install postgresql)"


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` and ``postgres``, or None."""
    candidates = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            try:
                candidates.append((int(path.parent.name), path))
            except ValueError:
                continue
    return max(candidates)[1] if candidates else None


class PostgresServer:
    """One PostgreSQL cluster owned by the caller (``start`` runs initdb + postgres, ``stop`` removes it)."""

    def __init__(self, *, host: str = "127.0.0.1", user: str = "postgres") -> None:
        self.host = host
        self.port = 0
        self.user = user
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        """``postgresql://postgres@host:port/postgres``."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/postgres"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", "postgres", "--", *argv]

    def start(self, timeout_s: float = 30.0) -> Self:
        """Create a cluster and start the server; wait until it accepts connections."""
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError(INSTALL_HINT)
        root = Path(tempfile.mkdtemp(prefix="aybiza-pg-"))
        self._dir = root
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(root, account.pw_uid, account.pw_gid)
        data = root / "data"
        initdb = subprocess.run(
            self._as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", self.user, "-A", "trust",
                            "-E", "UTF8", "--no-sync", "--no-instructions"]),
            capture_output=True, timeout=120, check=False,
        )
        if initdb.returncode != 0:
            self._cleanup()
            raise RuntimeError(f"initdb failed: {initdb.stderr.decode(errors='replace').strip()}")
        self.port = free_port(self.host)
        argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(root),
                "-c", f"listen_addresses={self.host}", "-c", "max_connections=40",
                "-c", "shared_buffers=16MB", "-c", "logging_collector=off"]
        self.process = subprocess.Popen(self._as_owner(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready = [str(bin_dir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-q"]
        deadline = time.monotonic() + timeout_s
        while subprocess.run(ready, check=False).returncode != 0:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self._cleanup()
                raise RuntimeError(f"postgres exited {self.process.returncode}: {error.strip()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not accept connections on port {self.port} within {timeout_s} s")
            time.sleep(0.1)
        return self

    def _postmaster_pid(self) -> int | None:
        if self._dir is None:
            return None
        try:
            return int((self._dir / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), then remove the cluster."""
        process = self.process
        if process is not None and process.poll() is None:
            pid = self._postmaster_pid()
            try:
                os.kill(pid if pid is not None else process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                process.kill()
                process.wait()
        if process is not None and process.stderr is not None:
            process.stderr.close()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
