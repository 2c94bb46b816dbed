"""The failover executor: a turn moves to the next region with its context, never spoken twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
import pytest

from aybiza.errors import BadRequestError, OverloadedError, ThrottledError
from aybiza.routing.failover import (
    FailoverExecutor,
    FailoverPolicy,
    Message,
    RetryBudget,
    TurnFailed,
    regions_tried,
)
from aybiza.routing.health import BreakerState, FailureKind, HealthConfig, HealthRegistry

ANSWER = ["Hello ", "there, ", "how ", "can ", "I ", "help?"]
FULL = "".join(ANSWER)
FAST = FailoverPolicy(first_token_timeout_s=0.2, stall_timeout_s=0.2, turn_deadline_s=2.0)
CONVERSATION: list[Message] = [{"role": "user", "content": "hi"}]


class ScriptedRegions:
    """``stream_turn`` over scripted regions.

    Behaviours: ``ok``, ``refuse`` (connection refused), ``hang`` (never answers),
    ``stall:N`` (N chunks then silence), ``error:N`` (N chunks then 503), ``fatal``,
    ``throttle``. A trailing assistant message is a prefill: the answer continues after it.
    """

    def __init__(self, **behaviours: str) -> None:
        self.behaviours = {name.replace("_", "-"): b for name, b in behaviours.items()}
        self.requests: list[tuple[str, list[Message]]] = []
        self.closed: list[str] = []

    async def __call__(self, region: str, messages: Sequence[Message]) -> AsyncIterator[str]:
        self.requests.append((region, list(messages)))
        behaviour = self.behaviours.get(region, "ok")
        name, _, count = behaviour.partition(":")
        limit = int(count) if count else len(ANSWER)
        chunks = list(ANSWER)
        if messages and messages[-1]["role"] == "assistant":
            # Like a model given a prefill: continue the text right after it.
            assert not messages[-1]["content"].endswith(" "), "prefill must not end in whitespace"
            chunks = _after(messages[-1]["content"])
        try:
            if name == "refuse":
                raise ConnectionRefusedError(111, "Connection refused")
            if name == "fatal":
                raise BadRequestError("blank text block", provider="llm", region=region)
            if name == "throttle":
                raise ThrottledError("ThrottlingException", provider="llm", region=region)
            if name == "hang":
                await anyio.sleep(30)
            for index, chunk in enumerate(chunks):
                if index >= limit:
                    if name == "stall":
                        await anyio.sleep(30)
                    if name == "error":
                        raise OverloadedError("503 service unavailable", provider="llm", region=region)
                await anyio.sleep(0.001)
                yield chunk
        finally:
            self.closed.append(region)


def _after(prefix: str) -> list[str]:
    """The answer's chunks that follow ``prefix`` (the first one cut where the prefix ends)."""
    assert FULL.startswith(prefix)
    out, position = [], 0
    for token in ANSWER:
        end = position + len(token)
        if end > len(prefix):
            out.append(token[max(0, len(prefix) - position) :])
        position = end
    return out


def registry() -> HealthRegistry:
    return HealthRegistry(["r1", "r2", "r3"], HealthConfig(ejection_jitter=0.0))


REGIONS = ("r1", "r2", "r3")


@pytest.mark.anyio
async def test_a_healthy_region_answers_alone() -> None:
    fake = ScriptedRegions()
    health = registry()
    text, record = await FailoverExecutor(fake, health=health, policy=FAST).complete(REGIONS, CONVERSATION)
    assert text == FULL
    assert (record.answered_by, record.regions_tried, record.failovers) == ("r1", ["r1"], 0)
    assert record.attempts[0].ttft_s is not None
    assert health.tracker("r1").ttft.value is not None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [("refuse", "connect"), ("hang", "first_token"), ("error:0", "error")],
)
async def test_a_failure_before_the_first_token_moves_the_turn(behaviour: str, outcome: str) -> None:
    fake = ScriptedRegions(r1=behaviour)
    executor = FailoverExecutor(fake, health=registry(), policy=FAST)
    text, record = await executor.complete(REGIONS, CONVERSATION)
    assert text == FULL
    assert record.regions_tried == ["r1", "r2"]
    assert [a.outcome for a in record.attempts] == [outcome, "ok"]
    assert fake.requests[1] == ("r2", CONVERSATION)  # the same turn, the full context
    assert record.failover_s is not None and record.failover_s >= 0


