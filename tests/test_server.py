"""The routes' guards, in process: bounded bodies, the webhook's signature before its body, ids, tokens,
pagination, Host and Origin, security headers, the browser demo's modes.

No lifespan runs (no model loads): routes that need the call store answer 503 once their guards passed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from aybiza.config import Settings
from aybiza.server import create_app
from aybiza.testing.twilio_caller import new_sid

AGENT = "id: default\nname: Test Desk\ngreeting: Hello.\nsystem_prompt: You answer the phone.\n"

TOKEN = "0123456789abcdef0123456789abcdef"
BASE = "http://127.0.0.1:8080"
SDP = "v=0\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("AYBIZA_", "TWILIO_")):
            monkeypatch.delenv(name)


def _client(tmp_path: Path, **values: Any) -> TestClient:
    agents = tmp_path / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    (agents / "default.yaml").write_text(AGENT)
    settings: dict[str, Any] = {
        "data_dir": tmp_path / "var", "agents_dir": agents, "twilio_auth_token": TOKEN, "tts": "espeak",
        "public_url": BASE} | values
    return TestClient(create_app(Settings(**settings)), base_url=BASE)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield _client(tmp_path)


def _webhook(**params: str) -> dict[str, str]:
    return {"CallSid": new_sid("CA"), "AccountSid": new_sid("AC"), "From": "+15555550100"} | params


def _signed(client: TestClient, params: dict[str, str], path: str = "/twiml") -> Any:
    signature = RequestValidator(TOKEN).compute_signature(BASE + path, params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def _api(tmp_path: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {(tmp_path / 'var' / 'api_token').read_text().strip()}"}


# -- /twiml: the signature header first, a bounded form, Twilio ids --------------------------------------


def _asgi_post(app: Any, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """POST ``path`` with ``headers`` and a body that is never sent; (status, body reads the app asked for)."""
    reads = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        await anyio.sleep(3600)  # a 300 MB upload at a trickle
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("203.0.113.5", 5000), "server": ("127.0.0.1", 8080), "scheme": "http",
             "http_version": "1.1", "root_path": "", "asgi": {"version": "3.0"}}

    async def run() -> None:
        with anyio.fail_after(5):
            await app(scope, receive, send)

    anyio.run(run)
    return status, reads


@pytest.mark.parametrize(("headers", "status"), [
    ({"content-type": "multipart/form-data; boundary=x", "content-length": str(300 << 20)}, 403),  # unsigned
    ({"content-type": "multipart/form-data; boundary=x", "content-length": str(300 << 20),
      "x-twilio-signature": "forged"}, 415),  # no multipart: nothing spooled
    ({"content-type": "application/x-www-form-urlencoded", "content-length": str(300 << 20),
      "x-twilio-signature": "forged"}, 413),  # too large: refused unread
])
def test_a_huge_webhook_body_is_refused_before_a_byte_of_it_is_read(
        client: TestClient, headers: dict[str, str], status: int) -> None:
    assert _asgi_post(client.app, "/twiml", {"host": "127.0.0.1:8080", **headers}) == (status, 0)


def test_a_signed_webhook_gets_a_stream_with_a_token(client: TestClient) -> None:
    response = _signed(client, _webhook(From="+1555\r\n2026-01-01 INFO forged\x1b[2J"))
    assert response.status_code == 200 and '<Parameter name="call_token"' in response.text
    assert '<Parameter name="caller" value="+15552026-01-01 INFO forged[2J"' in response.text  # no control chars


@pytest.mark.parametrize("call_sid", ["CA1", "CAgarbage", "CA" + "0" * 31 + "\n", "CA" + "0" * 40_000])
def test_a_webhook_with_a_call_id_that_is_no_twilio_sid_is_refused(client: TestClient, call_sid: str) -> None:
    response = _signed(client, _webhook(CallSid=call_sid))
    assert response.status_code in (400, 413)


def test_a_webhook_of_another_account_is_refused(tmp_path: Path) -> None:
    client = _client(tmp_path, twilio_account_sid="AC" + "1" * 32)
    assert _signed(client, _webhook(AccountSid="AC" + "2" * 32)).status_code == 403
    assert _signed(client, _webhook(AccountSid="AC" + "1" * 32)).status_code == 200


def test_a_captured_webhook_reposted_mints_a_few_tokens_then_none(client: TestClient) -> None:
    params = _webhook()
    statuses = [_signed(client, params).status_code for _ in range(20)]
    assert statuses == [200] * 3 + [429] * 17
    assert len(cast(Any, client.app).state.aybiza.tokens) == 1  # one pending token for that call, whatever was posted


# -- the browser demo: modes, Origin, rate, strict JSON, fingerprint -------------------------------------


def _offer(client: TestClient, body: bytes | None = None, **headers: str) -> Any:
    content = body if body is not None else json.dumps({"sdp": SDP, "type": "offer", "agent": "nobody"}).encode()
    return client.post("/webrtc/offer", content=content, headers={"content-type": "application/json", **headers})


def test_offers_from_another_sites_page_are_refused(client: TestClient) -> None:
    assert _offer(client, origin="https://evil.example").status_code == 403
    assert _offer(client, origin="null").status_code == 403
    assert _offer(client, origin=BASE).status_code == 404  # its own page: on to the agent check (no such agent)


def test_offers_are_rate_limited_per_address(client: TestClient) -> None:
    statuses = [_offer(client).status_code for _ in range(8)]
    assert statuses == [404] * 6 + [429] * 2  # the burst, then the bucket is empty
    refused = _offer(client)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize(("body", "status", "says"), [
    (b"[" * 100_000, 413, "Payload Too Large"),
    (b"[" * 60_000, 400, "nested too deep"),
    (json.dumps({"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "type": "offer"}).encode(), 400,
     "fingerprint"),
    (b'{"sdp": "v=0", "type": "offer", "x": {"y": {"z": []}}}', 400, "flat JSON object"),
])
def test_offers_are_bounded_strict_json(tmp_path: Path, body: bytes, status: int, says: str) -> None:
    response = _offer(_client(tmp_path), body)
    assert response.status_code == status and says in response.text


def test_the_browser_demo_is_off_when_the_server_is_reachable_beyond_loopback(tmp_path: Path) -> None:
    client = _client(tmp_path, host="0.0.0.0", api_token="s3cret")
    assert client.get("/").status_code == 403
    response = _offer(client)
    assert response.status_code == 403 and "AYBIZA_BROWSER_CALLS" in response.text


def test_the_browser_demo_behind_a_token(tmp_path: Path) -> None:
    client = _client(tmp_path, host="0.0.0.0", api_token="s3cret", browser_calls="token", browser_token="b-t0ken")
    assert client.get("/").status_code == 200  # the page is served; it sends the token from its #fragment
    assert _offer(client).status_code == 401
    assert _offer(client, authorization="Bearer b-t0ken").status_code == 404  # past the guard


# -- the API: a bearer always, bounded pagination --------------------------------------------------------


def test_call_records_need_the_local_token_even_from_loopback(tmp_path: Path) -> None:
    client = _client(tmp_path)
    assert client.get("/api/calls").status_code == 401
    assert client.get("/api/calls/CA1").status_code == 401
    assert client.get("/api/calls", headers=_api(tmp_path)).status_code == 503  # past the guard (not started)


@pytest.mark.parametrize("query", ["limit=-1", "limit=0", "limit=501", "limit=abc", "limit=1e3", "limit=",
                                   "offset=-1", "offset=10000000", "offset=99999999999999999999999",
                                   "status=" + "x" * 100])
def test_pagination_is_bounded(tmp_path: Path, query: str) -> None:
    client = _client(tmp_path)
    response = client.get(f"/api/calls?{query}", headers=_api(tmp_path))
    assert response.status_code == 400


def test_metrics_are_open_without_a_token_and_guarded_with_one(tmp_path: Path) -> None:
    assert _client(tmp_path / "open").get("/metrics").status_code == 200
    guarded = _client(tmp_path / "guarded", api_token="s3cret", metrics_token="scrape")
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer scrape"}).status_code == 200
    assert guarded.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 401
    assert guarded.get("/dashboard").status_code == 401


# -- Host (DNS rebinding) and security headers -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/calls", "/dashboard", "/api/dashboard", "/metrics", "/", "/web/app.js"])
def test_a_rebinding_host_is_refused(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"host": "rebind.evil.example:8080"})
    assert response.status_code == 400 and "Host" in response.text


def test_probes_and_twilio_are_not_held_to_the_host(client: TestClient) -> None:
    assert client.get("/health", headers={"host": "10.0.3.4:8080"}).status_code == 503  # starting, not 400
    assert client.post("/twiml", headers={"host": "10.0.3.4:8080"}).status_code == 403  # the signature decides


def test_extra_hosts_may_be_allowed(tmp_path: Path) -> None:
    client = _client(tmp_path, allowed_hosts="voice.internal, 10.0.3.4")
    assert client.get("/metrics", headers={"host": "voice.internal"}).status_code == 200
    assert client.get("/metrics", headers={"host": "[::1]:8080"}).status_code == 200


def test_every_response_carries_the_security_headers_and_html_a_policy(client: TestClient) -> None:
    for path in ("/", "/dashboard", "/metrics", "/api/calls", "/web/app.js"):
        response = client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["referrer-policy"] == "no-referrer", path
    page = client.get("/")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert client.get("/api/calls").headers["cache-control"] == "no-store"


def test_the_dashboard_allows_exactly_its_own_inline_script_and_style(client: TestClient) -> None:
    response = client.get("/dashboard")
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'self'") and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    for kind, body in re.findall(r"<(script|style)>(.*?)</\1>", response.text, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in policy
