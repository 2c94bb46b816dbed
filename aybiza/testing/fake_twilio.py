"""A fake of Twilio's REST API: the call resource, enough to redirect a live call.

It answers what :class:`~aybiza.transports.twilio_rest.TwilioCallControl`
sends through the real ``twilio`` SDK (``AYBIZA_TWILIO_API_URL=fake.url``):

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with a form
  (``Twiml=<Response>...``, ``Url=...``, ``Status=completed``): the update
  is recorded in :attr:`FakeTwilio.updates` and the call resource comes back
  as JSON, like Twilio's;
* ``GET`` of the same path: the call resource.

Like Twilio, every request needs HTTP Basic auth with the account SID as the
user and the auth token as the password: anything else is answered 401 with
Twilio's error JSON (``{"code": 20003, "message": "Authenticate", ...}``).
A call the fake does not know is a 404 (``20404``); a call that has ended
cannot be redirected (400, ``21220``). ``calls=None`` takes any call SID as
a live call.

    with FakeTwilio(account_sid, auth_token) as twilio:
        control = TwilioCallControl("CA...", account_sid=account_sid, auth_token=auth_token, api_url=twilio.url)
        await control.transfer("+14155550100")
        assert "<Dial><Number>+14155550100</Number></Dial>" in twilio.updates[0].twiml
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from ._server import LoopbackServer

__all__ = ["CallUpdate", "FakeTwilio", "twilio_sid"]

API_VERSION = "2010-04-01"


def twilio_sid(prefix: str) -> str:
    """A SID in Twilio's shape: two letters and 32 hex digits (``AC…``, ``CA…``)."""
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class CallUpdate:
    """One accepted ``POST`` to a call: which call, and the form it carried."""

    account_sid: str
    call_sid: str
    form: dict[str, str] = field(default_factory=dict)

    @property
    def twiml(self) -> str:
        """The ``Twiml`` parameter (empty when the update sent a ``Url`` or a ``Status``)."""
        return self.form.get("Twiml", "")


def _error(status: int, code: int, message: str) -> web.Response:
    """Twilio's error body: ``code``, ``message``, ``more_info``, ``status``."""
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}
    headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


class FakeTwilio(LoopbackServer):
    """Twilio's call resource on a free loopback port (``.url`` is the API base URL)."""

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        calls: Iterable[str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host)
        self.account_sid = account_sid or twilio_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.live: set[str] | None = None if calls is None else set(calls)
        self.ended: set[str] = set()
        self.updates: list[CallUpdate] = []
        self.refused = 0  # requests answered 401

    def end_call(self, call_sid: str) -> None:
        """The call is over (the caller hung up): it can no longer be redirected."""
        self.ended.add(call_sid)
        if self.live is not None:
            self.live.discard(call_sid)

    def make_app(self) -> web.Application:
        app = web.Application()
        path = f"/{API_VERSION}/Accounts/{{account}}/Calls/{{call}}.json"
        app.router.add_post(path, self._update)
        app.router.add_get(path, self._fetch)
        return app

    # -- handlers ---------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(password, self.auth_token)

    def _check(self, request: web.Request) -> web.Response | None:
        """The error Twilio would answer for this request, or None when it may go on."""
        if not self._authorised(request):
            self.refused += 1
            return _error(401, 20003, "Authenticate")
        account, call = request.match_info["account"], request.match_info["call"]
        known = call in self.ended or self.live is None or call in self.live
        if account != self.account_sid or not known:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return None

    async def _update(self, request: web.Request) -> web.Response:
        refusal = self._check(request)
        if refusal is not None:
            return refusal
        call = request.match_info["call"]
        if call in self.ended:
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.updates.append(CallUpdate(self.account_sid, call, form))
        if form.get("Status") == "completed":
            self.end_call(call)
        return web.json_response(self._resource(call))

    async def _fetch(self, request: web.Request) -> web.Response:
        refusal = self._check(request)
        if refusal is not None:
            return refusal
        return web.json_response(self._resource(request.match_info["call"]))

    def _resource(self, call: str) -> dict[str, Any]:
        """The call resource as Twilio's API returns it (the fields the SDK reads)."""
        now = format_datetime(datetime.now(UTC), usegmt=True)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call}"
        return {
            "sid": call,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "status": "completed" if call in self.ended else "in-progress",
            "direction": "inbound",
            "date_created": now,
            "date_updated": now,
            "start_time": now,
            "end_time": now if call in self.ended else None,
            "uri": f"{uri}.json",
            "subresource_uris": {"recordings": f"{uri}/Recordings.json", "streams": f"{uri}/Streams.json"},
        }
