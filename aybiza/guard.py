"""Who may use which endpoint: Twilio's signatures, the API's tokens, the Host and Origin a browser sends.

``/twiml`` and the Media Stream upgrade are Twilio's: their
``X-Twilio-Signature`` is checked against the account's auth token and the
public URL (``AYBIZA_PUBLIC_URL``).

Call records hold phone numbers and transcripts: ``/api/calls`` always needs
``Authorization: Bearer <token>`` — ``AYBIZA_API_TOKEN``, or, on a server
reachable on loopback alone, a local token kept in the data directory (mode
0600, like the local Twilio token): whoever may read that file may read the
records. A peer address is never taken for an identity (a local forwarder
or proxy makes anyone look local). A server that listens beyond loopback,
or announces a public URL that is not loopback, refuses to start without
``AYBIZA_API_TOKEN``. ``/metrics`` (``AYBIZA_METRICS_TOKEN`` or the API
token) and the dashboard need the configured token when there is one.

Browsers are steered by pages on other sites: every route a browser may
reach checks ``Host`` against the public URL's host, loopback names and
``AYBIZA_ALLOWED_HOSTS`` (a DNS-rebinding page sends its own name), the
WebRTC offer checks ``Origin``, and :class:`SecureHeaders` puts
``nosniff``, ``DENY`` framing, ``no-referrer`` and (on HTML) a CSP on every
response. The browser demo follows ``AYBIZA_BROWSER_CALLS``: ``local`` (the
default) only while the server is reachable on loopback alone, ``token``
with ``AYBIZA_BROWSER_TOKEN``, ``open`` for anyone (rate limited by the
admission).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from twilio.request_validator import RequestValidator

from .config import Settings
from .errors import ConfigError
from .private import read_secret, write_secret
from .transports.urls import STREAM_PATH, websocket_url
from .twilio_auth import auth_token_for

__all__ = ["DEFAULT_CSP", "Guard", "SecureHeaders", "is_loopback", "local_api_token"]

DEFAULT_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
"""The Content-Security-Policy of an HTML page that sets none of its own."""

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_UNGUARDED_PATHS = frozenset({"/twiml", STREAM_PATH, "/health", "/ready",  # Twilio's (signed), probes'
                              "/twilio/amd"})  # outbound calls' AMD verdict (signed)
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, brackets allowed) is this machine's loopback."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8080`` -> ``::1``), lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def local_api_token(settings: Settings) -> str:
    """The API token of a loopback-only server without ``AYBIZA_API_TOKEN``: made once, kept 0600."""
    path = settings.data_dir / "api_token"
    if path.is_file():
        return read_secret(path)
    # hex, not URL-safe base64: a token that starts with "-" cannot follow ``--api-token`` on a command line
    token = secrets.token_hex(32)
    write_secret(path, token)
    return token


class Guard:
    """Signature, token, Host and Origin checks for one server's settings.

    Raises ConfigError when the settings expose call records without a token.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth_token = auth_token_for(settings)
        self._validator = RequestValidator(self.auth_token)
        self.exposed = not is_loopback(settings.host) or not is_loopback(urlsplit(settings.base_url).hostname or "")
        if self.exposed and not settings.api_token:
            where = settings.host if not is_loopback(settings.host) else settings.base_url
            raise ConfigError(
                f"AYBIZA_API_TOKEN is required: this server is reachable beyond loopback ({where}) and call records "
                "hold phone numbers and transcripts. Set AYBIZA_API_TOKEN to a long random secret "
                "(e.g. `openssl rand -hex 32`), or listen on 127.0.0.1 with a loopback public URL.")
        if settings.browser_calls == "token" and not settings.browser_token:
            raise ConfigError("AYBIZA_BROWSER_CALLS=token needs AYBIZA_BROWSER_TOKEN (a long random secret)")
        self.api_token = settings.api_token or local_api_token(settings)
        self.metrics_token = settings.metrics_token or settings.api_token
        extra = {name.strip().lower() for name in settings.allowed_hosts.split(",") if name.strip()}
        self.any_host = "*" in extra
        public = urlsplit(settings.base_url).hostname or ""
        self.hosts = frozenset({public.lower(), *extra} - {"", "*"})
        origin = urlsplit(settings.base_url)
        self.public_origin = f"{origin.scheme}://{origin.netloc}".lower()

    # -- Twilio ---------------------------------------------------------------------------------

    def public_url(self, path: str, *, websocket: bool = False) -> str:
        """Absolute public URL of ``path`` (ws/wss for WebSocket paths)."""
        base = self.settings.base_url
        return (websocket_url(base) if websocket else base) + path

    def signature_ok(self, url: str, params: dict[str, str], signature: str) -> bool:
        """Check ``X-Twilio-Signature`` unless the check is disabled for local use."""
        if not self.settings.twilio_validate:
            return True
        return bool(signature) and bool(self._validator.validate(url, params, signature))

    # -- tokens ---------------------------------------------------------------------------------

    def api_refusal(self, request: HTTPConnection) -> Response | None:
        """None if the client may read call records (its bearer token); else the 401 to answer."""
        return _bearer_refusal(request, self.api_token, "AYBIZA_API_TOKEN" if self.settings.api_token
                               else f"the local API token in {self.settings.data_dir / 'api_token'}")

    def metrics_refusal(self, request: HTTPConnection) -> Response | None:
        """None if the client may read ``/metrics``: open without a configured token, else its bearer."""
        if not self.metrics_token:
            return None
        return _bearer_refusal(request, self.metrics_token, "AYBIZA_METRICS_TOKEN or AYBIZA_API_TOKEN")

    def dashboard_refusal(self, request: HTTPConnection) -> Response | None:
        """None if the client may see the dashboard: open without a configured API token, else its bearer."""
        if not self.settings.api_token:
            return None
        return _bearer_refusal(request, self.settings.api_token, "AYBIZA_API_TOKEN")

    # -- browsers -------------------------------------------------------------------------------

    def host_allowed(self, host_header: str) -> bool:
        """Whether a request naming ``host_header`` is for this server (not a DNS-rebinding page)."""
        if self.any_host:
            return True
        name = _host_name(host_header)
        return bool(name) and (name in self.hosts or is_loopback(name))

    def browser_refusal(self, request: HTTPConnection) -> Response | None:
        """None if browser calls are open to this request (``AYBIZA_BROWSER_CALLS``); else the 401/403."""
        mode = self.settings.browser_calls
        if mode == "open":
            return None
        if mode == "token":
            return _bearer_refusal(request, self.settings.browser_token, "AYBIZA_BROWSER_TOKEN (open the page "
                                   "as /#token=<token>)")
        if self.exposed:
            return PlainTextResponse("403 Forbidden: browser calls are off on a server reachable beyond loopback; "
                                     "set AYBIZA_BROWSER_CALLS=token (with AYBIZA_BROWSER_TOKEN) or open\n",
                                     status_code=403)
        return None

    def origin_refusal(self, request: HTTPConnection) -> Response | None:
        """None unless a browser sent the request from another site's page (its ``Origin``)."""
        origin = request.headers.get("origin")
        if origin is None:
            return None  # not a browser's cross-site request: curl, the test caller
        origin = origin.lower().rstrip("/")
        own = {self.public_origin}
        host = request.headers.get("host", "")
        if host and self.host_allowed(host):
            own |= {f"http://{host.lower()}", f"https://{host.lower()}"}
        if origin in own:
            return None
        return PlainTextResponse("403 Forbidden: the offer comes from another site's page\n", status_code=403)

    def guards_host(self, path: str) -> bool:
        """Whether ``path`` checks ``Host`` (every route but Twilio's and the probes')."""
        return path not in _UNGUARDED_PATHS


