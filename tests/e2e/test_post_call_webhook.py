"""Post-call results through a real server: the signed webhook, and its delivery from the durable outbox.

The server runs as ``aybiza serve`` runs it on the embedded offline stack;
the shipped default agent gets a ``webhook:`` block pointing at a loopback
receiver. A caller asks a question over the Twilio-like stream and hangs
up; the receiver must get the call record, an extractive summary and the
agent's fields, signed with the agent's secret. With the receiver down at
the call's end, the delivery waits in the archive's database and is made
once the receiver is up: by the same process, and by the next process
after a restart.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aybiza.results.signing import SIGNATURE_HEADER, verify
from aybiza.testing.caller import Say, Wait, caller_speech, place_call, ring
from aybiza.testing.processes import free_port
from aybiza.testing.webhook_receiver import WebhookReceiver

from .conftest import agents_dir
from .server import AUTH_TOKEN, Server, running_server

pytestmark = pytest.mark.slow

SECRET = "whsec-test-0123456789"
CALLER = "+15555550123"
RETRY = {"AYBIZA_WEBHOOK_RETRY_BASE_S": "0.5", "AYBIZA_WEBHOOK_RETRY_MAX_S": "1", "AYBIZA_WEBHOOK_POLL_S": "0.5",
         "AYBIZA_WEBHOOK_MAX_ATTEMPTS": "50", "AYBIZA_SECRET_CRM_HOOK": SECRET}


def _env(tmp: Path, url: str, **agent_fields: object) -> dict[str, str]:
    webhook = {"url": url, "secret": "CRM_HOOK", "fields": [
        "reason_for_call", {"name": "callback_number", "description": "a number to call the caller back on"}]}
    agents = agents_dir(tmp)
    import yaml

    agent = yaml.safe_load((agents / "default.yaml").read_text())
    (agents / "default.yaml").write_text(yaml.safe_dump({**agent, "webhook": webhook, **agent_fields}))
    return {"AYBIZA_AGENTS_DIR": str(agents), **RETRY}


async def _ask_opening_hours(server: Server) -> str:
    report = await place_call(server.stream_url, [
        Wait(6), Say(caller_speech("What are your opening hours?")), Wait(12)],
        auth_token=AUTH_TOKEN, caller=CALLER, hangup_after=0.5)
    return report.call_sid


def _outbox(server_data: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(server_data / "calls-archive.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT call_id, status, attempts, last_error FROM webhook_outbox")]


async def _until(predicate: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.2)


def _check_delivery(receiver: WebhookReceiver, call_sid: str) -> dict[str, Any]:
    [delivery] = receiver.received
    header = delivery.headers[SIGNATURE_HEADER]
    assert verify(SECRET, header, delivery.body)
    assert not verify(SECRET, header, delivery.body + b" ")  # the MAC covers the exact bytes
    assert not verify("another-secret", header, delivery.body)
    body: dict[str, Any] = delivery.json()
    assert body["event"] == "call.ended" and body["call_id"] == call_sid
    assert delivery.headers["X-Aybiza-Delivery"] == body["delivery_id"]
    assert body["call"]["call_id"] == call_sid and body["call"]["status"] == "ended"
    return body


@pytest.mark.anyio
async def test_the_call_record_summary_and_fields_are_posted_signed_when_the_call_ends(tmp_path: Path) -> None:
    with WebhookReceiver() as receiver:
        with running_server(tmp_path, _env(tmp_path, receiver.url + "/hooks/aybiza")) as server:
            call_sid = await _ask_opening_hours(server)
            await _until(lambda: receiver.received, 15, "the webhook")
            await anyio.sleep(0.5)  # the sender counts the delivery once the receiver has answered
            async with httpx.AsyncClient(timeout=5, headers=server.api) as client:
                metrics = (await client.get(f"{server.http}/metrics")).text
    body = _check_delivery(receiver, call_sid)
    assert receiver.received[0].path == "/hooks/aybiza"
    assert 'aybiza_webhook_deliveries_total{outcome="delivered"} 1.0' in metrics  # the dashboard's series
    assert body["summary_source"] == "extractive"
    assert "opening hours" in body["summary"]
    assert body["fields"] == {"reason_for_call": "our opening hours", "callback_number": CALLER}
    assert any("opening" in turn["user"].lower() for turn in body["call"]["turns"])
    assert body["call"]["outcome"] == "hangup"


@pytest.mark.anyio
async def test_a_receiver_down_at_the_end_of_the_call_gets_it_once_it_is_up(tmp_path: Path) -> None:
    receiver = WebhookReceiver(port=free_port())  # not listening yet: connections are refused
    with running_server(tmp_path, _env(tmp_path, receiver.url + "/hook")) as server:
        call_sid = await _ask_opening_hours(server)
        await _until(lambda: any(row["attempts"] >= 2 for row in _outbox(server.data_dir)), 15, "two failed attempts")
        [row] = _outbox(server.data_dir)
        assert row["status"] == "pending" and "Connect" in row["last_error"]
        with receiver:
            await _until(lambda: receiver.received, 15, "the retried webhook")
            await _until(lambda: _outbox(server.data_dir)[0]["status"] == "delivered", 5, "delivered")
    _check_delivery(receiver, call_sid)
    assert "webhook to 127.0.0.1 failed (attempt 1" in server.log()


@pytest.mark.anyio
async def test_a_delivery_pending_when_the_server_stops_is_made_by_the_next_process(tmp_path: Path) -> None:
    receiver = WebhookReceiver(port=free_port())
    env = _env(tmp_path, receiver.url + "/hook")
    with running_server(tmp_path, env) as first:
        call_sid = await _ask_opening_hours(first)
        await _until(lambda: any(row["attempts"] >= 1 for row in _outbox(first.data_dir)), 30, "a failed attempt")
    assert _outbox(first.data_dir)[0]["status"] == "pending"
    with receiver:
        with running_server(tmp_path, env) as second:
            await _until(lambda: receiver.received, 20, "the webhook from the next process")
            await _until(lambda: "delivered" in second.log(), 10, "the delivery logged")
    _check_delivery(receiver, call_sid)
    assert _outbox(first.data_dir)[0]["status"] == "delivered"


@pytest.mark.anyio
async def test_a_call_cut_off_by_a_killed_server_is_posted_as_interrupted_by_the_next_process(tmp_path: Path) -> None:
    """Nobody ended the call (its process died): the process that archives it as interrupted queues its webhook.

    So too for a call the killed server had answered the webhook of, whose stream had not started yet.
    """
    with WebhookReceiver() as receiver:
        env = _env(tmp_path, receiver.url + "/hook")
        with running_server(tmp_path, env) as first:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: place_call(first.stream_url, [Wait(30)], auth_token=AUTH_TOKEN, caller=CALLER,
                                                 call_timeout=40))
                async with httpx.AsyncClient(timeout=5, headers=first.api) as client:
                    live: list[dict[str, Any]] = []
                    while not live:  # the call is on record, live
                        await anyio.sleep(0.2)
                        live = (await client.get(f"{first.http}/api/calls")).json()["active"]
                unstarted, _ = await ring(first.stream_url, auth_token=AUTH_TOKEN, caller="+34911234567")
                first.process.send_signal(signal.SIGKILL)
                tg.cancel_scope.cancel()
            first.process.wait(10)
        call_sid = str(live[0]["call_id"])
        assert not receiver.received
        with running_server(tmp_path, env) as second:
            await _until(lambda: len(receiver.received) >= 2, 20, "the interrupted calls' webhooks")
    posted: dict[str, dict[str, Any]] = {}
    for delivery in receiver.received:
        assert verify(SECRET, delivery.headers[SIGNATURE_HEADER], delivery.body)
        posted[delivery.json()["call_id"]] = delivery.json()["call"]
    assert sorted(posted) == sorted([call_sid, unstarted])
    assert (posted[call_sid]["status"], posted[call_sid]["outcome"]) == ("interrupted", "interrupted")
    never = posted[unstarted]
    assert (never["status"], never["outcome"], never["caller_country"]) == ("interrupted", "interrupted", "ES")
    assert never["outcome_detail"] == "the server stopped before the call's stream started"
    assert "archived 2 call(s) left open by a previous process" in second.log()


@pytest.mark.anyio
async def test_a_call_whose_stream_never_came_is_archived_as_no_connection_and_posted(tmp_path: Path) -> None:
    """Twilio got the TwiML and never opened the stream (a wrong public URL): the operator still sees the call."""
    with WebhookReceiver() as receiver:
        env = {**_env(tmp_path, receiver.url + "/hook"), "AYBIZA_CALL_TOKEN_TTL_S": "2"}
        with running_server(tmp_path, env) as server:
            call_sid, _ = await ring(server.stream_url, auth_token=AUTH_TOKEN, caller=CALLER)
            await _until(lambda: receiver.received, 20, "the unconnected call's webhook")
            record = await server.record(call_sid)
    [delivery] = receiver.received
    assert verify(SECRET, delivery.headers[SIGNATURE_HEADER], delivery.body)
    assert delivery.json()["call_id"] == call_sid
    assert (record["status"], record["outcome"], record["caller"]) == ("ended", "no_connection", CALLER)
    assert "never opened the call's Media Stream within 2 s" in record["outcome_detail"]
    assert "AYBIZA_PUBLIC_URL" in record["outcome_detail"]


@pytest.mark.anyio
async def test_with_a_model_configured_the_summary_and_fields_come_from_one_converse_request(tmp_path: Path) -> None:
    from aybiza.testing.fake_bedrock import BedrockReply, BedrockRequest, FakeBedrock
    from aybiza.testing.fake_deepgram import FakeDeepgram

    summary = ('{"summary": "The caller wants a call back about a bill.", '
               '"fields": {"reason_for_call": "billing question", "callback_number": "+16035550199"}}')

    def model(request: BedrockRequest) -> BedrockReply:
        if request.path.endswith("/converse"):
            return BedrockReply(text=summary)
        return BedrockReply(text="Of course, someone will call you back.")

    with WebhookReceiver() as receiver, FakeBedrock(script=model) as bedrock, \
            FakeDeepgram(transcripts=["please call me back on 603 555 0199 about my bill"]) as deepgram:
        # This agent keeps callers' numbers in its records (redact_pii: false): with redaction on (the
        # default) the record, and so the model's transcript, holds the number masked.
        env = {**_env(tmp_path, receiver.url + "/hook", redact_pii=False),
               "AYBIZA_STT": "deepgram", "AYBIZA_LLM": "bedrock", "AYBIZA_TTS": "deepgram",
               "DEEPGRAM_API_KEY": "test-key", "AYBIZA_DEEPGRAM_URL": deepgram.url,
               "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.url, "AWS_ACCESS_KEY_ID": "AKIDTEST",
               "AWS_SECRET_ACCESS_KEY": "secret", "AWS_EC2_METADATA_DISABLED": "true",
               "AYBIZA_HEALTH_PROBES": "false"}
        with running_server(tmp_path, env) as server:
            report = await place_call(server.stream_url, [
                Wait(15), Say(caller_speech("please call me back about my bill")), Wait(15)],
                auth_token=AUTH_TOKEN, caller=CALLER, hangup_after=0.5)
            await _until(lambda: receiver.received, 20, "the webhook")
        [asked] = [r for r in bedrock.requests if r.path.endswith("/converse")]
    body = _check_delivery(receiver, report.call_sid)
    assert body["summary_source"].startswith("model:")
    assert body["summary"] == "The caller wants a call back about a bill."
    assert body["fields"] == {"reason_for_call": "billing question", "callback_number": "+16035550199"}
    prompt = " ".join(asked.texts())
    assert "603 555 0199" in prompt and "callback_number" in prompt  # the transcript and the fields wanted
