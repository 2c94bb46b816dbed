"""A server of the eval's own, assembled as ``aybiza serve`` assembles it (``aybiza eval`` without ``--server``).

It is a child process (``python -m aybiza.cli serve``) on a free loopback
port with the caller's environment (so ``AYBIZA_STT``/``LLM``/``TTS`` and
the agents directory apply), a fresh data directory, its own Twilio auth
token and API token, and call control pointed at the shipped fake of
Twilio's REST API (running in this process), so transfers really happen
and can be checked.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import child_environment
from ..testing.fake_twilio import FakeTwilio
from ..testing.processes import free_port, serving
from .runner import Target

__all__ = ["local_server"]


@contextmanager
def local_server(agents_dir: Path, *, log_path: Path | None = None, timeout_s: float = 180.0) -> Iterator[Target]:
    """Serve on loopback until the block ends; yields the :class:`Target` to call."""
    auth_token, api_token = secrets.token_hex(16), secrets.token_hex(32)
    account_sid = "AC" + secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="aybiza-eval-") as tmp, FakeTwilio(account_sid, auth_token) as twilio:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # the child is `aybiza serve` as the operator would run it here, with the eval's own settings on top
        env = child_environment({"TWILIO_AUTH_TOKEN": auth_token, "TWILIO_ACCOUNT_SID": account_sid,
                                 "AYBIZA_TWILIO_API_URL": twilio.url, "AYBIZA_API_TOKEN": api_token,
                                 "AYBIZA_DATA_DIR": str(Path(tmp) / "data"),
                                 "AYBIZA_AGENTS_DIR": str(agents_dir.resolve()), "AYBIZA_PUBLIC_URL": url})
        command = [sys.executable, "-m", "aybiza.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        with serving(command, health_url=f"{url}/health", log_path=log_path or Path(tmp) / "server.log", env=env,
                     cwd=Path.cwd(), what="aybiza serve", timeout_s=timeout_s):
            yield Target(url=url, auth_token=auth_token, api_token=api_token, public_url=url,
                         agents_dir=agents_dir, twilio=twilio, account_sid=account_sid)
