"""Call control over Twilio's REST API (the ``twilio`` SDK): transfers, a second leg, a conference.

Credentials are the account SID and auth token (``TWILIO_ACCOUNT_SID``,
``TWILIO_AUTH_TOKEN``); the API base URL (``AYBIZA_TWILIO_API_URL``, default
``https://api.twilio.com``) lets private gateways and tests
(``aybiza.testing.fake_twilio``) stand in. Each operation opens and closes
its own SDK client: they are rare (a transfer; a warm transfer's few polls),
and nothing is left open when a call ends mid-operation.

* **Cold transfer** — :meth:`~TwilioCallControl.transfer` updates the live
  call with TwiML that dials the target (``<Dial><Number>`` or
  ``<Dial><Sip>``). Twilio then leaves the Media Stream, which ends our side
  of the call. The session has the handoff line spoken (and heard) first.
* **Warm transfer** — the pieces the session's warm transfer is made of
  (:mod:`aybiza.session.actions`): :meth:`~TwilioCallControl.call_leg` rings
  the colleague on a second call whose TwiML says the brief (``<Say>``) and then
  joins a conference named after the call (:func:`conference_twiml`, it
  starts the conference); :meth:`~TwilioCallControl.leg_status` follows that
  leg (``queued``, ``ringing``, ``in-progress``; ``busy``, ``no-answer``,
  ``failed``, ``canceled``, ``completed``: Twilio's call statuses); once it answered,
  :meth:`~TwilioCallControl.join_conference` moves the caller into the same
  conference (on hold music until the colleague, done with the brief, joins);
  a leg that never answers is ended with :meth:`~TwilioCallControl.end_leg`.
  The second leg calls from the number the caller called
  (:meth:`~TwilioCallControl.our_number`).

Every failure is a :class:`~aybiza.errors.ProviderError` (credentials refused:
:class:`~aybiza.errors.CredentialsError`; unreachable: retryable).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from twilio.base.exceptions import TwilioException
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from ..errors import CredentialsError, OverloadedError, ProviderError, ProviderTimeout

__all__ = ["TwilioCallControl", "conference_twiml", "dial_twiml"]


def dial_twiml(target: str) -> str:
    """TwiML that dials ``target``: ``<Dial><Sip>`` for a SIP URI, ``<Dial>number`` otherwise."""
    response = VoiceResponse()
    dial = Dial()
    if target.lower().startswith(("sip:", "sips:")):
        dial.sip(target)
    else:
        dial.number(target)
    response.append(dial)
    return str(response)


def conference_twiml(room: str, *, starts: bool, ends: bool, say: str = "") -> str:
    """TwiML that (after ``say``) joins conference ``room``; ``starts`` it or waits on hold music until it starts."""
    response = VoiceResponse()
    if say:
        response.say(say)
    dial = Dial()
    dial.conference(room, start_conference_on_enter=starts, end_conference_on_exit=ends, beep=False)
    response.append(dial)
    return str(response)


class TwilioCallControl:
    """One live call's control at Twilio."""

    def __init__(self, call_sid: str, *, account_sid: str, auth_token: str, api_url: str,
                 timeout_s: float = 5.0) -> None:
        self.call_sid = call_sid
        self.account_sid = account_sid
        self._auth_token = auth_token
        self._api_url = api_url.rstrip("/")
        self._timeout_s = timeout_s

    @property
    def available(self) -> bool:
        """Whether an account is configured to act on calls."""
        return bool(self.account_sid and self._auth_token and self.call_sid)

    async def transfer(self, target: str, *, announce: str = "") -> None:
        """Redirect the live call to dial ``target``; ProviderError when Twilio refuses or cannot be reached."""
        await self.redirect(dial_twiml(target))

    async def redirect(self, twiml: str) -> None:
        """Replace the live call's TwiML (this ends its Media Stream)."""
        async with self._api("call update") as account:
            await account.calls(self.call_sid).update_async(twiml=twiml)

    async def our_number(self) -> str:
        """The number on our side of the call: the one called (inbound), or the one calling (outbound)."""
        async with self._api("call fetch") as account:
            call = await account.calls(self.call_sid).fetch_async()
        return str((call.to if call.direction == "inbound" else call._from) or "")

    async def call_leg(self, to: str, *, brief: str, room: str, ring_s: float) -> str:
        """Ring ``to`` from our number; once answered it hears ``brief``, then starts conference ``room``. Its SID."""
        from_ = await self.our_number()
        twiml = conference_twiml(room, starts=True, ends=True, say=brief)
        async with self._api("call create") as account:
            call = await account.calls.create_async(to=to, from_=from_, twiml=twiml, timeout=round(ring_s))
        return str(call.sid)

    async def join_conference(self, room: str) -> None:
        """Move the live call into conference ``room``: hold music until the colleague starts it."""
        await self.redirect(conference_twiml(room, starts=False, ends=True))

    async def leg_status(self, sid: str) -> str:
        """Where the call ``sid`` is (``queued``, ``ringing``, ``in-progress``, ``busy``, ``no-answer`` ...)."""
        async with self._api("call fetch") as account:
            call = await account.calls(sid).fetch_async()
        return str(call.status)

    async def end_leg(self, sid: str, *, ringing: bool = True) -> None:
        """Hang up the call ``sid`` (``canceled`` while it rings, ``completed`` once answered)."""
        async with self._api("call update") as account:
            await account.calls(sid).update_async(status="canceled" if ringing else "completed")

    @asynccontextmanager
    async def _api(self, what: str) -> AsyncIterator[Any]:
        """The account's API, with Twilio's and the network's failures mapped onto ProviderErrors."""
        from twilio.http.async_http_client import AsyncTwilioHttpClient  # aiohttp: 0.2 s of import, rarely used

        client = Client(self.account_sid, self._auth_token,
                        http_client=AsyncTwilioHttpClient(timeout=self._timeout_s, max_retries=1))
        client.api.base_url = self._api_url
        try:
            # The SDK's async client ignores its own timeout (aiohttp's 5-minute default applies): bound it here.
            with anyio.fail_after(self._timeout_s):
                yield client.api.v2010.accounts(self.account_sid)
        except TwilioException as error:
            status = getattr(error, "status", None)
            if status in (401, 403):
                raise CredentialsError(f"Twilio refused the {what}: {error}", provider="twilio") from error
            raise ProviderError(f"Twilio {what} failed: {error}", provider="twilio") from error
        except TimeoutError as error:
            raise ProviderTimeout(f"Twilio API did not answer within {self._timeout_s:g} s",
                                  provider="twilio") from error
        except OSError as error:
            raise OverloadedError(f"Twilio API unreachable: {error}", provider="twilio") from error
        finally:
            with anyio.CancelScope(shield=True):
                await client.http_client.close()  # type: ignore[union-attr]
