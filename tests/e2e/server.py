"""Start a real ``aybiza serve`` process on a free loopback port for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
AUTH_TOKEN = "e2e-test-auth-token"


@dataclass
class Server:
    """A running server: where it listens and its log file."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/stream"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(tmp: Path, env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()) -> Iterator[Server]:
    """Serve on a free port until the block ends; fail with the server's log if it does not come up."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"server-{port}.log"
    environment = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "AYBIZA_DATA_DIR": str(tmp / "data"),
        "AYBIZA_AGENTS_DIR": str(ROOT / "agents"),
        "AYBIZA_PUBLIC_URL": f"http://127.0.0.1:{port}",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "aybiza.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=ROOT,
        )
    server = Server(port, process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.http}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after 60 s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
