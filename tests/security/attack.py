"""What the attack tests share: a hostile caller's tools, the server's resident memory, the figures they record.

Every attack goes through a real ``aybiza serve`` (tests/e2e/server.py); figures (connections held,
calls answered during a flood, RSS before and after) are printed and appended to
``tests/artifacts/security-figures.json`` for the security note.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import websockets
from e2e.conftest import agents_dir  # tests/ is on the path, as for every test package here
from e2e.server import AUTH_TOKEN, ROOT, Server, startup_cache_dir
from twilio.request_validator import RequestValidator

from aybiza.testing.processes import free_port, serving
from aybiza.testing.twilio_caller import TwilioCallerProtocol

FIGURES = ROOT / "tests" / "artifacts" / "security-figures.json"


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (VmRSS)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) / 1024


def open_files(pid: int) -> int:
    """How many files process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def record_figures(name: str, **figures: Any) -> None:
    """Print ``figures`` and keep them under ``name`` in the figures file."""
    print(f"\n[figures] {name}: {json.dumps(figures)}")
    FIGURES.parent.mkdir(exist_ok=True)
    known = json.loads(FIGURES.read_text()) if FIGURES.is_file() else {}
    known[name] = figures
    FIGURES.write_text(json.dumps(known, indent=2) + "\n")


async def token_for(server: Server, call_sid: str, *, account_sid: str, caller: str = "+15555550142",
                    ) -> tuple[int, str]:
    """POST a signed webhook for ``call_sid`` (as a captured one would be re-posted): (status, call token)."""
    params = {"CallSid": call_sid, "AccountSid": account_sid, "From": caller}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{server.http}/twiml", params)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{server.http}/twiml", data=params, headers={"X-Twilio-Signature": signature})
    token = re.search(r'name="call_token" value="([^"]+)"', response.text)
    return response.status_code, token.group(1) if token else ""


async def stream_with(server: Server, token: str, *, call_sid: str, account_sid: str, caller: str = "+15555550142",
                      frames: int = 0) -> tuple[int | None, str]:
    """Open a Media Stream, ``start`` it with ``token`` as ``call_sid``, send ``frames``; how the server closed it."""
    protocol = TwilioCallerProtocol(custom_parameters={"call_token": token, "caller": caller}, call_sid=call_sid,
                                    account_sid=account_sid)
    async with websockets.connect(server.stream_url) as ws:
        await ws.send(protocol.connected())
        await ws.send(protocol.start())
        try:
            for _ in range(frames):
                await ws.send(protocol.media(b"\xff" * 160))
            with anyio.fail_after(15):
                while True:
                    await ws.recv()
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or ""


async def record_of(server: Server, call_id: str) -> dict[str, Any] | None:
    """The call's record through the API (with the server's local token), or None."""
    async with httpx.AsyncClient(timeout=5, headers=server.api) as client:
        response = await client.get(f"{server.http}/api/calls/{call_id}")
    return dict(response.json()) if response.status_code == 200 else None


@contextmanager
def limited_server(tmp: Path, *, open_files_limit: int, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """``aybiza serve`` under ``ulimit -n open_files_limit`` (soft and hard: it cannot raise it)."""
    port = free_port()
    log_path = tmp / f"server-{port}.log"
    environment = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "AYBIZA_DATA_DIR": str(tmp / "data"),
        "AYBIZA_AGENTS_DIR": str(agents_dir(tmp)),
        "AYBIZA_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "AYBIZA_CACHE_DIR": str(startup_cache_dir()),
        **(env or {}),
    }
    serve = subprocess.list2cmdline([sys.executable, "-m", "aybiza.cli", "serve", "--host", "127.0.0.1",
                                     "--port", str(port)])
    command = ["sh", "-c", f"ulimit -n {open_files_limit} && exec {serve}"]
    with serving(command, health_url=f"http://127.0.0.1:{port}/health", log_path=log_path, env=environment,
                 cwd=ROOT) as process:
        yield Server(port, process, log_path, tmp / "data")


def wait_until(check: Any, within_s: float, what: str) -> None:
    """Poll ``check()`` until true; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {within_s} s"
        time.sleep(0.1)
