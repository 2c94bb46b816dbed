"""Serving: the connection gate, and uvicorn with a request-head deadline and connection caps.

The protocol tests run a real uvicorn (in a thread) with :func:`aybiza.serving.uvicorn_config` around a
one-route app, and talk to it over raw sockets as a slowloris client would.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aybiza.config import Settings
from aybiza.serving import ConnectionGate, uvicorn_config
from aybiza.testing.processes import free_port


class Conn:
    def __init__(self, name: str, idle: bool = True) -> None:
        self.name = name
        self.idle = idle
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return self.name


def _join(gate: ConnectionGate, connection: Conn, client: str) -> list[Conn]:
    gate.join(connection, client)
    return gate.excess(connection)  # type: ignore[return-value]


def test_the_gate_lets_the_oldest_idle_connection_go_for_a_newcomer() -> None:
    gate = ConnectionGate(max_total=3, max_per_client=2)
    a, b, c = Conn("a"), Conn("b", idle=False), Conn("c")
    assert _join(gate, a, "10.0.0.1") == [] and _join(gate, b, "10.0.0.1") == []
    assert _join(gate, c, "10.0.0.1") == [a]  # the client's third: its oldest idle one goes
    d = Conn("d")
    assert _join(gate, d, "10.0.0.2") == [] and len(gate) == 3
    e = Conn("e")
    assert _join(gate, e, "10.0.0.3") == [c]  # the total is full: the oldest idle anywhere goes
    gate.leave(e)
    gate.leave(e)  # idempotent
    assert len(gate) == 2


def test_the_newcomer_goes_only_when_no_older_one_is_idle() -> None:
    gate = ConnectionGate(max_total=2, max_per_client=10)
    assert _join(gate, Conn("a", idle=False), "x") == [] and _join(gate, Conn("b", idle=False), "y") == []
    newcomer = Conn("c")
    assert _join(gate, newcomer, "z") == [newcomer] and len(gate) == 2
    busy = Conn("d", idle=False)  # its head was read before the gate chose: it is not cut off mid-request
    assert _join(gate, busy, "z") == [] and len(gate) == 3


def test_trusted_proxies_are_not_held_to_the_per_client_cap() -> None:
    gate = ConnectionGate(max_total=100, max_per_client=2, trusted=["127.0.0.1"])
    assert all(_join(gate, Conn(str(n)), "127.0.0.1") == [] for n in range(50))


async def _health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@contextmanager
def _server(tmp_path: Path, **values: object) -> Iterator[tuple[int, uvicorn.Server, list[str]]]:
    port = free_port()
    refusals: list[str] = []
    settings = Settings(data_dir=tmp_path, port=port, **values)  # type: ignore[arg-type]
    app = Starlette(routes=[Route("/health", _health)])
    config = uvicorn_config(app, settings, on_refusal=refusals.append, files=20000)
    config.lifespan = "off"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port, server, refusals
    finally:
        server.should_exit = True
        thread.join(10)


def _slowloris(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return sock


def _closed(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_connection_without_a_complete_request_head_is_closed_at_the_deadline(tmp_path: Path) -> None:
    with _server(tmp_path, header_timeout_s=0.8) as (port, _, refusals):
        sock = _slowloris(port)
        started = time.monotonic()
        for _ in range(4):  # a header line every 0.3 s: each byte would reset uvicorn's own keep-alive timer
            time.sleep(0.3)
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        assert _closed(sock, 2.0)
        assert 0.7 <= time.monotonic() - started <= 2.5
        assert "header_timeout" in refusals
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).text == "ok"


def test_a_kept_alive_connection_must_send_its_next_head_in_time_too(tmp_path: Path) -> None:
    with _server(tmp_path, header_timeout_s=0.8, keepalive_timeout_s=30) as (port, _, _refusals):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b"200 OK" in sock.recv(4096)
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # then dribbles
        assert _closed(sock, 3.0)


def test_a_flood_of_idle_connections_never_keeps_a_request_out(tmp_path: Path) -> None:
    with _server(tmp_path, header_timeout_s=30, max_connections=20, max_connections_per_ip=10,
                 forwarded_allow_ips="192.0.2.1") as (port, server, refusals):
        flood = [_slowloris(port) for _ in range(200)]
        time.sleep(0.5)
        held = len(server.server_state.connections)
        assert held <= 11  # the per-address cap (and the newest, about to be judged)
        for _ in range(20):
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).text == "ok"
        assert refusals.count("connection_cap") >= 190
        for sock in flood:
            sock.close()


def test_pings_timeouts_and_limits_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, ws_ping_interval_s=7, ws_ping_timeout_s=3, keepalive_timeout_s=4,
                        max_message_bytes=4096)
    config = uvicorn_config(Starlette(), settings, files=20000)
    assert (config.ws_ping_interval, config.ws_ping_timeout, config.timeout_keep_alive) == (7, 3, 4)
    assert config.ws_max_size == 4096 and config.h11_max_incomplete_event_size == 16 * 1024
    assert not config.server_header and not config.ws_per_message_deflate


def test_a_low_open_file_limit_caps_connections_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uvicorn_config(Starlette(), Settings(data_dir=tmp_path), files=300)
    assert "open-file limit (300) is low" in caplog.text
