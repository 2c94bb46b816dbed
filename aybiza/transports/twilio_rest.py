"""Call control over Twilio's REST API (the ``twilio`` SDK): hand a live call to a person.

The session speaks the handoff line itself, in the agent's voice; then
:meth:`TwilioCallControl.transfer` updates the live call with TwiML that
dials the target (a number, or a SIP URI). Twilio then leaves the Media
Stream, which ends our side of the call. Credentials are the account SID
and auth token (``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``); the API base
URL (``AYBIZA_TWILIO_API_URL``, default ``https://api.twilio.com``) lets
private gateways and tests (``aybiza.testing.fake_twilio``) stand in.
"""

from __future__ import annotations

import anyio
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from ..errors import CredentialsError, OverloadedError, ProviderError, ProviderTimeout

__all__ = ["TwilioCallControl", "dial_twiml"]


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
        client = Client(self.account_sid, self._auth_token,
                        http_client=AsyncTwilioHttpClient(timeout=self._timeout_s, max_retries=1))
        client.api.base_url = self._api_url
        try:
            # The SDK's async client ignores its own timeout (aiohttp's 5-minute default applies): bound it here.
            with anyio.fail_after(self._timeout_s):
                await client.api.v2010.accounts(self.account_sid).calls(self.call_sid).update_async(
                    twiml=dial_twiml(target))
        except TwilioException as error:
            status = getattr(error, "status", None)
            if status in (401, 403):
                raise CredentialsError(f"Twilio refused the call update: {error}", provider="twilio") from error
            raise ProviderError(f"Twilio call update failed: {error}", provider="twilio") from error
        except TimeoutError as error:
            raise ProviderTimeout(f"Twilio API did not answer within {self._timeout_s:g} s",
                                  provider="twilio") from error
        except OSError as error:
            raise OverloadedError(f"Twilio API unreachable: {error}", provider="twilio") from error
        finally:
            await client.http_client.close()  # type: ignore[union-attr]
