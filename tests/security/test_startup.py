"""A careless operator's settings: ``aybiza serve`` refuses to start, and says what to do (issue 15, items 6-8).

On main the API trusted anything that reached 127.0.0.1 and a 0644 token file was used silently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e.conftest import agents_dir
from e2e.server import AUTH_TOKEN, ROOT

from aybiza.testing.processes import free_port


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**{k: v for k, v in os.environ.items() if not k.startswith(("AYBIZA_", "TWILIO_"))},
                   "AYBIZA_DATA_DIR": str(tmp_path / "data"), "AYBIZA_AGENTS_DIR": str(agents_dir(tmp_path)), **env}
    command = [sys.executable, "-m", "aybiza.cli", "serve", "--port", str(free_port()), *args]
    return subprocess.run(command, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "env"), [
    (("--host", "0.0.0.0"), {}),
    (("--host", "127.0.0.1"), {"AYBIZA_PUBLIC_URL": "https://voice.example.com"}),  # behind a proxy or tunnel
])
def test_serving_beyond_loopback_without_an_api_token_is_refused(tmp_path: Path, args: tuple[str, ...],
                                                                 env: dict[str, str]) -> None:
    result = _serve(tmp_path, *args, TWILIO_AUTH_TOKEN=AUTH_TOKEN, **env)
    assert result.returncode == 2
    assert "cannot serve: AYBIZA_API_TOKEN is required" in result.stderr
    assert "openssl rand" in result.stderr


def test_a_local_token_file_other_users_can_read_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    token = data / "twilio_auth_token"
    token.write_text("0123456789abcdef0123456789abcdef")
    token.chmod(0o644)  # left by an older version, or copied carelessly
    result = _serve(tmp_path)
    assert result.returncode == 2
    assert "readable by other users (mode 0644)" in result.stderr and "chmod 600" in result.stderr


def test_browser_calls_behind_a_token_need_the_token(tmp_path: Path) -> None:
    result = _serve(tmp_path, TWILIO_AUTH_TOKEN=AUTH_TOKEN, AYBIZA_BROWSER_CALLS="token")
    assert result.returncode == 2 and "AYBIZA_BROWSER_TOKEN" in result.stderr
