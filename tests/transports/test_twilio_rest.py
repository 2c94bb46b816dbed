"""Call control over Twilio's REST API, against a fake of the API that checks credentials like Twilio does."""

from __future__ import annotations

import socket
import time

import anyio
import pytest

from aybiza.errors import CredentialsError, ProviderError, ProviderTimeout
from aybiza.testing.fake_twilio import FakeTwilio, twilio_sid
from aybiza.testing.processes import free_port
from aybiza.transports.twilio_rest import TwilioCallControl, dial_twiml

pytestmark = pytest.mark.anyio

DESK = "+14155550100"


def _control(twilio: FakeTwilio, call_sid: str, *, auth_token: str | None = None) -> TwilioCallControl:
    return TwilioCallControl(call_sid, account_sid=twilio.account_sid,
                             auth_token=twilio.auth_token if auth_token is None else auth_token, api_url=twilio.url)


def test_dial_twiml_dials_numbers_and_sip_uris() -> None:
    assert dial_twiml(DESK) == f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Number>{DESK}</Number>' \
                               "</Dial></Response>"
    assert "<Dial><Sip>sip:desk@pbx.example.com</Sip></Dial>" in dial_twiml("sip:desk@pbx.example.com")
    assert "<Dial><Sip>SIPS:desk@pbx.example.com</Sip></Dial>" in dial_twiml("SIPS:desk@pbx.example.com")


async def test_transfer_redirects_the_live_call_to_dial_a_number() -> None:
    call_sid = twilio_sid("CA")
    async with FakeTwilio(calls=[call_sid]) as twilio:
        control = _control(twilio, call_sid)
        assert control.available
        await control.transfer(DESK)
    (update,) = twilio.updates
    assert update.call_sid == call_sid and update.account_sid == twilio.account_sid
    assert update.twiml.endswith(f"<Response><Dial><Number>{DESK}</Number></Dial></Response>")
    assert set(update.form) == {"Twiml"}  # no Url, no Status: the call goes on, to the desk


async def test_transfer_to_a_sip_uri_dials_sip() -> None:
    call_sid = twilio_sid("CA")
    async with FakeTwilio(calls=[call_sid]) as twilio:
        await _control(twilio, call_sid).transfer("sip:desk@pbx.example.com")
    assert "<Dial><Sip>sip:desk@pbx.example.com</Sip></Dial>" in twilio.updates[0].twiml


async def test_wrong_credentials_raise_a_credentials_error() -> None:
    call_sid = twilio_sid("CA")
    async with FakeTwilio(calls=[call_sid]) as twilio:
        with pytest.raises(CredentialsError) as raised:
            await _control(twilio, call_sid, auth_token="not-the-token").transfer(DESK)
    assert raised.value.provider == "twilio" and not raised.value.retryable
    assert twilio.updates == [] and twilio.refused == 1


async def test_a_call_twilio_does_not_know_or_that_ended_is_a_provider_error() -> None:
    live, ended = twilio_sid("CA"), twilio_sid("CA")
    async with FakeTwilio(calls=[live, ended]) as twilio:
        twilio.end_call(ended)
        with pytest.raises(ProviderError, match="21220|in-progress") as not_live:
            await _control(twilio, ended).transfer(DESK)
        with pytest.raises(ProviderError) as unknown:
            await _control(twilio, twilio_sid("CA")).transfer(DESK)
    for raised in (not_live, unknown):
        assert not isinstance(raised.value, CredentialsError) and raised.value.provider == "twilio"
    assert twilio.updates == []


async def test_an_unreachable_api_raises_a_provider_error() -> None:
    control = TwilioCallControl(twilio_sid("CA"), account_sid=twilio_sid("AC"), auth_token="token",
                                api_url=f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    with pytest.raises(ProviderError, match="unreachable") as raised:
        await control.transfer(DESK)
    assert raised.value.provider == "twilio" and raised.value.retryable


async def test_an_api_that_never_answers_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        port = silent.getsockname()[1]
        control = TwilioCallControl(twilio_sid("CA"), account_sid=twilio_sid("AC"), auth_token="token",
                                    api_url=f"http://127.0.0.1:{port}", timeout_s=0.3)
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(ProviderTimeout, match="0.3 s"):
            await control.transfer(DESK)
    assert time.monotonic() - started < 3  # the session's fallback is not held up by a silent API


def test_control_is_available_only_with_an_account_and_a_call() -> None:
    assert not TwilioCallControl("CA1", account_sid="", auth_token="t", api_url="https://api.twilio.com").available
    assert not TwilioCallControl("CA1", account_sid="AC1", auth_token="", api_url="https://api.twilio.com").available
    assert not TwilioCallControl("", account_sid="AC1", auth_token="t", api_url="https://api.twilio.com").available
    assert TwilioCallControl("CA1", account_sid="AC1", auth_token="t", api_url="https://api.twilio.com").available


async def test_a_second_leg_rings_from_our_number_and_its_status_follows_the_call() -> None:
    call_sid = twilio_sid("CA")
    async with FakeTwilio(calls=[call_sid], answers={"+14155550199": "busy"}, answer_after_s=0.2) as twilio:
        control = _control(twilio, call_sid)
        assert await control.our_number() == twilio.our_number  # the number the caller called
        leg = await control.call_leg(DESK, brief="A caller about a refund.", room="aybiza-room", ring_s=15)
        assert await control.leg_status(leg) == "ringing"
        await anyio.sleep(0.3)
        assert await control.leg_status(leg) == "in-progress"
        busy = await control.call_leg("+14155550199", brief="x", room="other", ring_s=15)
        await anyio.sleep(0.3)
        assert await control.leg_status(busy) == "busy"
        await control.join_conference("aybiza-room")
        await control.end_leg(leg, ringing=False)
    created = twilio.created[0]
    assert (created.to, created.from_, created.ring_s) == (DESK, twilio.our_number, 15)
    assert created.twiml.endswith('<Response><Say>A caller about a refund.</Say><Dial><Conference beep="false" '
                                  'endConferenceOnExit="true" startConferenceOnEnter="true">aybiza-room</Conference>'
                                  '</Dial></Response>')
    assert twilio.conferences == {"aybiza-room": [created.sid, call_sid]}
    assert 'startConferenceOnEnter="false"' in twilio.updates[0].twiml and created.ended == "completed"
