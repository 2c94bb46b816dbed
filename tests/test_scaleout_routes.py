"""The routes' part in a cluster, in process: the webhook signed over the load balancer's URL, and a draining
node that offers no call and says so on /ready."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from aybiza.config import Settings
from aybiza.server import create_app
from aybiza.testing.twilio_caller import new_sid

TOKEN = "0123456789abcdef0123456789abcdef"
NODE = "http://127.0.0.1:8080"
LB = "https://voice.example.com"


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("AYBIZA_", "TWILIO_")):
            monkeypatch.delenv(name)


def _client(tmp_path: Path, **values: Any) -> TestClient:
    agents = tmp_path / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    (agents / "default.yaml").write_text("id: default\nname: Desk\ngreeting: Hello.\nsystem_prompt: Answer.\n")
    settings: dict[str, Any] = {
        "data_dir": tmp_path / "var", "agents_dir": agents, "twilio_auth_token": TOKEN, "tts": "espeak",
        "public_url": NODE} | values
    return TestClient(create_app(Settings(**settings)), base_url=NODE)


def _post(client: TestClient, signed_over: str, call_sid: str | None = None) -> Any:
    params = {"CallSid": call_sid or new_sid("CA"), "AccountSid": new_sid("AC"), "From": "+15555550100"}
    signature = RequestValidator(TOKEN).compute_signature(signed_over + "/twiml", params)
    return client.post("/twiml", data=params, headers={"X-Twilio-Signature": signature})


def test_the_webhook_is_signed_over_the_load_balancers_url_and_the_stream_goes_to_the_node(tmp_path: Path) -> None:
    client = _client(tmp_path, webhook_url=LB + "/")
    answer = _post(client, LB)
    assert answer.status_code == 200, answer.text
    assert '<Stream url="ws://127.0.0.1:8080/twilio/stream">' in answer.text
    assert _post(client, NODE).status_code == 403  # not what Twilio signed


def test_a_call_this_node_dialled_comes_back_signed_over_its_own_url(tmp_path: Path) -> None:
    """Behind a load balancer, the calls a node dials name the node's URL (outbound/dialing.py): Twilio signs that."""
    client = _client(tmp_path, webhook_url=LB + "/")
    runtime = client.app.state.aybiza  # type: ignore[attr-defined]
    dialled = new_sid("CA")
    runtime.outbound.dialled(dialled, "default", "+15555550100", ring_s=30)
    answer = _post(client, NODE, dialled)
    assert answer.status_code == 200, answer.text
    assert _post(client, LB, dialled).status_code == 200  # (or sent through the balancer)
    assert _post(client, NODE).status_code == 403  # a call it did not dial: only the balancer's URL


def test_a_draining_node_offers_no_call_and_is_not_ready(tmp_path: Path) -> None:
    client = _client(tmp_path)
    runtime = client.app.state.aybiza  # type: ignore[attr-defined]
    runtime.ready = True
    assert _post(client, NODE).status_code == 200
    runtime.draining = True
    refused = _post(client, NODE)
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["reason"] == "draining"
