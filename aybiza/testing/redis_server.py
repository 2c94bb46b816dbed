"""A real ``redis-server`` on a free loopback port in a temporary directory, for tests and benchmarks.

``with RedisServer() as redis: ... redis.url`` starts the Debian
``redis-server`` binary (no persistence, loopback only) and stops it on
exit. :func:`redis_server_binary` says whether the binary is installed, so
tests can skip with a clear message when it is not.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from .processes import free_port

__all__ = ["RedisServer", "free_port", "redis_server_binary"]

INSTALL_HINT = "redis-server is not installed (apt-get install redis-server)"


def redis_server_binary() -> str | None:
    """The path of ``redis-server``, or None if it is not installed."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process owned by the caller (started by :meth:`start`, ended by :meth:`stop`)."""

    def __init__(self, *, host: str = "127.0.0.1", extra_args: Sequence[str] = ()) -> None:
        self.host = host
        self.port = 0
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """``redis://host:port/0``."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> Self:
        """Start the server and wait until it answers PING."""
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self._dir = tempfile.TemporaryDirectory(prefix="aybiza-redis-")
        self.port = free_port(self.host)
        argv = [binary, "--port", str(self.port), "--bind", self.host, "--dir", self._dir.name,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                *self.extra_args]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while not _ping(self.host, self.port):
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self._cleanup()
                raise RuntimeError(f"redis-server exited {self.process.returncode}: {error.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its directory."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stderr is not None:
            process.stderr.close()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
