"""A fake of Twilio's REST API: the call resource, enough to redirect a live call and ring a second leg.

It answers what :class:`~aybiza.transports.twilio_rest.TwilioCallControl`
sends through the real ``twilio`` SDK (``AYBIZA_TWILIO_API_URL=fake.url``):

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with a form
  (``Twiml=<Response>...``, ``Url=...``, ``Status=completed``): the update
  is recorded in :attr:`FakeTwilio.updates` and the call resource comes back
  as JSON, like Twilio's;
* ``GET`` of the same path: the call resource (``to`` is our number for the
  live inbound calls, :attr:`FakeTwilio.our_number`);
* ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (``To``, ``From``,
  ``Twiml``, ``Timeout``): a new outbound call, recorded in
  :attr:`FakeTwilio.created`. It rings for ``answer_after_s``, then does what
  :attr:`FakeTwilio.answers` says for its number (``answer`` by default,
  ``busy``, ``no-answer``): its ``status`` moves ``queued`` → ``ringing`` →
  ``in-progress`` (or ``busy`` / ``no-answer``), and ``Status=canceled`` or
  ``completed`` ends it.

**Outbound calls with answering-machine detection.** A new call with
``Url`` (our ``/twiml``) to a number in :attr:`FakeTwilio.callees` is
answered as Twilio would: after ``answer_after_s`` the fake posts the
signed voice webhook to ``Url`` (``Direction=outbound-api``), opens the
Media Stream the TwiML names as a Twilio-like caller
(:func:`~aybiza.testing.caller.place_call`), plays the :class:`Callee`'s
script (a machine: its greeting, then a beep), posts the signed
``AsyncAmdStatusCallback`` with its ``AnsweredBy`` (after the greeting and
the beep, as ``DetectMessageEnd`` does), and goes on with the rest of the
script. What the stream played to the callee is kept in
:attr:`FakeTwilio.streams` (a :class:`~aybiza.testing.caller.CallReport`
by CallSid): what a machine recorded. The AMD parameters the call was
created with are in its :attr:`CreatedCall.form`.

**Status callbacks.** A new call created with a ``StatusCallback`` gets
its final status posted there, signed, as Twilio does for the ``completed``
event: ``busy``, ``no-answer`` or ``failed`` (what :attr:`FakeTwilio.answers`
says for its number) after ``answer_after_s``; ``completed`` (with
``CallDuration``) once an answered call's stream ended. Each post is in
:attr:`FakeTwilio.status_posts` as ``(CallSid, CallStatus, HTTP status)``.

**Conferences.** A call whose TwiML (an update, or an answered new call's)
has ``<Dial><Conference>room</Conference></Dial>`` joins ``room``:
:attr:`FakeTwilio.conferences` lists each room's participants in the order
they joined, and :attr:`FakeTwilio.events` logs every step (``create``,
``answered``, ``update``, ``join``, ``end``) in order, so a test can check
the legs of a warm transfer came in the right order.

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

import asyncio
import base64
import binascii
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import numpy as np
from aiohttp import web
from twilio.request_validator import RequestValidator

from ..codecs import lin2ulaw
from ._server import LoopbackServer
from .caller import CallReport, Do, Press, Say, Wait, place_call

__all__ = ["Callee", "CallUpdate", "CreatedCall", "FakeTwilio", "beep", "twilio_sid"]

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


@dataclass(slots=True)
class CreatedCall:
    """A call made through ``POST .../Calls.json``: to whom, from which number, with which TwiML."""

    sid: str
    to: str
    from_: str
    twiml: str
    ring_s: int | None
    created_at: float
    ended: str = ""  # "canceled" / "completed" once hung up through the API
    joined: bool = False
    form: dict[str, str] = field(default_factory=dict)  # everything the create request carried (AMD parameters)


def beep(seconds: float = 0.5, hz: float = 1000.0) -> bytes:
    """An answering machine's beep: a sine tone as 8 kHz μ-law."""
    t = np.arange(int(8000 * seconds)) / 8000
    return lin2ulaw((np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16).tobytes())


@dataclass(frozen=True)
class Callee:
    """Who answers an outbound call: Twilio's AMD verdict for them, and what the line says.

    ``before_verdict`` plays until AMD decides (a machine: its greeting and a beep; a
    person: "Hello?" and a second of silence), then the verdict is posted, then
    ``after_verdict`` plays (a person's questions; a machine: listening until we hang up).
    """

    answered_by: str
    before_verdict: Sequence[Say | Wait | Press] = ()
    after_verdict: Sequence[Say | Wait | Press] = ()
    hangup_after: float = 1.0
    call_timeout: float = 120.0


