"""The post-call webhook sender: enqueue at call end, deliver in the background, retry, give up loudly.

A call's end only *writes* the delivery to the outbox (one insert in the
archive's database, after the caller's connection is closed): building the
summary (perhaps a model request) and sending happen in :meth:`PostCallResults.run`,
a background task of the server, so neither a slow receiver nor a slow model
ever delays a hangup. A failed attempt (connection refused, timeout, non-2xx)
is retried after ``base * 2**(attempt-1)`` seconds, capped, with half of it
random (equal jitter: receivers that come back are not hit by every process
at once); after ``max_attempts`` the delivery is marked ``failed``, logged
at ERROR and counted in ``aybiza_webhook_deliveries_total{outcome="failed"}``.

The body is built once, at the first attempt, and kept: every retry sends
the same bytes with the same ``X-Aybiza-Delivery`` id, so a receiver can
drop duplicates (a receiver that answered too late is sent it again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import httpx
from prometheus_client import CollectorRegistry, Counter

from ..agents import AgentConfig
from ..edge.records import CallRecord
from ..errors import AybizaError
from .outbox import Delivery, Outbox, with_state
from .signing import SIGNATURE_HEADER, signature_header
from .spec import WebhookSpec
from .summary import CallResults, extractive_results

__all__ = ["PostCallResults", "RetryPolicy", "Summarizer", "delivery_id"]

log = logging.getLogger("aybiza.results")

Summarizer = Callable[[CallRecord, AgentConfig | None, WebhookSpec], Awaitable[CallResults]]
"""Builds a call's summary and fields (a model request, or the extractive summary)."""

_USER_AGENT = "aybiza-webhook/1"
_ERROR_CHARS = 300


class RetryPolicy:
    """Exponential backoff with equal jitter, and the number of attempts before a delivery fails."""

    def __init__(self, *, max_attempts: int = 8, base_s: float = 5.0, max_s: float = 900.0,
                 rng: random.Random | None = None) -> None:
        self.max_attempts = max_attempts
        self.base_s = base_s
        self.max_s = max_s
        self._rng = rng or random.Random()

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** max(0, attempts - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)


def delivery_id(call_id: str, url: str) -> str:
    """One delivery per call and target: the same call ended twice is not sent twice."""
    return hashlib.sha256(f"{call_id}\n{url}".encode()).hexdigest()[:32]


async def _extractive(record: CallRecord, agent: AgentConfig | None, spec: WebhookSpec) -> CallResults:
    return extractive_results(record, agent, spec)