@pytest.mark.anyio
async def test_a_stall_mid_stream_continues_from_the_spoken_text_never_repeating_it() -> None:
    fake = ScriptedRegions(r1="stall:2")
    heard: list[str] = []
    turn = FailoverExecutor(fake, health=registry(), policy=FAST).turn(REGIONS, CONVERSATION)
    async for chunk in turn:
        heard.append(chunk)
    assert "".join(heard) == FULL
    assert heard == ANSWER  # each chunk exactly once
    region, messages = fake.requests[1]
    assert region == "r2"
    # the prefill drops the trailing space; the continuation's leading space is not spoken again
    assert messages == [*CONVERSATION, {"role": "assistant", "content": "Hello there,"}]
    assert [a.outcome for a in turn.record.attempts] == ["stall", "ok"]
    assert turn.record.attempts[0].chars == len("Hello there, ")


@pytest.mark.anyio
async def test_without_continuation_a_broken_audible_turn_fails_rather_than_repeat() -> None:
    fake = ScriptedRegions(r1="error:3")
    policy = FailoverPolicy(first_token_timeout_s=0.2, stall_timeout_s=0.2, continue_partial=False)
    with pytest.raises(TurnFailed) as caught:
        await FailoverExecutor(fake, policy=policy).complete(REGIONS, CONVERSATION)
    assert caught.value.record.regions_tried == ["r1"]
    assert isinstance(caught.value.__cause__, OverloadedError)


@pytest.mark.anyio
async def test_failed_region_is_skipped_by_the_next_turn() -> None:
    fake = ScriptedRegions(r1="refuse")
    health = registry()
    executor = FailoverExecutor(fake, health=health, policy=FAST)
    _, first = await executor.complete(REGIONS, CONVERSATION)
    assert health.tracker("r1").breaker.state is BreakerState.OPEN
    _, second = await executor.complete(REGIONS, CONVERSATION)
    assert second.regions_tried == ["r2"]
    assert [(a.region, a.outcome) for a in second.attempts] == [("r1", "skipped"), ("r2", "ok")]
    assert regions_tried([first, second]) == ["r1", "r2"]
    assert executor.failovers == {"r1": 1}


@pytest.mark.anyio
async def test_a_fatal_error_is_not_retried_elsewhere() -> None:
    fake = ScriptedRegions(r1="fatal")
    health = registry()
    with pytest.raises(BadRequestError):
        await FailoverExecutor(fake, health=health, policy=FAST).complete(REGIONS, CONVERSATION)
    assert [region for region, _ in fake.requests] == ["r1"]
    assert health.tracker("r1").breaker.state is BreakerState.CLOSED  # not the region's fault


@pytest.mark.anyio
async def test_throttling_moves_the_turn_without_opening_the_breaker() -> None:
    fake = ScriptedRegions(r1="throttle")
    health = registry()
    text, record = await FailoverExecutor(fake, health=health, policy=FAST).complete(REGIONS, CONVERSATION)
    assert (text, record.answered_by) == (FULL, "r2")
    assert health.tracker("r1").breaker.state is BreakerState.CLOSED
    assert health.tracker("r1").throttle_weight < 1.0


@pytest.mark.anyio
async def test_every_region_failing_raises_with_the_record() -> None:
    fake = ScriptedRegions(r1="refuse", r2="error:0", r3="hang")
    with pytest.raises(TurnFailed, match="tried r1, r2, r3") as caught:
        await FailoverExecutor(fake, policy=FAST).complete(REGIONS, CONVERSATION)
    assert [a.outcome for a in caught.value.record.attempts] == ["connect", "error", "first_token"]


@pytest.mark.anyio
async def test_max_attempts_caps_one_turn() -> None:
    fake = ScriptedRegions(r1="refuse", r2="refuse", r3="refuse")
    policy = FailoverPolicy(first_token_timeout_s=0.2, max_attempts=2)
    with pytest.raises(TurnFailed):
        await FailoverExecutor(fake, policy=policy).complete(REGIONS, CONVERSATION)
    assert [region for region, _ in fake.requests] == ["r1", "r2"]


@pytest.mark.anyio
async def test_an_empty_retry_budget_stops_failover() -> None:
    fake = ScriptedRegions(r1="refuse")
    budget = RetryBudget(percent=0.0, min_per_s=0.0)
    with pytest.raises(TurnFailed, match="retry budget exhausted") as caught:
        await FailoverExecutor(fake, budget=budget, policy=FAST).complete(REGIONS, CONVERSATION)
    assert caught.value.record.budget_exhausted
    assert [region for region, _ in fake.requests] == ["r1"]


