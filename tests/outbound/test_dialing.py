"""Dial requests are checked before Twilio hears of them; the call is created with async AMD (fake Twilio API)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from aybiza.errors import CredentialsError
from aybiza.outbound.dialing import DialRequest, TwilioDialer
from aybiza.testing.fake_twilio import FakeTwilio


@pytest.mark.parametrize("body", [
    {"to": "+14155550100", "agent": "default"},
    {"to": "sip:desk@pbx.example.com", "agent": "sales-1", "from": "+18005550100"},
    {"to": "sips:desk@pbx.example.com:5061", "agent": "default"},
])
def test_sound_requests_pass(body: dict[str, str]) -> None:
    request = DialRequest.parse(body)
    assert (request.to, request.agent, request.from_) == (body["to"], body["agent"], body.get("from"))


@pytest.mark.parametrize("body", [
    {"to": "911", "agent": "default"},  # not E.164
    {"to": "+1 415 555 0100", "agent": "default"},
    {"to": "tel:+14155550100", "agent": "default"},
    {"to": "sip:desk@pbx.example.com;transport=tcp", "agent": "default"},
    {"to": "sip:" + "a" * 65 + "@pbx.example.com", "agent": "default"},
    {"to": "+14155550100", "agent": "../etc"},
    {"to": "+14155550100", "agent": "default", "from": "sip:me@example.com"},
    {"to": "+14155550100", "agent": "default", "url": "https://evil.example.com/twiml"},  # no extra keys
    {"to": "+14155550100"},
    {"to": ["+14155550100"], "agent": "default"},
    ["+14155550100", "default"],
])
def test_anything_else_is_refused(body: Any) -> None:
    with pytest.raises(ValueError):
        DialRequest.parse(body)


@pytest.mark.anyio
async def test_the_call_is_created_with_async_amd_and_our_signed_webhooks() -> None:
    with FakeTwilio() as twilio:
        dialer = TwilioDialer(account_sid=twilio.account_sid, auth_token=twilio.auth_token, api_url=twilio.url)
        sid = await dialer.dial(DialRequest.parse({"to": "+14155550100", "agent": "sales"}), from_="+18005550100",
                                public_url="https://voice.example.com/", ring_s=25, amd_timeout_s=30)
        [leg] = twilio.created
        assert leg.sid == sid and (leg.to, leg.from_, leg.ring_s) == ("+14155550100", "+18005550100", 25)
        url = urlsplit(leg.form["Url"])
        assert (url.netloc, url.path, parse_qs(url.query)) == ("voice.example.com", "/twiml", {"agent": ["sales"]})
        assert {key: leg.form[key] for key in ("MachineDetection", "AsyncAmd", "AsyncAmdStatusCallback",
                                               "AsyncAmdStatusCallbackMethod", "MachineDetectionTimeout")} == {
            "MachineDetection": "DetectMessageEnd", "AsyncAmd": "true",
            "AsyncAmdStatusCallback": "https://voice.example.com/twilio/amd", "AsyncAmdStatusCallbackMethod": "POST",
            "MachineDetectionTimeout": "30"}
        wrong = TwilioDialer(account_sid=twilio.account_sid, auth_token="wrong", api_url=twilio.url)
        with pytest.raises(CredentialsError):
            await wrong.dial(DialRequest.parse({"to": "+14155550100", "agent": "sales"}), from_="+18005550100",
                             public_url="https://voice.example.com", ring_s=25, amd_timeout_s=30)
