"""Who may see call records in the console: the API's token, as a bearer or as a sign-in cookie.

The console's call pages show what ``/api/calls`` shows (transcripts, tool
calls), so they need what the API needs: ``AYBIZA_API_TOKEN``, or on a
loopback-only server the local token in ``<data dir>/api_token`` — a peer
address is never an identity (SECURITY.md). A browser cannot send a bearer
header when it follows a link, so ``/console/login`` takes the token once,
in a form, and answers with a cookie: ``<expiry>.<HMAC-SHA256(token,
expiry)>``, ``HttpOnly``, ``SameSite=Strict`` (no other site's page can use
it), ``Secure`` behind HTTPS, valid 12 hours. Nothing is stored on the
server: rotating the token signs everyone out.

Wrong sign-in attempts are rate-limited per client address (a guess at a
256-bit token is hopeless anyway; the limit keeps the log quiet and the CPU
ours), and a browser's sign-in must come from this server's own page
(``Sec-Fetch-Site``; ``Origin`` does not serve: under ``Referrer-Policy:
no-referrer`` Chromium sends ``Origin: null`` with a same-origin form).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from html import escape
from urllib.parse import parse_qsl

import anyio
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from ..guard import Guard
from ..session.admission import RateLimit
from .page import CONSOLE_CSP, layout

__all__ = ["COOKIE", "LOGIN_PATH", "ConsoleAccess"]

COOKIE = "aybiza_console"
LOGIN_PATH = "/console/login"
SESSION_S = 12 * 3600
MAX_FORM_BYTES = 1024


class ConsoleAccess:
    """Checks a request's bearer or cookie against the API token; signs browsers in."""

    def __init__(self, guard: Guard, *, secure: bool) -> None:
        self.guard = guard
        self.secure = secure
        self._limit = RateLimit(per_minute=10, burst=5)

    def _mac(self, expiry: str) -> str:
        return hmac.new(self.guard.api_token.encode(), f"console:{expiry}".encode(), hashlib.sha256).hexdigest()

    def cookie_value(self, now: float | None = None) -> str:
        """A fresh cookie value, valid :data:`SESSION_S` from ``now``."""
        expiry = str(int((time.time() if now is None else now) + SESSION_S))
        return f"{expiry}.{self._mac(expiry)}"

    def cookie_ok(self, value: str, now: float | None = None) -> bool:
        """Whether ``value`` is a cookie this server signed and it has not expired."""
        expiry, _, mac = value.partition(".")
        if not (expiry.isascii() and expiry.isdigit() and len(expiry) <= 12 and len(mac) == 64):
            return False
        if int(expiry) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(mac.encode(), self._mac(expiry).encode())

    def allowed(self, request: HTTPConnection) -> bool:
        """The request carries the API's bearer token or a valid sign-in cookie."""
        if self.guard.api_refusal(request) is None:
            return True
        return self.cookie_ok(request.cookies.get(COOKIE, ""))

    def refusal(self, request: HTTPConnection) -> Response | None:
        """None if the request may see call records; else a redirect to sign in (a browser) or a 401."""
        if self.allowed(request):
            return None
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(LOGIN_PATH, status_code=303)
        return PlainTextResponse("401 Unauthorized: send Authorization: Bearer <the API token> or sign in at "
                                 f"{LOGIN_PATH}\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})

    def login_page(self, message: str = "", status: int = 200) -> HTMLResponse:
        """The sign-in form."""
        note = f'<p class="error" id="login-error">{escape(message)}</p>' if message else ""
        where = ("AYBIZA_API_TOKEN" if self.guard.settings.api_token
                 else f"the local API token in {self.guard.settings.data_dir / 'api_token'}")
        body = (f"<header><h1>Sign in to the console</h1></header>{note}"
                f'<form method="post" action="{LOGIN_PATH}" class="login"><label>API token ({escape(where)}) '
                '<input type="password" name="token" autocomplete="current-password" maxlength="512" required>'
                '</label> <button type="submit">Sign in</button></form>')
        return HTMLResponse(layout("Sign in", body), status_code=status,
                            headers={"Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-store"})

    async def login(self, request: Request) -> Response:
        """``POST /console/login``: the token in a urlencoded form -> the cookie and the call list."""
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return PlainTextResponse("403 Forbidden: sign in from this server's page\n", status_code=403)
        client = request.client.host if request.client else "unknown"
        if not self._limit.allow(client):
            return PlainTextResponse("429 Too Many Requests: sign-in attempts\n", status_code=429,
                                     headers={"Retry-After": str(max(1, int(self._limit.retry_after(client))))})
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        length = request.headers.get("content-length", "")
        if kind != "application/x-www-form-urlencoded" or not length.isdigit() or int(length) > MAX_FORM_BYTES:
            return PlainTextResponse("400 Bad Request: a short urlencoded form\n", status_code=400)
        with anyio.move_on_after(5):
            body = await request.body()
        form = dict(parse_qsl(body[:MAX_FORM_BYTES].decode("utf-8", "replace"), max_num_fields=4))
        given = form.get("token", "")
        if not secrets.compare_digest(given.encode(), self.guard.api_token.encode()):
            return self.login_page("That is not the API token.", status=401)
        self._limit.refund(client)  # only wrong tokens count against the address
        response = RedirectResponse("/calls", status_code=303)
        response.set_cookie(COOKIE, self.cookie_value(), max_age=SESSION_S, httponly=True, samesite="strict",
                            secure=self.secure, path="/")
        return response
