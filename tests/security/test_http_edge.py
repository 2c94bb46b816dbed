"""The HTTP edge of a real ``aybiza serve`` (issue 15, items 6-8): the API behind a TCP forwarder and a
rebinding Host, data at rest after a call, and the smaller items one by one.
"""

from __future__ import annotations

import socket
import stat
import threading
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest
from e2e.server import AUTH_TOKEN, Server, running_server
from twilio.request_validator import RequestValidator

from aybiza.testing.caller import CallReport, Say, Wait, caller_speech, place_call
from aybiza.testing.processes import free_port
from aybiza.testing.twilio_caller import new_sid

from .attack import record_figures, stream_with, token_for

pytestmark = pytest.mark.slow

CALLER = "+447700900123"
QUESTION = "what are your opening hours"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("edge")) as running:
        yield running


@pytest.fixture(scope="module")
def call(server: Server) -> CallReport:
    """One real call, with a caller number and words that must stay out of the INFO log."""
    report = anyio.run(lambda: place_call(server.stream_url, [Wait(8), Say(caller_speech(QUESTION)), Wait(20)],
                                          auth_token=AUTH_TOKEN, caller=CALLER))
    assert report.close_code == 1000 and report.turns
    return report


@pytest.fixture
def forwarder(server: Server) -> Iterator[int]:
    """A plain TCP forwarder (socat-like) on all addresses to the loopback server: anyone reaching it looks local."""
    listener = socket.create_server(("0.0.0.0", free_port()))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            target.close()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", server.port))
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(5)
    listener.close()


