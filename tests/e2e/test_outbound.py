"""Outbound calls through a real server: ``aybiza dial`` against the fake Twilio, answering as a machine or a person.

One server runs as ``aybiza serve`` runs it (the embedded offline stack),
with Twilio's REST API at the shipped fake. The fake answers each call it is
asked to make like Twilio with async answering-machine detection: it posts
the signed voice webhook, opens the Media Stream as a Twilio-like caller,
plays the callee's side (a machine: a greeting and a beep) and posts the
signed AMD verdict. What the machine "recorded" is what its stream played,
checked with the local recogniser.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from twilio.request_validator import RequestValidator

from aybiza.processors.stt.whisper import WhisperRecognizer
from aybiza.testing.caller import CallReport, Say, Wait, caller_speech
from aybiza.testing.fake_twilio import Callee, FakeTwilio, beep

from .conftest import ROOT, agents_dir, heard_pcm, words
from .server import AUTH_TOKEN, Server, running_server

pytestmark = pytest.mark.slow

ACCOUNT_SID = "AC" + "2" * 32
OUR_NUMBER = "+18005550100"
MACHINE = "+14155550201"
PERSON = "+14155550202"
NOBODY = "+14155550203"  # rings, never answers
BUSY = "+14155550204"  # busy (Twilio's status callback says so)
NO_ANSWER = "+14155550205"  # rings out


@pytest.fixture(scope="module")
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, answer_after_s=0.5) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, twilio: FakeTwilio) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("outbound")
    agents = agents_dir(tmp, capped={"outbound_dials_per_minute": 1, "outbound_dial_burst": 1},
                        single={"outbound_max_calls": 1}, solo={"outbound_max_calls": 1})
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "AYBIZA_TWILIO_API_URL": twilio.url, "AYBIZA_AGENTS_DIR": str(agents),
           "AYBIZA_OUTBOUND_FROM": OUR_NUMBER,
           # As behind a load balancer (docs/production.md): Twilio's inbound webhook is the balancer's URL, while
           # the calls this node dials come back to its own (their AMD verdict and stream live here).
           "AYBIZA_WEBHOOK_URL": "https://lb.example.test"}
    with running_server(tmp, env) as running:
        yield running


async def _dial(server: Server, to: str, agent: str = "default") -> list[dict[str, Any]]:
    """``aybiza dial TO --agent AGENT --wait`` against the server; the JSON lines it printed."""
    env = {**os.environ, "AYBIZA_DATA_DIR": str(server.data_dir)}  # where the loopback server keeps its API token
    result = await anyio.run_process(
        [sys.executable, "-m", "aybiza.cli", "dial", to, "--agent", agent, "--server", server.http, "--wait",
         "--wait-timeout", "120"], env=env, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]


async def _stream(twilio: FakeTwilio, call_sid: str) -> CallReport:
    with anyio.fail_after(15):
        while call_sid not in twilio.streams:
            assert not twilio.errors, twilio.errors
            await anyio.sleep(0.1)
    return twilio.streams[call_sid]


async def _record(server: Server, call_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{server.http}/api/calls/{call_id}", headers=server.api)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.anyio
async def test_a_machine_records_the_voicemail_message_after_its_beep_and_the_call_ends(
    server: Server, twilio: FakeTwilio, recognizer: WhisperRecognizer
) -> None:
    greeting = caller_speech("Hi, you have reached Sam. I can't take your call, please leave a message after the tone.")
    twilio.callees[MACHINE] = Callee("machine_end_beep", before_verdict=[Say(greeting), Say(beep())],
                                     after_verdict=[Wait(60, until_idle=False)])
    dialled, ended = await _dial(server, MACHINE)
    call_sid = dialled["call_id"]
    assert ended == {"call_id": call_sid, "status": "ended", "outcome": "voicemail", "direction": "outbound",
                     "answered_by": "machine_end_beep",
                     "outcome_detail": "voicemail left (answered by machine_end_beep)"}
    [leg] = [leg for leg in twilio.created if leg.sid == call_sid]
    assert (leg.to, leg.from_) == (MACHINE, OUR_NUMBER)
    assert leg.form["MachineDetection"] == "DetectMessageEnd" and leg.form["AsyncAmd"] == "true"
    assert leg.form["AsyncAmdStatusCallback"] == f"{server.http}/twilio/amd"
    report = await _stream(twilio, call_sid)
    assert report.first_audio_at is not None and report.first_audio_at > twilio.amd_posted_at[call_sid], \
        "nothing was played to the machine before its beep"
    recorded = await anyio.to_thread.run_sync(recognizer.transcribe, heard_pcm(report), 8000)
    assert {"harbor", "appointment", "call", "back"} <= words(recorded), recorded
    record = await _record(server, call_sid)
    assert (record["direction"], record["answered_by"], record["outcome"]) == (
        "outbound", "machine_end_beep", "voicemail")
    assert record["caller"] == MACHINE
    assert not any(turn["user"] for turn in record["turns"]), "the machine's greeting was never answered"
    assert [turn["agent"] for turn in record["turns"]] == [
        "Hello, this is Harbor Lane Dental calling about your appointment. Please call us back on 555 0142 during "
        "opening hours. Thank you, goodbye."], "the message in the greeting's place"


@pytest.mark.anyio
async def test_a_person_is_greeted_once_they_said_hello_and_gets_answers(
    server: Server, twilio: FakeTwilio, recognizer: WhisperRecognizer
) -> None:
    twilio.callees[PERSON] = Callee("human", before_verdict=[Say(caller_speech("Hello?")), Wait(1.2, until_idle=False)],
                                    after_verdict=[Wait(10), Say(caller_speech("What are your opening hours?")),
                                                   Wait(20)])
    dialled, ended = await _dial(server, PERSON)
    call_sid = dialled["call_id"]
    assert (ended["outcome"], ended["direction"], ended["answered_by"]) == ("hangup", "outbound", "human")
    report = await _stream(twilio, call_sid)
    heard = await anyio.to_thread.run_sync(recognizer.transcribe, heard_pcm(report), 8000)
    assert {"harbor", "dental"} <= words(heard), heard  # the greeting
    assert {"monday", "friday"} <= words(heard), heard  # the answer
    record = await _record(server, call_sid)
    assert record["caller"] == PERSON and record["direction"] == "outbound"
    [asked] = [turn["user"] for turn in record["turns"] if turn["user"]]  # "hello?" was answered by the greeting
    assert "opening" in asked.lower(), asked


@pytest.mark.anyio
async def test_dialling_needs_the_api_token_and_a_sound_request(server: Server) -> None:
    body = {"to": NOBODY, "agent": "default"}
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        assert (await client.post("/api/calls", json=body)).status_code == 401
        wrong = await client.post("/api/calls", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        for bad in ({"to": "911", "agent": "default"}, {"to": NOBODY, "agent": "default", "x": "y"},
                    {"to": NOBODY, "agent": {"id": "default"}}, {"to": "sip:" + "a" * 300 + "@pbx"}):
            refused = await client.post("/api/calls", json=bad, headers=server.api)
            assert refused.status_code == 400 and refused.json()["error"] == "bad_request", refused.text
        huge = await client.post("/api/calls", content=b"{" + b" " * 10_000 + b"}", headers=server.api)
        assert huge.status_code == 413
        missing = await client.post("/api/calls", json={"to": NOBODY, "agent": "nobody"}, headers=server.api)
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_agent"


@pytest.mark.anyio
async def test_the_amd_webhook_takes_only_twilios_signed_verdicts(server: Server) -> None:
    url = f"{server.http}/twilio/amd"
    params = {"CallSid": "CA" + "3" * 32, "AccountSid": ACCOUNT_SID, "AnsweredBy": "human"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(url, data=params)).status_code == 403
        forged = await client.post(url, data=params, headers={"X-Twilio-Signature": "AAAA" + signature[4:]})
        assert forged.status_code == 403
        unknown = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
        assert unknown.status_code == 404, "a verdict for a call we did not dial"
        big = await client.post(url, content=b"a=" + b"b" * 20_000, headers={
            "X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})
        assert big.status_code == 413


@pytest.mark.anyio
async def test_over_the_dial_rate_is_429_and_over_the_concurrent_calls_409(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=10, headers=server.api) as client:
        first = await client.post("/api/calls", json={"to": NOBODY, "agent": "capped"})
        assert first.status_code == 201, first.text
        second = await client.post("/api/calls", json={"to": NOBODY, "agent": "capped"})
        assert second.status_code == 429 and second.json()["error"] == "dial_rate"
        assert int(second.headers["Retry-After"]) >= 30
        ringing = await client.post("/api/calls", json={"to": NOBODY, "agent": "single"})
        assert ringing.status_code == 201, ringing.text
        busy = await client.post("/api/calls", json={"to": NOBODY, "agent": "single"})
        assert busy.status_code == 409 and busy.json()["error"] == "too_many_calls"
        other = await client.post("/api/calls", json={"to": NOBODY, "agent": "default", "from": "+18005550199"})
        assert other.status_code == 201, "limits are per agent"


# -- Twilio's status callback: calls that never reached the agent -------------------------------------------


@pytest.mark.anyio
async def test_a_busy_line_is_recorded_as_busy_from_twilios_signed_status_callback(
        server: Server, twilio: FakeTwilio) -> None:
    twilio.answers[BUSY] = "busy"
    dialled, ended = await _dial(server, BUSY)
    call_sid = dialled["call_id"]
    assert ended == {"call_id": call_sid, "status": "ended", "outcome": "busy", "direction": "outbound",
                     "answered_by": "", "outcome_detail": "Twilio: busy (SIP 486)"}
    [leg] = [leg for leg in twilio.created if leg.sid == call_sid]
    assert leg.form["StatusCallback"] == f"{server.http}/twilio/status"
    assert (leg.form["StatusCallbackMethod"], leg.form["StatusCallbackEvent"]) == ("POST", "completed")
    assert (call_sid, "busy", 204) in twilio.status_posts
    record = await _record(server, call_sid)
    assert (record["caller"], record["agent_id"], record["turns"]) == (BUSY, "default", [])


@pytest.mark.anyio
async def test_an_unanswered_call_is_recorded_and_frees_its_agents_place_at_once(
        server: Server, twilio: FakeTwilio) -> None:
    twilio.answers[NO_ANSWER] = "no-answer"
    dialled, ended = await _dial(server, NO_ANSWER, agent="solo")  # at most one outbound call at once
    assert (ended["outcome"], ended["outcome_detail"]) == ("no_answer", "Twilio: no-answer")
    async with httpx.AsyncClient(base_url=server.http, timeout=10, headers=server.api) as client:
        again = await client.post("/api/calls", json={"to": NO_ANSWER, "agent": "solo"})
    assert again.status_code == 201, "the ring time is not waited for: the status said the call is over"


@pytest.mark.anyio
async def test_a_finished_conversation_keeps_its_own_outcome_when_twilio_reports_completed(
        server: Server, twilio: FakeTwilio) -> None:
    def person_posts() -> list[tuple[str, str, int]]:
        return [post for post in twilio.status_posts if (leg := twilio.leg(post[0])) is not None and leg.to == PERSON]

    with anyio.fail_after(10):  # posted once the person's stream ended
        while not person_posts():  # noqa: ASYNC110
            await anyio.sleep(0.1)
    [(call_sid, status, code)] = person_posts()
    assert (status, code) == ("completed", 204)
    assert (await _record(server, call_sid))["outcome"] == "hangup"  # the session's reason, not Twilio's


@pytest.mark.anyio
async def test_the_status_webhook_takes_only_twilios_signed_statuses_and_is_rate_limited(server: Server) -> None:
    url = f"{server.http}/twilio/status"
    params = {"CallSid": "CA" + "4" * 32, "AccountSid": ACCOUNT_SID, "CallStatus": "busy"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    signed = {"X-Twilio-Signature": signature}
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(url, data=params)).status_code == 403
        forged = await client.post(url, data=params, headers={"X-Twilio-Signature": "AAAA" + signature[4:]})
        assert forged.status_code == 403
        assert (await client.post(url, data=params, headers=signed)).status_code == 404, "a call we did not dial"
        odd = {**params, "CallStatus": "exploded"}
        odd_signature = RequestValidator(AUTH_TOKEN).compute_signature(url, odd)
        assert (await client.post(url, data=odd, headers={"X-Twilio-Signature": odd_signature})).status_code == 400
        big = await client.post(url, content=b"a=" + b"b" * 20_000, headers={
            **signed, "Content-Type": "application/x-www-form-urlencoded"})
        assert big.status_code == 413
        # far more than Twilio would post: the burst (100) is spent faster than it refills (10 a second), however
        # slow the machine, when 20 go at once
        codes: list[int] = []

        async def post() -> None:
            codes.append((await client.post(url, data=params)).status_code)

        while 429 not in codes and len(codes) < 2000:
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(post)
    assert 429 in codes and set(codes) <= {403, 429}, "an address posting far more than Twilio would"
