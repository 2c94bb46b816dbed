"""What a dial request may ask for, and the call it creates through Twilio's REST API.

``POST /api/calls`` takes one flat JSON object, ``{"to", "agent", "from"?}``:
``to`` an E.164 number or a ``sip:`` URI, ``from`` an E.164 number (one of
the account's; default ``AYBIZA_OUTBOUND_FROM``), ``agent`` an agent id.
Anything else — another key, a nested value, a longer string — is refused,
so nothing a client sends reaches Twilio unchecked.

The call is created with ``Url`` pointing at our signed ``/twiml`` (which
connects its Media Stream to us once it is answered, like an inbound call),
asynchronous answering-machine detection that waits for the end of a
machine's greeting (``MachineDetection=DetectMessageEnd``, ``AsyncAmd=true``)
and posts its verdict to ``/twilio/amd``; its final status (no answer, busy,
failed, completed) is posted to ``/twilio/status`` (:mod:`aybiza.outbound.status`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..agents import AGENT_ID_PATTERN
from ..transports.twilio_rest import TwilioCallControl

__all__ = ["DialRequest", "TwilioDialer", "MAX_DIAL_BODY_BYTES"]

MAX_DIAL_BODY_BYTES = 4 * 1024
"""A dial request is three short strings."""

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SIP = re.compile(r"^sips?:[A-Za-z0-9._~%+-]{1,64}@[A-Za-z0-9.-]{1,190}(:[0-9]{1,5})?$", re.IGNORECASE)


class DialRequest(BaseModel):
    """A validated dial: whom to call, from which number, with which agent."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    to: str = Field(max_length=256)
    agent: str = Field(max_length=64)
    from_: str | None = Field(default=None, alias="from", max_length=16)

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        if _E164.fullmatch(value) or _SIP.fullmatch(value):
            return value
        raise ValueError("to must be an E.164 number (+14155550123) or a sip: URI (sip:desk@pbx.example.com)")

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        if value is not None and not _E164.fullmatch(value):
            raise ValueError("from must be an E.164 number of the Twilio account (+14155550123)")
        return value

    @field_validator("agent")
    @classmethod
    def _agent(cls, value: str) -> str:
        if not AGENT_ID_PATTERN.fullmatch(value):
            raise ValueError("agent is an agent id (letters, digits, '_' and '-')")
        return value

    @classmethod
    def parse(cls, body: Any) -> DialRequest:
        """The request in ``body`` (decoded JSON); ValueError saying what is wrong."""
        if not isinstance(body, dict) or any(not isinstance(value, str) for value in body.values()):
            raise ValueError("the body is one JSON object of strings: {\"to\", \"agent\", \"from\"?}")
        return cls.model_validate(body)


class TwilioDialer(TwilioCallControl):
    """Creates outbound calls on the account (errors as :class:`~aybiza.errors.ProviderError`)."""

    def __init__(self, *, account_sid: str, auth_token: str, api_url: str, timeout_s: float = 10.0) -> None:
        super().__init__("", account_sid=account_sid, auth_token=auth_token, api_url=api_url, timeout_s=timeout_s)

    @property
    def available(self) -> bool:
        """Whether an account is configured to dial."""
        return bool(self.account_sid and self._auth_token)

    async def dial(self, request: DialRequest, *, from_: str, public_url: str, ring_s: int,
                   amd_timeout_s: int) -> str:
        """Create the call; its SID. Answered, it fetches ``/twiml?agent=...``; AMD posts to ``/twilio/amd``,
        and its end to ``/twilio/status``."""
        base = public_url.rstrip("/")
        async with self._api("call create") as account:
            call = await account.calls.create_async(
                to=request.to, from_=from_, url=f"{base}/twiml?{urlencode({'agent': request.agent})}",
                method="POST", timeout=ring_s, machine_detection="DetectMessageEnd",
                machine_detection_timeout=amd_timeout_s, async_amd="true",
                async_amd_status_callback=f"{base}/twilio/amd", async_amd_status_callback_method="POST",
                status_callback=f"{base}/twilio/status", status_callback_method="POST",
                status_callback_event=["completed"])
        return str(call.sid)
