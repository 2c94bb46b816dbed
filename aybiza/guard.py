"""Who may use which endpoint: Twilio's request signatures and the API's bearer token.

``/twiml`` and the Media Stream upgrade are Twilio's: their
``X-Twilio-Signature`` is checked against the account's auth token and the
public URL (``AYBIZA_PUBLIC_URL``). Call records and the dashboard hold phone
numbers and transcripts: they need ``Authorization: Bearer
<AYBIZA_API_TOKEN>``, or, with no token set, a client on this machine.
"""

from __future__ import annotations

import secrets

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, Response
from twilio.request_validator import RequestValidator

from .config import Settings
from .twilio_auth import auth_token_for

__all__ = ["Guard"]


class Guard:
    """Signature and token checks for one server's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth_token = auth_token_for(settings)
        self._validator = RequestValidator(self.auth_token)

    def public_url(self, path: str, *, websocket: bool = False) -> str:
        """Absolute public URL of ``path`` (ws/wss for WebSocket paths)."""
        base = self.settings.base_url
        if websocket:
            scheme, rest = base.split("://", 1)
            base = ("wss://" if scheme == "https" else "ws://") + rest
        return base + path

    def signature_ok(self, url: str, params: dict[str, str], signature: str) -> bool:
        """Check ``X-Twilio-Signature`` unless the check is disabled for local use."""
        if not self.settings.twilio_validate:
            return True
        return bool(signature) and bool(self._validator.validate(url, params, signature))

    def api_refusal(self, request: HTTPConnection) -> Response | None:
        """None if the client may read call records; else the 401/403 to answer."""
        token = self.settings.api_token
        if token:
            if secrets.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
                return None
            return PlainTextResponse("401 Unauthorized: send Authorization: Bearer <AYBIZA_API_TOKEN>\n",
                                     status_code=401, headers={"WWW-Authenticate": "Bearer"})
        client = request.client.host if request.client else ""
        if client in ("127.0.0.1", "::1", "localhost"):
            return None
        return PlainTextResponse("403 Forbidden: set AYBIZA_API_TOKEN to use the API from other hosts\n",
                                 status_code=403)
