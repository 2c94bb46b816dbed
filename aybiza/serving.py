"""Serving the app: uvicorn with the limits a server on the internet needs.

uvicorn's own options do most of it: ``timeout_keep_alive`` closes idle
keep-alive connections, ``ws_ping_interval``/``ws_ping_timeout`` find dead
WebSocket peers, ``ws_max_size`` and ``h11_max_incomplete_event_size`` bound
a frame and a request head, ``server_header=False`` keeps the version to
itself, ``forwarded_allow_ips`` names the proxies whose ``X-Forwarded-For``
is believed.

What uvicorn lacks is a deadline for the request head (its keep-alive timer
starts only after a first response, and any byte resets it: a slowloris
client sending a header line every few seconds holds a socket for ever) and a
cap on connections. Both come through uvicorn's documented ``http=`` option,
which takes a protocol class: :func:`guarded_protocol` subclasses its h11
protocol (no HTTP parsing of ours) to

- close a connection that has not sent a complete request head within
  ``header_timeout_s`` of connecting or of its last response;
- keep at most ``max_connections`` connections before or between requests,
  and ``max_connections_per_ip`` from one address (trusted proxies exempt):
  when full, the oldest idle one is closed for the newcomer
  (:class:`ConnectionGate`), so a flood of silent sockets never keeps a
  health check or a webhook out; the newcomer goes only when no older one is
  idle.

Upgraded WebSockets leave the gate: the admission caps streams waiting for
their ``start``, and calls have their budgets. The file-descriptor limit is
raised to its hard limit at startup, and the connection cap kept well under it.

Why not another ASGI server: hypercorn's idle timer does cover the request
head, but it has no connection caps either, and its WebSockets run on wsproto
in pure Python, where uvicorn's run on ``websockets``' C-accelerated framing
that the capacity benchmarks were measured on.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any, Protocol

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import Settings
from .logs import Throttled

__all__ = ["ConnectionGate", "fd_limit", "guarded_protocol", "serve", "uvicorn_config"]

log = logging.getLogger("aybiza.serving")
_FDS_PER_CALL = 4  # the call's WebSocket and its providers' sockets
_FD_RESERVE = 64  # models, databases, logs, listening sockets


class Idle(Protocol):
    """A connection the gate can judge: idle ones (no request in progress) may be closed for newcomers."""

    @property
    def idle(self) -> bool: ...

    def close(self) -> None: ...


class ConnectionGate:
    """Connections before or between requests: at most ``max_total``, and ``max_per_client`` per address.

    Pure bookkeeping. A connection joins (:meth:`join`) at once; :meth:`excess` then says which connections to
    close to be within the caps again: the oldest idle ones first (a newcomer is the newest, so it goes only
    when no older one is idle). Asked a loop iteration after the connection came, it lets heads that had
    already arrived be read first, so those connections are busy, not idle, when the gate chooses.
    """

    def __init__(self, max_total: int, max_per_client: int, trusted: Collection[str] = ()) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.trusted = frozenset(trusted)
        self._open: OrderedDict[Idle, str] = OrderedDict()  # oldest first
        self._per_client: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def join(self, connection: Idle, client: str) -> None:
        """Count ``connection`` (from ``client``)."""
        self._open[connection] = client
        self._per_client[client] = self._per_client.get(client, 0) + 1

    def excess(self, connection: Idle) -> list[Idle]:
        """The connections to close, oldest idle first, for the caps to hold with ``connection`` in; forgotten."""
        client = self._open.get(connection)
        if client is None:
            return []
        victims: list[Idle] = []
        trusted = client in self.trusted or "*" in self.trusted
        while not trusted and self._per_client.get(client, 0) > self.max_per_client:
            victim = self._oldest_idle(client)
            if victim is None:
                break
            self.leave(victim)
            victims.append(victim)
        while len(self._open) > self.max_total:
            victim = self._oldest_idle(None)
            if victim is None:
                break  # every connection is busy with a request: they finish soon
            self.leave(victim)
            victims.append(victim)
        return victims

    def leave(self, connection: Idle) -> None:
        """Forget ``connection`` (closed, or upgraded to a WebSocket); idempotent."""
        client = self._open.pop(connection, None)
        if client is None:
            return
        left = self._per_client[client] - 1
        if left:
            self._per_client[client] = left
        else:
            del self._per_client[client]

    def _oldest_idle(self, client: str | None) -> Idle | None:
        for connection, owner in self._open.items():
            if (client is None or owner == client) and connection.idle:
                return connection
        return None


Refused = Callable[[str], None]
"""Told the reason (``header_timeout``, ``connection_cap``) whenever the gate or the deadline closes a connection."""


def guarded_protocol(gate: ConnectionGate, header_timeout_s: float, on_refusal: Refused | None = None,
                     ) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a request-head deadline and the gate's connection caps."""
    throttled = Throttled(log)

    def refused(reason: str, client: str) -> None:
        if on_refusal is not None:
            on_refusal(reason)
        throttled.warning(reason, "closed a connection from %s: %s", client or "?", reason.replace("_", " "))

    class GuardedH11Protocol(H11Protocol):
        """H11Protocol + a deadline for each request head + the connection gate."""

        _deadline: asyncio.TimerHandle | None = None
        _upgraded = False

        @property
        def idle(self) -> bool:
            """No request in progress: waiting for a first or next request head."""
            return not self._upgraded and (self.cycle is None or self.cycle.response_complete)

        def close(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            gate.join(self, self.client[0] if self.client else "")
            self.loop.call_soon(self._enforce)  # after the heads already here are read
            self._arm()

        def _enforce(self) -> None:
            for victim in gate.excess(self):
                refused("connection_cap", self.client[0] if self.client else "")
                victim.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            gate.leave(self)
            super().connection_lost(exc)

        def handle_events(self) -> None:
            scope = self.scope
            super().handle_events()
            if self.scope is not scope:  # a request head arrived
                self._disarm()

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._disarm()
            self._upgraded = True
            gate.leave(self)
            super().handle_websocket_upgrade(event)

        def on_response_complete(self) -> None:
            scope = self.scope
            super().on_response_complete()
            if self.scope is scope and not self.transport.is_closing():
                self._arm()  # the next request head is due within the deadline too

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing() and self.idle:
                refused("header_timeout", self.client[0] if self.client else "")
                self.transport.close()

    return GuardedH11Protocol


def fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft)