def _conference(twiml: str) -> str | None:
    """The room a TwiML document dials into, if any."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError:
        return None
    room = root.find("./Dial/Conference")
    return None if room is None else (room.text or "").strip()


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
        our_number: str = "+18005550100",
        answers: Mapping[str, str] | None = None,
        answer_after_s: float = 0.3,
    ) -> None:
        super().__init__(host)
        self.account_sid = account_sid or twilio_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.live: set[str] | None = None if calls is None else set(calls)
        self.ended: set[str] = set()
        self.updates: list[CallUpdate] = []
        self.refused = 0  # requests answered 401
        self.our_number = our_number
        self.answers: dict[str, str] = dict(answers or {})
        self.answer_after_s = answer_after_s
        self.created: list[CreatedCall] = []
        self.conferences: dict[str, list[str]] = {}  # room -> call SIDs, in the order they joined
        self.events: list[tuple[str, str, str]] = []  # (what, call SID, detail), in order
        self.callees: dict[str, Callee] = {}  # number -> who answers an outbound call with a Url
        self.streams: dict[str, CallReport] = {}  # call SID -> what its Media Stream played (what was recorded)
        self.errors: list[str] = []  # what went wrong answering an outbound call (webhook refused ...)
        self.amd_posted_at: dict[str, float] = {}  # call SID -> monotonic time its AMD verdict was posted
        self.status_posts: list[tuple[str, str, int]] = []  # (call SID, CallStatus, HTTP status) posted
        self._answering: set[asyncio.Task[None]] = set()

    def end_call(self, call_sid: str) -> None:
        """The call is over (the caller hung up): it can no longer be redirected."""
        self.ended.add(call_sid)
        if self.live is not None:
            self.live.discard(call_sid)

    def make_app(self) -> web.Application:
        app = web.Application()
        path = f"/{API_VERSION}/Accounts/{{account}}/Calls/{{call}}.json"
        app.router.add_post(f"/{API_VERSION}/Accounts/{{account}}/Calls.json", self._create)
        app.router.add_post(path, self._update)
        app.router.add_get(path, self._fetch)
        return app

    def leg(self, sid: str) -> CreatedCall | None:
        """The call made through the API with this SID."""
        return next((call for call in self.created if call.sid == sid), None)

    def _status(self, leg: CreatedCall) -> str:
        """Where a created call is now (joining its conference once answered)."""
        if leg.ended:
            return leg.ended
        if time.monotonic() - leg.created_at < self.answer_after_s:
            return "ringing"
        behaviour = self.answers.get(leg.to, "answer")
        if behaviour != "answer":
            return behaviour
        if not leg.joined:
            leg.joined = True
            self.events.append(("answered", leg.sid, leg.to))
            room = _conference(leg.twiml)
            if room is not None:
                self._join(room, leg.sid)
        return "in-progress"

    def _join(self, room: str, call: str) -> None:
        self.conferences.setdefault(room, []).append(call)
        self.events.append(("join", call, room))

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
        account, call = request.match_info["account"], request.match_info.get("call", "")
        if account == self.account_sid and (not call or self.leg(call) is not None):
            return None
        known = call in self.ended or self.live is None or call in self.live
        if account != self.account_sid or not known:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return None

    async def _create(self, request: web.Request) -> web.Response:
        refusal = self._check(request)
        if refusal is not None:
            return refusal
        form = {key: str(value) for key, value in (await request.post()).items()}
        if not form.get("To") or not form.get("From") or not (form.get("Twiml") or form.get("Url")):
            return _error(400, 21201, "To, From and Twiml (or Url) are required")
        timeout = form.get("Timeout")
        leg = CreatedCall(twilio_sid("CA"), form["To"], form["From"], form.get("Twiml", ""),
                          int(timeout) if timeout else None, time.monotonic(), form=form)
        self.created.append(leg)
        self.events.append(("create", leg.sid, leg.to))
        callee = self.callees.get(leg.to)
        if form.get("Url") and callee is not None:
            self._spawn(self._answer(leg, callee))
        elif self.answers.get(leg.to) in ("busy", "no-answer", "failed") and form.get("StatusCallback"):
            self._spawn(self._unanswered(leg))
        return web.json_response(self._resource(leg.sid), status=201)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _update(self, request: web.Request) -> web.Response:
        refusal = self._check(request)
        if refusal is not None:
            return refusal
        call = request.match_info["call"]
        form = {key: str(value) for key, value in (await request.post()).items()}
        leg = self.leg(call)
        if leg is not None:  # a call we made: it can be hung up
            if form.get("Status") in ("canceled", "completed") and not leg.ended:
                leg.ended = form["Status"]
                self.events.append(("end", call, leg.ended))
            return web.json_response(self._resource(call))
        if call in self.ended:
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        self.updates.append(CallUpdate(self.account_sid, call, form))
        self.events.append(("update", call, form.get("Twiml", form.get("Status", ""))))
        room = _conference(form.get("Twiml", ""))
        if room is not None:
            self._join(room, call)
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
        leg = self.leg(call)
        if leg is not None:
            status, direction, to, from_ = self._status(leg), "outbound-api", leg.to, leg.from_
        else:
            status = "completed" if call in self.ended else "in-progress"
            direction, to, from_ = "inbound", self.our_number, "+15555550123"
        return {
            "sid": call,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "status": status,
            "direction": direction,
            "to": to,
            "from": from_,
            "date_created": now,
            "date_updated": now,
            "start_time": now,
            "end_time": now if status in ("completed", "canceled") else None,
            "uri": f"{uri}.json",
            "subresource_uris": {"recordings": f"{uri}/Recordings.json", "streams": f"{uri}/Streams.json"},
        }

    # -- answering an outbound call ----------------------------------------------------

    async def _answer(self, leg: CreatedCall, callee: Callee) -> None:
        """Ring, then do what Twilio does for an answered call with async AMD; the stream's report is kept."""
        await asyncio.sleep(self.answer_after_s)
        self.events.append(("answered", leg.sid, leg.to))
        try:
            report = await place_call("", [*callee.before_verdict, Do(lambda: self._post_amd(leg, callee)),
                                           *callee.after_verdict],
                                      auth_token=self.auth_token, call_sid=leg.sid, account_sid=self.account_sid,
                                      announce=lambda: self._announce(leg), hangup_after=callee.hangup_after,
                                      call_timeout=callee.call_timeout)
        except Exception as error:  # the test reads errors: a fake must not die silently
            self.errors.append(f"{leg.sid}: {type(error).__name__}: {error}")
            return
        finally:
            leg.ended = leg.ended or "completed"
        self.streams[leg.sid] = report
        self.events.append(("stream_end", leg.sid, f"{report.close_code} {report.close_reason}".strip()))
        await self._post_status(leg, "completed", CallDuration=str(int(time.monotonic() - leg.created_at)))

    async def _unanswered(self, leg: CreatedCall) -> None:
        """Ring out as the number's behaviour says (busy, no-answer, failed), then post that final status."""
        await asyncio.sleep(self.answer_after_s)
        status = self.answers[leg.to]
        leg.ended = leg.ended or status
        extra = {"SipResponseCode": "486" if status == "busy" else "404"} if status != "no-answer" else {}
        await self._post_status(leg, status, **extra)

    async def _post_status(self, leg: CreatedCall, status: str, **extra: str) -> None:
        """The ``StatusCallback`` of the ``completed`` event (the call's final status), if the call asked for one."""
        url = leg.form.get("StatusCallback", "")
        if not url:
            return
        params = {"CallSid": leg.sid, "AccountSid": self.account_sid, "From": leg.from_, "To": leg.to,
                  "CallStatus": status, "Direction": "outbound-api", "ApiVersion": API_VERSION,
                  "CallbackSource": "call-progress-events", "SequenceNumber": "0", **extra}
        try:
            response = await self._signed_post(url, params)
        except httpx.HTTPError as error:
            self.errors.append(f"{leg.sid}: the status callback failed: {error}")
            return
        self.status_posts.append((leg.sid, status, response.status_code))
        self.events.append(("status", leg.sid, f"{status} {response.status_code}"))

    async def _signed_post(self, url: str, params: dict[str, str]) -> httpx.Response:
        """POST ``params`` to ``url`` with ``X-Twilio-Signature`` as Twilio computes it (URL + sorted params)."""
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(url, data=params, headers={"X-Twilio-Signature": signature})

    async def _announce(self, leg: CreatedCall) -> tuple[str, dict[str, str]]:
        """The answered call's voice webhook to its ``Url``; the Stream URL and parameters of the TwiML."""
        params = {"CallSid": leg.sid, "AccountSid": self.account_sid, "From": leg.from_, "To": leg.to,
                  "CallStatus": "in-progress", "Direction": "outbound-api", "ApiVersion": API_VERSION}
        response = await self._signed_post(leg.form["Url"], params)
        if response.status_code != 200:
            raise RuntimeError(f"the voice webhook answered {response.status_code}: {response.text.strip()}")
        stream = ET.fromstring(response.text).find("./Connect/Stream")
        if stream is None:
            raise RuntimeError("the TwiML has no <Connect><Stream>")
        return stream.get("url", ""), {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}

    async def _post_amd(self, leg: CreatedCall, callee: Callee) -> None:
        """The ``AsyncAmdStatusCallback``, if the call asked for one."""
        url = leg.form.get("AsyncAmdStatusCallback", "")
        if leg.form.get("AsyncAmd") != "true" or not url:
            return
        params = {"CallSid": leg.sid, "AccountSid": self.account_sid, "AnsweredBy": callee.answered_by,
                  "MachineDetectionDuration": str(int((time.monotonic() - leg.created_at) * 1000))}
        self.amd_posted_at[leg.sid] = time.monotonic()
        response = await self._signed_post(url, params)
        self.events.append(("amd", leg.sid, f"{callee.answered_by} {response.status_code}"))
        if response.status_code >= 300:
            self.errors.append(f"{leg.sid}: the AMD callback answered {response.status_code}: {response.text}")
