"""Admission: how many calls of each kind this process takes at once, and who may knock how often.

Phone and browser calls have separate budgets inside the process's total,
so browser sessions can never take the slots phone callers need; a kind may
also be capped per client address. A :class:`Ticket` holds a slot from
admission until the call's session ends.

Before a call is admitted its connection may be waiting: a Media Stream
accepted but not yet sent its ``start`` (the call token is checked there).
Waiting streams are capped in total and per address, and take no call slot;
when a cap is reached the *oldest* waiting stream is let go
(:meth:`Admission.wait_for_start`), so a flood of silent sockets cannot
keep a real call's stream from starting. Browser offers pass a token bucket
per address (:meth:`Admission.allow_offer`) before any SDP is parsed.

Pure bookkeeping: no I/O, an injectable clock; the transports act on its answers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

__all__ = ["Admission", "RateLimit", "Ticket", "Waiting"]

_MAX_TRACKED_CLIENTS = 10_000  # rate-limit buckets kept; the least recently seen are forgotten (a full bucket)


class Ticket:
    """One admitted call's slot; :meth:`release` gives it back (idempotent)."""

    __slots__ = ("kind", "client", "_admission", "_released")

    def __init__(self, admission: Admission, kind: str, client: str = "") -> None:
        self.kind = kind
        self.client = client
        self._admission = admission
        self._released = False

    def release(self) -> None:
        """Give the slot back."""
        if not self._released:
            self._released = True
            self._admission._release(self)


class Waiting:
    """A connection waiting to become a call; :meth:`done` when it started or left (idempotent).

    ``let_go`` is called (once) if the connection must give way to a newer one.
    """

    __slots__ = ("client", "let_go", "_admission", "_done")

    def __init__(self, admission: Admission, client: str, let_go: Callable[[], object]) -> None:
        self.client = client
        self.let_go = let_go
        self._admission = admission
        self._done = False

    def done(self) -> None:
        """No longer waiting."""
        if not self._done:
            self._done = True
            self._admission._stop_waiting(self)


class RateLimit:
    """A token bucket per client: ``burst`` at once, then ``per_minute``."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = _MAX_TRACKED_CLIENTS) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def allow(self, client: str) -> bool:
        """Take one token from ``client``'s bucket if it has one."""
        now = self._clock()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return allowed

    def refund(self, client: str) -> None:
        """Give back the token an attempt took (it turned out to be no abuse: a right password)."""
        if client in self._buckets:
            tokens, at = self._buckets[client]
            self._buckets[client] = (min(self.burst, tokens + 1.0), at)

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` has a token again."""
        tokens, at = self._buckets.get(client, (self.burst, self._clock()))
        tokens = min(self.burst, tokens + (self._clock() - at) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


class Admission:
    """Per-kind, per-client and total call budgets; caps on waiting connections; offer rates."""

    def __init__(self, total: int, per_kind: Mapping[str, int] | None = None, *,
                 per_client: Mapping[str, int] | None = None, waiting_total: int = 256,
                 waiting_per_client: int = 32, offers: RateLimit | None = None) -> None:
        self.total = total
        self.per_kind = dict(per_kind or {})
        self.per_client = dict(per_client or {})
        self.counts: dict[str, int] = {}
        self._client_counts: dict[tuple[str, str], int] = {}
        self.waiting_total = waiting_total
        self.waiting_per_client = waiting_per_client
        self._waiting: OrderedDict[Waiting, None] = OrderedDict()  # oldest first
        self._waiting_by_client: dict[str, OrderedDict[Waiting, None]] = {}
        self.offers = offers or RateLimit(12.0, 6)
        self.let_go = 0  # waiting connections let go for newer ones, since start

    @property
    def active(self) -> int:
        """Calls admitted and not yet released."""
        return sum(self.counts.values())

    @property
    def waiting(self) -> int:
        """Connections waiting to become calls."""
        return len(self._waiting)

    def has_room(self, kind: str) -> bool:
        """Whether a call of ``kind`` could be admitted now (nothing is taken)."""
        return self.active < self.total and self.counts.get(kind, 0) < self.per_kind.get(kind, self.total)

    def admit(self, kind: str, client: str = "") -> Ticket | None:
        """A ticket for a call of ``kind``, or None when the total, the kind's or the client's budget is used up."""
        if not self.has_room(kind):
            return None
        count = self.counts.get(kind, 0)
        per_client = self.per_client.get(kind)
        if per_client is not None and self._client_counts.get((kind, client), 0) >= per_client:
            return None
        self.counts[kind] = count + 1
        if per_client is not None:
            self._client_counts[(kind, client)] = self._client_counts.get((kind, client), 0) + 1
        return Ticket(self, kind, client)

    def allow_offer(self, client: str) -> bool:
        """Whether ``client`` may make another browser offer now (its token bucket)."""
        return self.offers.allow(client)

    def wait_for_start(self, client: str, let_go: Callable[[], object]) -> Waiting:
        """Count a connection as waiting; the oldest waiting one (this client's first) gives way if a cap is hit."""
        mine = self._waiting_by_client.setdefault(client, OrderedDict())
        if len(mine) >= self.waiting_per_client:
            self._give_way(next(iter(mine)))
        if len(self._waiting) >= self.waiting_total:
            self._give_way(next(iter(self._waiting)))
        waiting = Waiting(self, client, let_go)
        self._waiting[waiting] = None
        mine[waiting] = None
        return waiting

    def _give_way(self, oldest: Waiting) -> None:
        oldest.done()
        self.let_go += 1
        oldest.let_go()

    def _stop_waiting(self, waiting: Waiting) -> None:
        self._waiting.pop(waiting, None)
        mine = self._waiting_by_client.get(waiting.client)
        if mine is not None:
            mine.pop(waiting, None)
            if not mine:
                del self._waiting_by_client[waiting.client]

    def _release(self, ticket: Ticket) -> None:
        self.counts[ticket.kind] = max(0, self.counts.get(ticket.kind, 0) - 1)
        key = (ticket.kind, ticket.client)
        if key in self._client_counts:
            self._client_counts[key] -= 1
            if self._client_counts[key] <= 0:
                del self._client_counts[key]