def uvicorn_config(app: Any, settings: Settings, *, on_refusal: Refused | None = None,
                   files: int | None = None) -> uvicorn.Config:
    """The uvicorn configuration ``aybiza serve`` runs ``app`` with (``files``: the open-file limit)."""
    files = fd_limit() if files is None else files
    cap = max(16, min(settings.max_connections, files // 4))
    needed = _FD_RESERVE + _FDS_PER_CALL * settings.max_calls + cap + settings.max_pending_streams
    if files < needed:
        log.warning("the open-file limit (%d) is low for %d calls: raise it (ulimit -n %d) or lower "
                    "AYBIZA_MAX_CALLS; HTTP connections are capped at %d meanwhile", files, settings.max_calls,
                    needed, cap)
    trusted = [address.strip() for address in settings.forwarded_allow_ips.split(",") if address.strip()]
    gate = ConnectionGate(cap, settings.max_connections_per_ip, trusted)
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, lifespan="on",
        http=guarded_protocol(gate, settings.header_timeout_s, on_refusal),
        ws_max_size=settings.max_message_bytes, ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s, ws_per_message_deflate=False,
        timeout_keep_alive=settings.keepalive_timeout_s, h11_max_incomplete_event_size=16 * 1024,
        forwarded_allow_ips=trusted, proxy_headers=True, server_header=False)


def serve(app: Any, settings: Settings) -> None:
    """Serve ``app`` (from :func:`aybiza.server.create_app`) until interrupted; SIGTERM drains it first
    (:mod:`aybiza.drain`)."""
    runtime = getattr(getattr(app, "state", None), "aybiza", None)
    on_refusal = (lambda reason: runtime.metrics.refused("http", reason)) if runtime is not None else None
    config = uvicorn_config(app, settings, on_refusal=on_refusal)
    if runtime is None:
        uvicorn.Server(config).run()
        return
    from .drain import DrainingServer  # SIGTERM drains the node first (scale-out, issue 16)

    DrainingServer(config, runtime).run()
