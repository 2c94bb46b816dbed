"""Mid-call failover: one turn, tried region after region until one answers.

The executor is generic over a ``stream_turn(region, messages)`` callable that
streams the assistant's text for a conversation from one region (a Bedrock
ConverseStream adapter in production, a fake server in tests). For each turn it
walks the route's regions in order:

* a region whose breaker refuses is skipped (no request is sent);
* the first chunk must arrive within ``first_token_timeout_s`` (bounded by the
  turn's ``turn_deadline_s``), and later chunks within ``stall_timeout_s`` of each
  other; missing either is a :class:`~aybiza.errors.ProviderTimeout`;
* a retryable failure (``RetryableError``, a broken or refused connection, a
  timeout) moves the *same* turn, with the full conversation, to the next region;
  if text was already streamed, it is sent along as an assistant prefill (trailing
  whitespace removed, as Claude requires) so the next region continues the
  sentence instead of repeating it, and whitespace the caller already heard is
  dropped from the continuation (never spoken twice);
* an empty chunk is progress without text (the model writing a tool call): it
  meets the first-token deadline and resets the stall timer, and is passed on;
* a fatal provider error (bad request, credentials) is raised at once;
* retries beyond the first attempt draw on a :class:`RetryBudget` (20 % of turns
  plus a floor, over 10 s), so a global outage does not multiply the load, and
  ``max_attempts`` caps any one turn.

Every attempt is recorded (region, outcome, first-token time), and outcomes feed
the :class:`~aybiza.routing.health.HealthRegistry`, so the next route avoids the
region that failed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from aybiza.errors import ProviderError, ProviderTimeout, RetryableError, ThrottledError
from aybiza.routing.health import Clock, FailureKind, HealthRegistry

__all__ = [
    "Message",
    "StreamTurn",
    "FailoverPolicy",
    "RetryBudget",
    "Attempt",
    "TurnRecord",
    "TurnFailed",
    "FailoverTurn",
    "FailoverExecutor",
    "regions_tried",
]

Message = Mapping[str, str]
"""One conversation message: ``{"role": "user" | "assistant", "content": text}``."""

StreamTurn = Callable[[str, Sequence[Message]], AsyncIterator[str]]
"""Streams the assistant's reply to ``messages`` from one region, chunk by chunk.

If the last message has role ``assistant`` it is a prefill: the reply continues it.
An empty chunk says the model is producing something other than text (a tool call).
"""


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    """Deadlines and limits of one turn (docs/routing.md section 7.4).

    The first-token deadline adapts to the region: ``first_token_factor`` x its
    time-to-first-token estimate (peak-EWMA, from the health registry), never
    below ``first_token_timeout_s`` nor above ``first_token_cap_s``.
    """

    first_token_timeout_s: float = 1.0
    first_token_factor: float = 1.5
    first_token_cap_s: float = 2.5
    stall_timeout_s: float = 0.5
    turn_deadline_s: float = 4.0
    max_attempts: int = 3
    continue_partial: bool = True
    close_timeout_s: float = 0.2


class RetryBudget:
    """Finagle-style retry budget: ``percent`` of recent turns plus ``min_per_s`` x ``ttl_s``."""

    def __init__(
        self, percent: float = 0.2, min_per_s: float = 2.0, ttl_s: float = 10.0, clock: Clock = time.monotonic
    ) -> None:
        self.percent = percent
        self.min_per_s = min_per_s
        self.ttl_s = ttl_s
        self._clock = clock
        self._deposits: deque[float] = deque()
        self._withdrawals: deque[float] = deque()

    def deposit(self) -> None:
        """Count one turn (call once per turn, before its first attempt)."""
        self._deposits.append(self._clock())

    def try_withdraw(self) -> bool:
        """Take one retry if the budget allows it."""
        now = self._clock()
        horizon = now - self.ttl_s
        for queue in (self._deposits, self._withdrawals):
            while queue and queue[0] < horizon:
                queue.popleft()
        allowed = self.min_per_s * self.ttl_s + self.percent * len(self._deposits)
        if len(self._withdrawals) + 1 > allowed:
            return False
        self._withdrawals.append(now)
        return True


@dataclass(slots=True)
class Attempt:
    """One try of a turn in one region."""

    region: str
    started_at: float
    outcome: str = "pending"
    first_token_at: float | None = None
    ended_at: float | None = None
    error: str = ""
    chars: int = 0

    @property
    def ttft_s(self) -> float | None:
        """Time from the request to its first chunk."""
        return None if self.first_token_at is None else self.first_token_at - self.started_at


@dataclass(slots=True)
class TurnRecord:
    """What happened during one turn: every attempt, who answered, how long failover took."""

    started_at: float
    attempts: list[Attempt] = field(default_factory=list)
    answered_by: str | None = None
    first_token_at: float | None = None
    first_failure_at: float | None = None
    recovered_at: float | None = None
    budget_exhausted: bool = False

    @property
    def regions_tried(self) -> list[str]:
        """Regions a request was actually sent to, in order."""
        return [attempt.region for attempt in self.attempts if attempt.outcome != "skipped"]

    @property
    def failovers(self) -> int:
        """Attempts that failed over to another region."""
        return sum(1 for attempt in self.attempts if attempt.outcome not in ("ok", "skipped", "pending"))

    @property
    def failover_s(self) -> float | None:
        """From the first failure's detection to the next region's first chunk."""
        if self.first_failure_at is None or self.recovered_at is None:
            return None
        return self.recovered_at - self.first_failure_at


class TurnFailed(ProviderError):
    """No region answered the turn (every attempt failed, or the retry budget ran out)."""

    def __init__(self, message: str, record: TurnRecord) -> None:
        super().__init__(message, provider="llm", region=",".join(record.regions_tried))
        self.record = record


class FailoverTurn:
    """An async iterator over one turn's text; ``record`` fills in as it runs."""

    def __init__(self, executor: FailoverExecutor, regions: Sequence[str], messages: Sequence[Message]) -> None:
        self.record = TurnRecord(started_at=executor.clock())
        self._chunks = executor._stream(tuple(regions), tuple(messages), self.record)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks

    async def aclose(self) -> None:
        """Stop the turn early (barge-in); the open request is closed."""
        await self._chunks.aclose()


