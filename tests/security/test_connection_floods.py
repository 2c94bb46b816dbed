"""Connection floods against a real ``aybiza serve`` run under ``ulimit -n 300`` (issue 15, item 5).

On main, 1,000 slowloris connections were held 50 s and, with the file limit at 300, the server stopped
answering, ``/health`` too; 2,000 sockets that never sent ``start`` were all held. Here: each slowloris
connection is closed at the request-head deadline (or earlier, to make room), ``/health`` answers
throughout, the server's open files stay under its limit, at most the per-address cap of silent streams
is held, and a phone call placed during the flood is answered.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import anyio
import httpx
import pytest
import websockets
from e2e.server import AUTH_TOKEN, Server

from aybiza.testing.caller import Say, Wait, caller_speech, place_call
from aybiza.testing.metrics import metric

from .attack import limited_server, open_files, record_figures, rss_mb

pytestmark = pytest.mark.slow

FILE_LIMIT = 300
HEADER_TIMEOUT_S = 3.0


ATTACKER = "127.0.0.2"
"""Another loopback address: where the flood comes from."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"AYBIZA_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "AYBIZA_STREAM_START_TIMEOUT_S": "10"}
    with limited_server(tmp_path_factory.mktemp("conns"), open_files_limit=FILE_LIMIT, env=env) as running:
        yield running


class HealthWatch:
    """Asks ``/health`` every 0.2 s on a fresh connection, from its own thread, until stopped."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.results: list[int | str] = []
        self.peak_files = 0
        self.peak_waiting = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = httpx.get(f"{self.server.http}/health", timeout=2)
                self.results.append(response.status_code)
                self.peak_waiting = max(self.peak_waiting, response.json().get("waiting_streams", 0))
            except httpx.HTTPError as error:
                self.results.append(type(error).__name__)
            self.peak_files = max(self.peak_files, open_files(self.server.process.pid))
            self._stop.wait(0.2)


def test_slowloris_connections_are_closed_at_the_head_deadline_and_health_answers(server: Server) -> None:
    rss_before = rss_mb(server.process.pid)
    sockets: list[tuple[socket.socket, float]] = []
    closed_after: list[float] = []
    with HealthWatch(server) as health:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sock.setblocking(False)
            sockets.append((sock, time.monotonic()))
        opened_all = time.monotonic()
        open_ones = dict(sockets)
        held_peak = 0
        while open_ones and time.monotonic() - opened_all < HEADER_TIMEOUT_S + 10:
            for sock, since in list(open_ones.items()):
                try:
                    gone = sock.recv(4096) == b""  # the server closed it
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if not gone:
                    try:
                        sock.send(b"X-Slow: 1\r\n")  # a header line now and then: never a complete head
                    except BlockingIOError:
                        pass
                    except OSError:
                        gone = True
                if gone:
                    closed_after.append(time.monotonic() - since)
                    del open_ones[sock]
            held_peak = max(held_peak, len(open_ones))
            time.sleep(0.5)
        still_open = len(open_ones)
        time.sleep(1)
    for sock, _ in sockets:
        sock.close()
    text = httpx.get(f"{server.http}/metrics", timeout=5).text
    assert still_open == 0, f"{still_open} slowloris connections still open"
    assert max(closed_after) <= HEADER_TIMEOUT_S + 2.0 + 1000 * 0.002  # the deadline, plus the time to open them
    assert health.results and set(health.results) == {200}, health.results  # answered throughout
    assert health.peak_files < FILE_LIMIT - 50
    refused = metric(text, "aybiza_refused_total", endpoint="http")
    assert refused >= 1000
    record_figures("slowloris", connections=1000, file_limit=FILE_LIMIT, header_timeout_s=HEADER_TIMEOUT_S,
                   longest_held_s=round(max(closed_after), 2), open_after_deadline=still_open,
                   client_side_open_peak=held_peak, server_open_files_peak=health.peak_files,
                   health_checks=len(health.results), health_ok=health.results.count(200),
                   closed_at_deadline=metric(text, "aybiza_refused_total", endpoint="http", reason="header_timeout"),
                   closed_for_room=metric(text, "aybiza_refused_total", endpoint="http", reason="connection_cap"),
                   rss_mb_before=round(rss_before), rss_mb_after=round(rss_mb(server.process.pid)))


@pytest.mark.anyio
async def test_two_thousand_silent_streams_and_a_phone_call_is_answered(server: Server) -> None:
    question = caller_speech("what are your opening hours")
    rss_before = rss_mb(server.process.pid)
    closes: Counter[str] = Counter()
    opened = 0
    held: list[websockets.ClientConnection] = []

    async def silent_socket(gate: anyio.Semaphore) -> None:
        nonlocal opened
        async with gate:
            try:
                # The attacker's own address (Twilio's is another): its streams give way to each other,
                # never to the phone call, however slowly a loaded machine lets that call send its start.
                ws = await websockets.connect(server.stream_url, open_timeout=20, ping_interval=None,
                                              local_addr=(ATTACKER, 0))
            except (OSError, TimeoutError, websockets.InvalidStatus, websockets.InvalidMessage):
                closes["refused"] += 1  # closed before its handshake: room made for newer connections
                return
            opened += 1
            held.append(ws)
            try:
                await ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')  # and never a start
            except websockets.ConnectionClosed:
                pass  # already let go for a newer one

    report_box: list[object] = []

    async def phone_call() -> None:
        await anyio.sleep(2)  # in the middle of the flood
        report_box.append(await place_call(server.stream_url, [Wait(8), Say(question), Wait(20)],
                                           auth_token=AUTH_TOKEN))

    with HealthWatch(server) as health:
        async with anyio.create_task_group() as tg:
            tg.start_soon(phone_call)
            gate = anyio.Semaphore(100)
            for _ in range(2000):
                tg.start_soon(silent_socket, gate)
        rss_flood = rss_mb(server.process.pid)
        for ws in held:  # how the server ended each one
            try:
                with anyio.fail_after(15):
                    await ws.wait_closed()
            except TimeoutError:
                pass
            closes[str(ws.close_code)] += 1
            await ws.close()
    report = report_box[0]
    assert report.close_code == 1000 and report.turns and report.turns[0].latency is not None  # type: ignore[attr-defined]
    assert health.peak_waiting <= 32 + 1  # the per-address cap of streams waiting for their start (+ the call)
    assert set(health.results) == {200}
    assert health.peak_files < FILE_LIMIT - 50
    assert closes["1013"] >= opened - 64  # let go for newer ones (the last ones at the start timeout)
    rss_after = rss_mb(server.process.pid)
    assert rss_flood - rss_before < 100
    record_figures("silent_streams", sockets=2000, accepted=opened, waiting_peak=health.peak_waiting,
                   closes=dict(closes), phone_call_answered=True,
                   phone_turn_latency_s=round(report.turns[0].latency or 0, 3),  # type: ignore[attr-defined]
                   server_open_files_peak=health.peak_files, rss_mb_before=round(rss_before),
                   rss_mb_during=round(rss_flood), rss_mb_after=round(rss_after))
