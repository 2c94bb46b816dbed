"""Where the Twilio auth token comes from.

Production sets ``TWILIO_AUTH_TOKEN``. With none set, the server makes a
random local token once and keeps it in the data directory (mode 0600), so
``make run`` and ``aybiza call`` work on one machine without weakening the
signature check.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .config import Settings

__all__ = ["auth_token_for", "local_token_path"]


def local_token_path(settings: Settings) -> Path:
    """The file holding the machine-local auth token."""
    return settings.data_dir / "twilio_auth_token"


def auth_token_for(settings: Settings, *, create: bool = True) -> str:
    """The configured token, else the local one (created on first use when ``create``)."""
    if settings.twilio_auth_token:
        return settings.twilio_auth_token
    path = local_token_path(settings)
    if path.is_file():
        return path.read_text().strip()
    if not create:
        return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token
