"""Start a real ``aybiza serve`` process on a free loopback port for end-to-end tests.

Every server a test process starts shares one startup cache directory (``AYBIZA_CACHE_DIR``: the FAQ
embeddings and the joined multilingual model), so only the first pays for building it; the tests of the
cache itself start theirs with a directory of their own. :class:`SharedServers` lets test modules that
need the same settings, and no fresh server, use one server between them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from aybiza.testing.processes import free_port, serving

ROOT = Path(__file__).resolve().parents[2]
AUTH_TOKEN = "e2e-test-auth-token"


def api_headers(data_dir: Path) -> dict[str, str]:
    """The bearer header for call records of a loopback server without AYBIZA_API_TOKEN (its local token)."""
    return {"Authorization": f"Bearer {(data_dir / 'api_token').read_text().strip()}"}


@dataclass
class Server:
    """A running server: where it listens, its data directory and its log file."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path

    @property
    def api(self) -> dict[str, str]:
        """Headers that may read call records (``/api/calls``)."""
        return api_headers(self.data_dir)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/stream"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def settled(self, timeout_s: float = 120.0) -> Server:
        """Wait until the models loaded after ``/health`` (multilingual whisper, language ID) are in: a call placed
        before competes with those loads for the CPU, which is a cold start, not what most tests measure."""
        deadline = time.monotonic() + timeout_s
        while "models for later calls loaded" not in self.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self

    async def record(self, call_id: str) -> dict[str, Any]:
        """The call's record from ``/api/calls/{id}`` (the test fails when there is none)."""
        async with httpx.AsyncClient(timeout=5, headers=self.api) as client:
            response = await client.get(f"{self.http}/api/calls/{call_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


@cache
def startup_cache_dir() -> Path:
    """This test process's startup cache, shared by its servers (removed when the process exits)."""
    directory = Path(tempfile.mkdtemp(prefix="aybiza-test-cache-"))
    atexit.register(shutil.rmtree, directory, True)
    return directory


@contextmanager
def running_server(tmp: Path, env: Mapping[str, str] | None = None, args: tuple[str, ...] = (),
                   start_timeout_s: float = 60.0) -> Iterator[Server]:
    """Serve on a free port until the block ends; fail with the server's log if it does not come up.

    Agents come from ``agents_dir(tmp)`` (the shipped one, short greeting) unless ``env`` names a directory.
    """
    from .conftest import agents_dir

    port = free_port()
    log_path = tmp / f"server-{port}.log"
    environment = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "AYBIZA_DATA_DIR": str(tmp / "data"),
        # The shipped agent with a one-second greeting: calls get to the point sooner.
        "AYBIZA_AGENTS_DIR": str(agents_dir(tmp)) if not (env and "AYBIZA_AGENTS_DIR" in env) else "",
        "AYBIZA_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "AYBIZA_CACHE_DIR": str(startup_cache_dir()),
        **(env or {}),
    }
    command = [sys.executable, "-m", "aybiza.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with serving(command, health_url=f"http://127.0.0.1:{port}/health", log_path=log_path, env=environment,
                 cwd=ROOT, timeout_s=start_timeout_s) as process:
        yield Server(port, process, log_path, Path(environment["AYBIZA_DATA_DIR"]))


class SharedServers:
    """Servers started once per test session (per xdist worker) and shared by the modules asking for the same settings.

    For tests that neither count from zero (metrics, the archive's size) nor need a fresh
    process: calls are archived per call id, so such tests do not see each other. Each server
    stops when the session ends.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stack = ExitStack()
        self._servers: dict[tuple[tuple[str, str], ...], Server] = {}

    def get(self, env: Mapping[str, str] | None = None) -> Server:
        """The running server with exactly these settings (``running_server``'s defaults otherwise); started once."""
        key = tuple(sorted((env or {}).items()))
        server = self._servers.get(key)
        if server is None or server.process.poll() is not None:
            directory = self.directory / f"shared-{len(self._servers)}"
            server = self._servers[key] = self._stack.enter_context(running_server(directory, env))
        return server

    def close(self) -> None:
        self._stack.close()


@contextmanager
def serving_app(app: object, port: int | None = None) -> Iterator[int]:
    """Serve an ASGI app built in this process (uvicorn in a thread) until the block ends; yields the port."""
    import threading
    import time

    import httpx
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,  # type: ignore[arg-type]
                                           ws_ping_interval=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the in-process server did not come up")
            time.sleep(0.1)
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
