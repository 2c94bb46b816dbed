"""Where the Twilio auth token comes from.

Production sets ``TWILIO_AUTH_TOKEN``. With none set, the server makes a
random local token once and keeps it in the data directory (mode 0600), so
``make run`` and ``aybiza call`` work on one machine without weakening the
signature check. A local token file other users can read is refused
(:func:`aybiza.private.read_secret`): it may have leaked.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from .config import Settings
from .private import read_secret, write_secret

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
        return read_secret(path)
    if not create:
        return ""
    token = secrets.token_hex(16)
    write_secret(path, token)
    return token