def test_retry_budget_allows_twenty_percent_plus_the_floor() -> None:
    now = [0.0]
    budget = RetryBudget(percent=0.2, min_per_s=2.0, ttl_s=10.0, clock=lambda: now[0])
    granted = 0
    for _ in range(1000):  # 1000 failing turns within 10 s
        budget.deposit()
        granted += budget.try_withdraw()
        now[0] += 0.01
    assert granted <= 200 + 20
    assert granted >= 200  # and it does not starve
    now[0] += 10.0  # the window has passed: retries are allowed again
    budget.deposit()
    assert budget.try_withdraw()


@pytest.mark.anyio
async def test_the_turn_deadline_bounds_the_wait_for_a_first_token() -> None:
    fake = ScriptedRegions(r1="hang", r2="hang", r3="hang")
    policy = FailoverPolicy(first_token_timeout_s=0.2, turn_deadline_s=0.3)
    with pytest.raises(TurnFailed) as caught:
        await FailoverExecutor(fake, policy=policy).complete(REGIONS, CONVERSATION)
    # r1 used 0.2 s, r2 got the remaining 0.1 s, r3 none
    assert caught.value.record.regions_tried == ["r1", "r2"]


@pytest.mark.anyio
async def test_barge_in_closes_the_stream_and_frees_the_half_open_trial() -> None:
    fake = ScriptedRegions()
    health = registry()
    tracker = health.tracker("r1")
    tracker.record_failure(FailureKind.STALL)
    for _ in range(2):
        tracker.record_probe(True, 0.01)  # probes end the open period: half-open
    assert tracker.breaker.state is BreakerState.HALF_OPEN
    turn = FailoverExecutor(fake, health=health, policy=FAST).turn(REGIONS, CONVERSATION)
    async for chunk in turn:
        assert chunk == ANSWER[0]
        break
    await turn.aclose()
    assert turn.record.attempts[0].outcome == "cancelled"
    assert fake.closed == ["r1"]
    assert health.allow_request("r1")  # the trial slot came back


class SlowFirstToken:
    """A region whose first chunk takes ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def __call__(self, region: str, messages: Sequence[Message]) -> AsyncIterator[str]:
        if region == "r1":
            await anyio.sleep(self.delay_s)
        for chunk in ANSWER:
            yield chunk


@pytest.mark.anyio
async def test_first_token_deadline_adapts_to_the_regions_measured_ttft() -> None:
    policy = FailoverPolicy(first_token_timeout_s=0.1, first_token_factor=1.5)
    health = registry()
    executor = FailoverExecutor(SlowFirstToken(0.3), health=health, policy=policy)
    _, record = await executor.complete(("r1", "r2"), CONVERSATION)
    assert record.answered_by == "r2"  # no estimate yet: the 0.1 s floor applies
    health = registry()
    health.record_success("r1", ttft_s=0.5)  # r1 is known to take ~0.5 s: 1.5 x 0.5 = 0.75 s allowed
    executor = FailoverExecutor(SlowFirstToken(0.3), health=health, policy=policy)
    _, record = await executor.complete(("r1", "r2"), CONVERSATION)
    assert record.answered_by == "r1"


class WrappedRefusal:
    """Like an SDK: a refused connection surfaces as a provider error caused by it."""

    async def __call__(self, region: str, messages: Sequence[Message]) -> AsyncIterator[str]:
        if region == "r1":
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except ConnectionRefusedError as exc:
                raise OverloadedError("EndpointConnectionError", provider="llm", region=region) from exc
        for chunk in ANSWER:
            yield chunk


@pytest.mark.anyio
async def test_a_wrapped_refused_connection_counts_as_a_hard_failure() -> None:
    health = registry()
    _, record = await FailoverExecutor(WrappedRefusal(), health=health, policy=FAST).complete(REGIONS, CONVERSATION)
    assert [a.outcome for a in record.attempts] == ["connect", "ok"]
    assert health.tracker("r1").breaker.state is BreakerState.OPEN


@pytest.mark.anyio
async def test_a_reply_that_is_only_a_tool_call_keeps_its_deadlines_with_empty_chunks() -> None:
    async def tool_call_only(region: str, messages: Sequence[Message]) -> AsyncIterator[str]:
        for _ in range(5):  # a tool call's arguments streaming: progress, no words
            await anyio.sleep(0.1)
            yield ""

    executor = FailoverExecutor(tool_call_only, health=registry(), policy=FAST)  # 0.2 s first token and stall
    turn = executor.turn(REGIONS, CONVERSATION)
    chunks = [chunk async for chunk in turn]
    assert chunks == [""] * 5, "progress is passed on, and never spoken"
    assert turn.record.answered_by == "r1" and turn.record.failovers == 0
    assert turn.record.attempts[0].ttft_s is not None and turn.record.attempts[0].chars == 0