_RETRYABLE: tuple[type[BaseException], ...] = (RetryableError, OSError, EOFError)


class FailoverExecutor:
    """Runs turns through :data:`StreamTurn` with deadlines, failover and a retry budget."""

    def __init__(
        self,
        stream_turn: StreamTurn,
        *,
        health: HealthRegistry | None = None,
        budget: RetryBudget | None = None,
        policy: FailoverPolicy | None = None,
        clock: Clock = time.monotonic,
        retryable: tuple[type[BaseException], ...] = _RETRYABLE,
    ) -> None:
        self.stream_turn = stream_turn
        self.health = health
        self.budget = budget
        self.policy = policy or FailoverPolicy()
        self.clock = clock
        self.retryable = retryable
        self.failovers: dict[str, int] = {}
        """Failed attempts per region since start (for metrics)."""

    def turn(self, regions: Sequence[str], messages: Sequence[Message]) -> FailoverTurn:
        """Start a turn over ``regions`` (the route's region, then its fallbacks)."""
        return FailoverTurn(self, regions, messages)

    async def complete(self, regions: Sequence[str], messages: Sequence[Message]) -> tuple[str, TurnRecord]:
        """Run a whole turn and return its text and record."""
        turn = self.turn(regions, messages)
        chunks = [chunk async for chunk in turn]
        return "".join(chunks), turn.record

    async def _stream(
        self, regions: tuple[str, ...], messages: tuple[Message, ...], record: TurnRecord
    ) -> AsyncGenerator[str, None]:
        policy, clock, health = self.policy, self.clock, self.health
        if self.budget is not None:
            self.budget.deposit()
        deadline = record.started_at + policy.turn_deadline_s
        spoken: list[str] = []
        last_error: BaseException | None = None
        sent = 0
        for region in regions:
            if sent >= policy.max_attempts or (not spoken and clock() >= deadline):
                break
            if health is not None and not health.allow_request(region):
                record.attempts.append(Attempt(region, clock(), outcome="skipped", error="breaker open"))
                continue
            if sent and self.budget is not None and not self.budget.try_withdraw():
                if health is not None:
                    health.release(region)
                record.budget_exhausted = True
                break
            sent += 1
            attempt = Attempt(region, clock())
            record.attempts.append(attempt)
            request = list(messages)
            said = "".join(spoken)
            prefill = said.rstrip()  # Claude rejects a prefill that ends in whitespace
            if prefill:
                request.append({"role": "assistant", "content": prefill})
            # The caller already heard that whitespace: drop it from the start of the continuation.
            trim_leading = said != prefill
            first_token_timeout = self._first_token_timeout(region)
            upstream = self.stream_turn(region, request)
            failure: BaseException | None = None
            kind = FailureKind.ERROR
            finished = False
            try:
                while True:
                    if attempt.first_token_at is None:
                        timeout = first_token_timeout
                        if not spoken:  # a continuation is already audible: only the plain deadline
                            timeout = max(0.0, min(timeout, deadline - clock()))
                    else:
                        timeout = policy.stall_timeout_s
                    try:
                        with anyio.fail_after(timeout):
                            chunk = await upstream.__anext__()
                    except StopAsyncIteration:
                        finished = True
                        break
                    except TimeoutError:
                        first = attempt.first_token_at is None
                        kind = FailureKind.FIRST_TOKEN if first else FailureKind.STALL
                        what = "no first token" if first else "stream stalled"
                        failure = ProviderTimeout(f"{what} after {timeout:.2f} s", provider="llm", region=region)
                        break
                    except self.retryable as exc:
                        kind = _failure_kind(exc, streaming=attempt.first_token_at is not None)
                        failure = exc
                        break
                    except ProviderError as exc:  # fatal: no other region will accept it either
                        attempt.outcome, attempt.error, attempt.ended_at = "fatal", repr(exc), clock()
                        if health is not None:
                            health.release(region)
                        raise
                    if attempt.first_token_at is None:
                        attempt.first_token_at = clock()
                        if record.first_token_at is None:
                            record.first_token_at = attempt.first_token_at
                        if record.first_failure_at is not None and record.recovered_at is None:
                            record.recovered_at = attempt.first_token_at
                    if not chunk:
                        yield chunk  # progress, not text: nothing is spoken, nothing becomes a prefill
                        continue
                    if trim_leading:
                        chunk = chunk.lstrip()
                        if not chunk:
                            continue
                        trim_leading = False
                    attempt.chars += len(chunk)
                    spoken.append(chunk)
                    yield chunk
            except BaseException:
                # The consumer went away (barge-in, cancellation) or a fatal error: no verdict.
                if attempt.outcome == "pending":
                    attempt.outcome, attempt.ended_at = "cancelled", clock()
                    if health is not None:
                        health.release(region)
                await self._close(upstream)
                raise
            if finished:
                attempt.outcome, attempt.ended_at = "ok", clock()
                record.answered_by = region
                if health is not None:
                    health.record_success(region, attempt.ttft_s)
                await self._close(upstream)
                return
            assert failure is not None
            attempt.outcome, attempt.error, attempt.ended_at = str(kind), repr(failure), clock()
            if record.first_failure_at is None:
                record.first_failure_at = attempt.ended_at
            self.failovers[region] = self.failovers.get(region, 0) + 1
            if health is not None:
                health.record_failure(region, kind)
            last_error = failure
            await self._close(upstream)
            if spoken and not policy.continue_partial:
                break
        tried = ", ".join(record.regions_tried) or "none"
        why = "retry budget exhausted" if record.budget_exhausted else "no region answered"
        raise TurnFailed(f"turn failed: {why} (tried {tried})", record) from last_error

    def _first_token_timeout(self, region: str) -> float:
        policy = self.policy
        estimate_ms = self.health.ttft_ms(region) if self.health is not None else None
        if estimate_ms is None:
            return policy.first_token_timeout_s
        adaptive = policy.first_token_factor * estimate_ms / 1000.0
        return min(policy.first_token_cap_s, max(policy.first_token_timeout_s, adaptive))

    async def _close(self, upstream: AsyncIterator[str]) -> None:
        aclose = getattr(upstream, "aclose", None)
        if aclose is None:
            return
        with anyio.move_on_after(self.policy.close_timeout_s, shield=True):
            try:
                await aclose()
            except Exception:  # a broken stream may fail to close; it is being dropped anyway
                pass


def _failure_kind(exc: BaseException, *, streaming: bool) -> FailureKind:
    if isinstance(exc, ThrottledError):
        return FailureKind.THROTTLED
    if isinstance(exc, ProviderTimeout):
        return FailureKind.STALL if streaming else FailureKind.FIRST_TOKEN
    if _broken_connection(exc):
        return FailureKind.CONNECT
    return FailureKind.ERROR


def _broken_connection(exc: BaseException) -> bool:
    """Is a refused, reset or dropped connection at the root of ``exc`` (SDKs wrap them)?"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, EOFError) or (isinstance(current, OSError) and not isinstance(current, TimeoutError)):
            return True
        current = current.__cause__ or current.__context__
    return False


def regions_tried(records: Iterable[TurnRecord]) -> list[str]:
    """Every region a call's turns sent a request to, first use first (for the call record)."""
    seen: dict[str, None] = {}
    for record in records:
        for region in record.regions_tried:
            seen.setdefault(region, None)
    return list(seen)