class PostCallResults:
    """Enqueues each ended call for its agent's webhook and delivers the outbox until cancelled."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        secret: Callable[[str], str | None],
        agent: Callable[[str], Awaitable[AgentConfig]],
        deliveries: Counter | None = None,
        summarizer: Summarizer | None = None,
        policy: RetryPolicy | None = None,
        poll_s: float = 5.0,
        batch: int = 8,
    ) -> None:
        self.outbox = outbox
        self._secret = secret
        self._agent = agent
        self.summarizer = summarizer or _extractive
        self.policy = policy or RetryPolicy()
        self.poll_s = poll_s
        self.batch = batch
        self._wake = anyio.Event()
        self._client: httpx.AsyncClient | None = None
        # The process's aybiza_webhook_deliveries_total (Metrics.webhook_deliveries), or a private one.
        self._count = deliveries if deliveries is not None else Counter(
            "webhook_deliveries", "Post-call webhook attempts by outcome", ["outcome"], namespace="aybiza",
            registry=CollectorRegistry())

    # -- the call path ---------------------------------------------------------------

    async def enqueue(self, record: CallRecord, agent: AgentConfig | None) -> Delivery | None:
        """Write ``record`` (as archived) to the outbox for ``agent``'s webhook; never raises."""
        spec = getattr(agent, "webhook", None) if agent is not None else None
        if not isinstance(spec, WebhookSpec):
            return None
        now = time.time()
        delivery = Delivery(id=delivery_id(record.call_id, spec.url), call_id=record.call_id,
                            agent_id=record.agent_id, url=spec.url, spec=spec.model_dump_json(),
                            record=record.to_json(), next_at=now, created_at=now, updated_at=now)
        try:
            added = await self.outbox.add(delivery)
        except Exception as error:  # the archive's database is down: the record is in its own outbox
            log.error("call %s: webhook not queued (%s: %s)", record.call_id, type(error).__name__, error)
            return None
        if added:
            self._wake.set()
        return delivery

    async def enqueue_interrupted(self, records: Sequence[CallRecord]) -> int:
        """Queue the calls a recovery archived as ``interrupted`` (their process died: nobody queued them);
        how many had a webhook. Never raises."""
        queued = 0
        for record in records:
            try:
                agent: AgentConfig | None = await self._agent(record.agent_id)
            except AybizaError as error:
                log.warning("call %s: no webhook for its interrupted record: agent %r unavailable (%s)",
                            record.call_id, record.agent_id, error)
                continue
            queued += await self.enqueue(record, agent) is not None
        return queued

    # -- the background ------------------------------------------------------------

    async def run(self) -> None:
        """Deliver what is due, then sleep until something is queued or ``poll_s`` passed; forever."""
        async with httpx.AsyncClient(follow_redirects=False) as client:
            self._client = client
            try:
                while True:
                    self._wake = anyio.Event()
                    try:
                        await self.deliver_due()
                    except Exception as error:  # the database blipped: next round
                        log.warning("webhook outbox: %s: %s", type(error).__name__, error)
                    with anyio.move_on_after(self.poll_s):
                        await self._wake.wait()
            finally:
                self._client = None

    async def deliver_due(self) -> int:
        """Claim and attempt every due delivery (a batch at a time, concurrently); how many were attempted."""
        attempted = 0
        while True:
            claimed = await self.outbox.claim(limit=self.batch, lease_s=self._lease_s())
            if not claimed:
                return attempted
            async with anyio.create_task_group() as tg:
                for delivery in claimed:
                    tg.start_soon(self._attempt, delivery)
            attempted += len(claimed)

    def _lease_s(self) -> float:
        return 120.0  # a model summary and a send with the longest timeout fit well inside

    async def _attempt(self, delivery: Delivery) -> None:
        spec = WebhookSpec.model_validate_json(delivery.spec)
        attempts = delivery.attempts + 1
        try:
            if delivery.body is None:
                delivery = with_state(delivery, body=await self._body(delivery, spec))
            await self._send(delivery, spec)
        except Exception as error:
            await self._failed_attempt(delivery, attempts, _describe(error))
            return
        await self.outbox.save(with_state(delivery, status="delivered", attempts=attempts, last_error=""))
        self._count.labels("delivered").inc()
        log.info("call %s: webhook delivered to %s (attempt %d)", delivery.call_id, _host(delivery.url), attempts)

    async def _failed_attempt(self, delivery: Delivery, attempts: int, error: str) -> None:
        if attempts >= self.policy.max_attempts:
            await self.outbox.save(with_state(delivery, status="failed", attempts=attempts, last_error=error))
            self._count.labels("failed").inc()
            log.error("call %s: webhook to %s failed after %d attempts: %s", delivery.call_id, _host(delivery.url),
                      attempts, error)
            return
        delay = self.policy.delay(attempts)
        await self.outbox.save(with_state(delivery, attempts=attempts, next_at=time.time() + delay,
                                          last_error=error))
        self._count.labels("retry").inc()
        log.warning("call %s: webhook to %s failed (attempt %d, next in %.1f s): %s", delivery.call_id,
                    _host(delivery.url), attempts, delay, error)

    async def _body(self, delivery: Delivery, spec: WebhookSpec) -> str:
        record = CallRecord.from_json(delivery.record)
        try:
            agent: AgentConfig | None = await self._agent(delivery.agent_id)
        except AybizaError:
            agent = None  # the agent file is gone or broken now: the summary does without its FAQ
        results = await self.summarizer(record, agent, spec)
        payload: dict[str, Any] = {
            "event": "call.ended",
            "delivery_id": delivery.id,
            "call_id": record.call_id,
            "agent_id": record.agent_id,
            "summary": results.summary,
            "fields": results.fields,
            "summary_source": results.source,
            "call": json.loads(delivery.record),
        }
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    async def _send(self, delivery: Delivery, spec: WebhookSpec) -> None:
        key = self._secret(spec.secret)
        if not key:
            raise _NotSent(f"the signing secret AYBIZA_SECRET_{spec.secret} is not set")
        body = (delivery.body or "").encode()
        headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT,
                   SIGNATURE_HEADER: signature_header(key, body), "X-Aybiza-Delivery": delivery.id,
                   "X-Aybiza-Event": "call.ended"}
        client = self._client
        if client is None:
            raise _NotSent("the sender is not running")
        async with client.stream("POST", delivery.url, content=body, headers=headers,
                                 timeout=spec.timeout_s) as response:
            if not 200 <= response.status_code < 300:
                raise _NotSent(f"HTTP {response.status_code}")


class _NotSent(Exception):
    """An attempt that did not get a 2xx."""


def _describe(error: BaseException) -> str:
    text = str(error) if isinstance(error, _NotSent) else f"{type(error).__name__}: {error}".rstrip(": ")
    return text[:_ERROR_CHARS]


def _host(url: str) -> str:
    """The receiver's host for logs (a webhook path may carry a token)."""
    return httpx.URL(url).host