def _this_machine() -> str:
    """An address of this machine other than loopback, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


# -- 6. the API -------------------------------------------------------------------------------------------


def test_the_api_through_a_tcp_forwarder_without_a_token_is_refused(server: Server, call: CallReport,
                                                                   forwarder: int) -> None:
    address = _this_machine()
    via = f"http://{address}:{forwarder}"
    plain = httpx.get(f"{via}/api/calls", timeout=5)
    assert plain.status_code in (400, 401, 403)  # the forwarder's own name is not this server's Host
    spoofed = {"host": f"127.0.0.1:{server.port}"}  # ... and with a perfect loopback Host: still no token
    for path in ("/api/calls", f"/api/calls/{call.call_sid}", "/api/calls?limit=500",
                 "/calls", f"/calls/{call.call_sid}", f"/calls/{call.call_sid}/recording"):  # and the console
        response = httpx.get(f"{via}{path}", headers=spoofed, timeout=5)
        assert response.status_code == 401, (path, response.text)
        assert CALLER not in response.text
    good = httpx.get(f"{via}/api/calls/{call.call_sid}", headers=spoofed | server.api, timeout=5)
    assert good.status_code == 200 and good.json()["caller"] == CALLER  # the token is what opens it
    record_figures("api_via_forwarder", forwarder=f"{address}:{forwarder}", without_token=401, plain=plain.status_code)


@pytest.mark.parametrize("path", ["/api/calls", "/dashboard", "/api/dashboard", "/metrics", "/", "/calls"])
def test_a_rebinding_host_is_refused(server: Server, path: str) -> None:
    response = httpx.get(f"{server.http}{path}", headers={"host": f"rebind.attacker.example:{server.port}"} |
                         server.api, timeout=5)
    assert response.status_code == 400


# -- 7. data at rest --------------------------------------------------------------------------------------


def test_call_data_is_the_owners_alone(server: Server, call: CallReport) -> None:
    data = server.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [path for path in data.rglob("*") if path.is_file() and "models" not in path.parts]
    assert {"calls-archive.db", "calls-live.db", "api_token"} <= {path.name for path in files}
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files if path.exists()}
    assert all(mode == 0o600 for mode in modes.values()), modes
    assert any(name.endswith("-wal") for name in modes)  # the WAL with the recent writes is private too
    record_figures("data_at_rest", directory=oct(stat.S_IMODE(data.stat().st_mode)),
                   files={name: oct(mode) for name, mode in sorted(modes.items())})


def test_no_caller_number_or_words_in_the_log_at_info(server: Server, call: CallReport) -> None:
    log = server.log()
    assert "call ended" in log
    assert CALLER not in log and CALLER.lstrip("+") not in log
    assert "opening hours" not in log.lower() and "monday" not in log.lower()


# -- 8. the smaller items ---------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["limit=-1", "limit=0", "limit=100000", "offset=-5",
                                   "offset=99999999999999999999999999", "limit=1e9"])
def test_pagination_is_bounded_and_never_a_500(server: Server, query: str) -> None:
    response = httpx.get(f"{server.http}/api/calls?{query}", headers=server.api, timeout=5)
    assert response.status_code == 400 and "Traceback" not in response.text


def test_a_deeply_nested_offer_is_a_400_or_413(server: Server) -> None:
    for size, status in ((100_000, 413), (60_000, 400)):
        response = httpx.post(f"{server.http}/webrtc/offer", content=b"[" * size, timeout=10)
        assert response.status_code == status


def test_an_offer_without_a_dtls_fingerprint_is_refused(server: Server) -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    response = httpx.post(f"{server.http}/webrtc/offer", json={"sdp": sdp, "type": "offer"}, timeout=5)
    assert response.status_code == 400 and "fingerprint" in response.text


def test_an_offer_from_another_sites_page_is_refused(server: Server) -> None:
    response = httpx.post(f"{server.http}/webrtc/offer", json={"sdp": "v=0", "type": "offer"},
                          headers={"origin": "https://attacker.example"}, timeout=5)
    assert response.status_code == 403


def test_an_unsigned_300_mb_webhook_is_refused_before_its_body(server: Server) -> None:
    for headers, expected in (("", b"403"), ("X-Twilio-Signature: forged\r\n", b"413")):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall((f"POST /twiml HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{headers}"
                      "Content-Type: multipart/form-data; boundary=x\r\n"
                      f"Content-Length: {300 << 20}\r\n\r\n").encode() + b"x" * 65536)
        sock.settimeout(5)
        started = time.monotonic()
        reply = sock.recv(4096)
        sock.close()
        assert reply.split(b" ")[1] in (expected, b"415"), reply[:80]  # answered without the 300 MB
        assert time.monotonic() - started < 2


def test_ids_with_control_characters_or_40_kb_never_reach_the_log_or_the_store(server: Server) -> None:
    forged = "CA" + "1" * 32 + "\n2026-01-01 12:00:00,000 INFO  aybiza.call [CAx] call ended: hangup"
    for call_sid in (forged, "CA" + "1" * 40_000):
        params = {"CallSid": call_sid, "AccountSid": new_sid("AC"), "From": "+1555\r\nforged"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{server.http}/twiml", params)
        response = httpx.post(f"{server.http}/twiml", data=params, headers={"X-Twilio-Signature": signature},
                              timeout=10)
        assert response.status_code in (400, 413)

    async def start_with_a_forged_sid() -> tuple[int | None, str]:
        call_sid, account = new_sid("CA"), new_sid("AC")
        _, token = await token_for(server, call_sid, account_sid=account)
        return await stream_with(server, token, call_sid=forged, account_sid=account)

    code, _ = anyio.run(start_with_a_forged_sid)
    assert code == 1008
    lines = server.log().splitlines()
    assert not any(line.startswith("2026-01-01 12:00:00,000") for line in lines)  # no forged line
    listing = httpx.get(f"{server.http}/api/calls?limit=500", headers=server.api, timeout=5).json()
    assert all(len(c["call_id"]) <= 34 and "\n" not in c["call_id"] for c in listing["calls"] + listing["active"])


def test_one_captured_webhook_mints_three_tokens_not_thousands(server: Server) -> None:
    params = {"CallSid": new_sid("CA"), "AccountSid": new_sid("AC"), "From": "+15555550100"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{server.http}/twiml", params)
    started = time.monotonic()
    statuses: list[int] = []
    with httpx.Client(timeout=5) as client:
        while time.monotonic() - started < 5:
            statuses.append(client.post(f"{server.http}/twiml", data=params,
                                        headers={"X-Twilio-Signature": signature}).status_code)
    assert statuses.count(200) == 3 and set(statuses[3:]) == {429}
    record_figures("webhook_replay", posts=len(statuses), tokens_minted=statuses.count(200), seconds=5)


def test_html_carries_the_security_headers(server: Server) -> None:
    for path in ("/", "/dashboard", "/console/login"):
        response = httpx.get(f"{server.http}{path}", timeout=5)
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