def _bearer_refusal(request: HTTPConnection, token: str, name: str) -> Response | None:
    if secrets.compare_digest(request.headers.get("authorization", "").encode(), f"Bearer {token}".encode()):
        return None
    return PlainTextResponse(f"401 Unauthorized: send Authorization: Bearer <{name}>\n", status_code=401,
                             headers={"WWW-Authenticate": "Bearer"})


class SecureHeaders:
    """ASGI middleware: refuse a foreign ``Host`` (400); put security headers on every HTTP response.

    Every response gets ``X-Content-Type-Options: nosniff``, ``X-Frame-Options:
    DENY`` and ``Referrer-Policy: no-referrer``; HTML without its own policy gets
    :data:`DEFAULT_CSP`; ``/api/`` responses are never cached.
    """

    def __init__(self, app: ASGIApp, guard: Guard, *, on_refusal: Callable[[], None] | None = None) -> None:
        self.app = app
        self.guard = guard
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if self.guard.guards_host(path) and not self.guard.host_allowed(Headers(scope=scope).get("host", "")):
            if self.on_refusal is not None:
                self.on_refusal()
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "Host not allowed"})
                return
            response = PlainTextResponse("400 Bad Request: Host is not this server's (see AYBIZA_PUBLIC_URL and "
                                         "AYBIZA_ALLOWED_HOSTS)\n", status_code=400)
            await response(scope, receive, self._with_headers(send, path))
            return
        await self.app(scope, receive, self._with_headers(send, path) if scope["type"] == "http" else send)

    @staticmethod
    def _with_headers(send: Send, path: str) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [header for header in _SECURITY_HEADERS if header[0] not in names]
                content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/html") and b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", DEFAULT_CSP.encode()))
                if path.startswith("/api/") and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        return sending
