"""Who may use which endpoint: Twilio's signatures against the public URL, the API's bearer tokens."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from starlette.requests import Request
from twilio.request_validator import RequestValidator

from aybiza.config import Settings
from aybiza.errors import ConfigError
from aybiza.guard import Guard, local_api_token
from aybiza.twilio_auth import auth_token_for, local_token_path

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = {"public_url": "https://voice.example.com", "api_token": "s3cret"}  # reachable from the internet: a token
WEBHOOK = {"CallSid": "CA123", "From": "+14155550123", "To": "+14155550100"}


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("AYBIZA_", "TWILIO_")):
            monkeypatch.delenv(name)


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def _request(*, client: str | None = "127.0.0.1", authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    scope = {"type": "http", "method": "GET", "path": "/api/calls", "query_string": b"", "headers": headers,
             "client": (client, 51234) if client is not None else None}
    return Request(scope)


# -- public URLs ---------------------------------------------------------------------------


def test_public_urls_follow_the_configured_base(tmp_path: Path) -> None:
    guard = Guard(_settings(tmp_path, twilio_auth_token=TOKEN, public_url="https://voice.example.com/",
                            api_token="s3cret"))
    assert guard.public_url("/twiml") == "https://voice.example.com/twiml"
    assert guard.public_url("/twilio/stream", websocket=True) == "wss://voice.example.com/twilio/stream"


def test_without_a_public_url_the_local_address_is_used(tmp_path: Path) -> None:
    guard = Guard(_settings(tmp_path, twilio_auth_token=TOKEN, host="0.0.0.0", port=8123, api_token="s3cret"))
    assert guard.public_url("/twiml") == "http://127.0.0.1:8123/twiml"
    assert guard.public_url("/twilio/stream", websocket=True) == "ws://127.0.0.1:8123/twilio/stream"


# -- Twilio signatures ----------------------------------------------------------------------


def test_a_signature_made_with_the_auth_token_and_public_url_passes(tmp_path: Path) -> None:
    guard = Guard(_settings(tmp_path, twilio_auth_token=TOKEN, **PUBLIC))
    url = guard.public_url("/twiml")
    signature = RequestValidator(TOKEN).compute_signature(url, WEBHOOK)
    assert guard.signature_ok(url, WEBHOOK, signature)


@pytest.mark.parametrize("tamper", ["token", "url", "params", "missing"])
def test_anything_else_is_refused(tmp_path: Path, tamper: str) -> None:
    guard = Guard(_settings(tmp_path, twilio_auth_token=TOKEN, **PUBLIC))
    url = guard.public_url("/twiml")
    signed_url, params, token = url, dict(WEBHOOK), TOKEN
    if tamper == "token":
        token = "f" * 32
    elif tamper == "url":
        signed_url = "https://attacker.example.com/twiml"
    signature = RequestValidator(token).compute_signature(signed_url, params)
    if tamper == "params":
        params["From"] = "+19005550199"
    if tamper == "missing":
        signature = ""
    assert not guard.signature_ok(url, params, signature)


def test_the_check_is_off_only_when_disabled_on_purpose(tmp_path: Path) -> None:
    guard = Guard(_settings(tmp_path, twilio_auth_token=TOKEN, twilio_validate=False))
    assert guard.signature_ok("http://127.0.0.1:8080/twiml", WEBHOOK, "")
    assert guard.signature_ok("http://127.0.0.1:8080/twiml", WEBHOOK, "forged")


def test_without_a_configured_token_a_local_one_is_made_once_and_kept_private(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    guard = Guard(settings)
    path = local_token_path(settings)
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert guard.auth_token == path.read_text().strip() == auth_token_for(settings, create=False)
    assert Guard(settings).auth_token == guard.auth_token  # a restart keeps it: `aybiza call` can sign
    url = guard.public_url("/twiml")
    assert guard.signature_ok(url, WEBHOOK, RequestValidator(guard.auth_token).compute_signature(url, WEBHOOK))
    assert not guard.signature_ok(url, WEBHOOK, "")  # never off by accident


# -- the API --------------------------------------------------------------------------------


def test_with_an_api_token_only_its_bearer_may_read(tmp_path: Path) -> None:
    guard = Guard(_settings(tmp_path, twilio_auth_token=TOKEN, api_token="s3cret"))
    assert guard.api_refusal(_request(client="10.1.2.3", authorization="Bearer s3cret")) is None
    for authorization in (None, "Bearer wrong", "s3cret", "Basic czNjcmV0"):
        refusal = guard.api_refusal(_request(authorization=authorization))  # loopback is no excuse with a token
        assert refusal is not None and refusal.status_code == 401
        assert refusal.headers["WWW-Authenticate"] == "Bearer"
        assert b"AYBIZA_API_TOKEN" in refusal.body


@pytest.mark.parametrize("client", ["127.0.0.1", "::1", "10.1.2.3", None])
def test_without_an_api_token_the_local_one_is_needed_whatever_the_peer(tmp_path: Path, client: str | None) -> None:
    guard = Guard(_settings(tmp_path, twilio_auth_token=TOKEN))
    path = tmp_path / "api_token"
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    local = path.read_text().strip()
    assert guard.api_token == local and len(local) >= 32
    for authorization in (None, "Bearer anything", f"Basic {local}"):  # a loopback peer is no identity
        refusal = guard.api_refusal(_request(client=client, authorization=authorization))
        assert refusal is not None and refusal.status_code == 401
        assert b"api_token" in refusal.body  # says where the local token is
    assert guard.api_refusal(_request(client=client, authorization=f"Bearer {local}")) is None
    assert Guard(_settings(tmp_path, twilio_auth_token=TOKEN)).api_token == local  # kept across restarts


@pytest.mark.parametrize("exposure", [{"host": "0.0.0.0"}, {"host": "10.1.2.3"},
                                      {"public_url": "https://voice.example.com"}])
def test_a_server_reachable_beyond_loopback_needs_an_api_token(tmp_path: Path, exposure: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="AYBIZA_API_TOKEN is required"):
        Guard(_settings(tmp_path, twilio_auth_token=TOKEN, **exposure))
    guard = Guard(_settings(tmp_path, twilio_auth_token=TOKEN, api_token="s3cret", **exposure))
    assert guard.exposed and guard.api_token == "s3cret"


def test_the_local_api_token_can_follow_an_option_on_a_command_line(tmp_path: Path) -> None:
    token = local_api_token(Settings(data_dir=tmp_path))
    assert len(token) == 64 and all(c in "0123456789abcdef" for c in token), "hex: never a leading '-'"
    assert local_api_token(Settings(data_dir=tmp_path)) == token  # made once, then kept
