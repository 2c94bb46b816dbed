"""The durable outbox (SQLite and a real PostgreSQL) and the sender's retries against a real HTTP receiver."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from aybiza.agents import load_agent
from aybiza.edge.archive import PostgresArchive, SQLiteArchive
from aybiza.edge.records import CallRecord, TurnRecord
from aybiza.results.delivery import PostCallResults, RetryPolicy
from aybiza.results.outbox import Delivery, Outbox, open_outbox, with_state
from aybiza.results.signing import verify
from aybiza.testing.postgres_server import PostgresServer, postgres_bin_dir
from aybiza.testing.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
async def outboxes(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Outbox, Outbox]]:
    """Two outboxes on the same database, as two processes sharing an archive have."""
    if request.param == "sqlite":
        archive = SQLiteArchive(tmp_path / "calls-archive.db")
        pair = (open_outbox(archive), open_outbox(SQLiteArchive(tmp_path / "calls-archive.db")))
    else:
        import psycopg

        url = request.getfixturevalue("postgres").url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS aybiza_webhook_outbox")
        pair = (open_outbox(PostgresArchive(url)), open_outbox(PostgresArchive(url)))
    yield pair
    for outbox in pair:
        await outbox.aclose()


def _delivery(call_id: str, url: str = "http://127.0.0.1:9/hook", next_at: float = 0.0) -> Delivery:
    now = time.time()
    return Delivery(id=f"d-{call_id}", call_id=call_id, agent_id="default", url=url,
                    spec=f'{{"url": "{url}", "secret": "HOOK"}}', record=CallRecord(call_id=call_id).to_json(),
                    next_at=next_at or now, created_at=now, updated_at=now)


@pytest.mark.anyio
async def test_a_delivery_is_stored_once_and_claimed_by_one_process_at_a_time(outboxes: tuple[Outbox, Outbox]) -> None:
    one, other = outboxes
    assert await one.add(_delivery("CA1"))
    assert not await other.add(_delivery("CA1"))  # the same call ended twice is queued once
    assert await one.add(_delivery("CA2", next_at=time.time() + 3600))  # not due
    [claimed] = await one.claim(limit=10, lease_s=60)
    assert claimed.call_id == "CA1"
    assert await other.claim(limit=10, lease_s=60) == []  # leased to the first process
    await one.save(with_state(claimed, attempts=1, next_at=time.time(), last_error="HTTP 503"))
    [again] = await other.claim(limit=10, lease_s=60)  # released, due: the other process may take it
    assert (again.attempts, again.last_error) == (1, "HTTP 503")
    await other.save(with_state(again, status="delivered", attempts=2, body="{}"))
    assert await one.claim(limit=10, lease_s=60) == []
    stored = await one.get("d-CA1")
    assert stored is not None and (stored.status, stored.attempts, stored.body) == ("delivered", 2, "{}")
    assert [d.call_id for d in await one.list(status="pending")] == ["CA2"]


@pytest.mark.anyio
async def test_a_claim_left_by_a_dead_process_expires(outboxes: tuple[Outbox, Outbox]) -> None:
    one, other = outboxes
    await one.add(_delivery("CA3"))
    assert await one.claim(limit=1, lease_s=0.2)
    await anyio.sleep(0.3)
    assert [d.call_id for d in await other.claim(limit=1, lease_s=60)] == ["CA3"]


def _record() -> CallRecord:
    return CallRecord(call_id="CA9", caller="+15555550123", status="ended", outcome="hangup",
                      turns=[TurnRecord(turn_id=1, user="are you open on saturday", agent="Yes.")])


async def _settled(results: PostCallResults, outbox: Outbox, delivery_id: str) -> Delivery:
    """Run the delivery service until the delivery is no longer pending (10 s at most); its final state."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(results.run)
        deadline = time.monotonic() + 10
        while (delivery := await outbox.get(delivery_id)) is None or delivery.status == "pending":
            assert time.monotonic() < deadline
            await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert delivery is not None
    return delivery


async def _agent(agent_id: str):  # type: ignore[no-untyped-def]
    agent = load_agent("default", ROOT / "agents")
    return agent.model_copy(update={"webhook": None})


@pytest.mark.anyio
async def test_the_sender_retries_with_backoff_then_marks_the_delivery_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from aybiza.observability.metrics import Metrics
    from aybiza.results.spec import WebhookSpec

    metrics = Metrics()
    registry = metrics.registry
    with WebhookReceiver(status=503) as receiver:
        outbox = open_outbox(SQLiteArchive(tmp_path / "a.db"))
        results = PostCallResults(outbox, secret={"HOOK": "k"}.get, agent=_agent, deliveries=metrics.webhook_deliveries,
                                  policy=RetryPolicy(max_attempts=3, base_s=0.1, max_s=0.2), poll_s=0.05)
        agent = (await _agent("default")).model_copy(update={"webhook": WebhookSpec(url=receiver.url + "/h",
                                                                                     secret="HOOK")})
        queued = await results.enqueue(_record(), agent)
        assert queued is not None
        d = await _settled(results, outbox, queued.id)
        await outbox.aclose()
    assert (d.status, d.attempts, d.last_error) == ("failed", 3, "HTTP 503")
    assert len(receiver.received) == 3
    assert len({r.body for r in receiver.received}) == 1  # every retry sends the same bytes
    assert all(verify("k", r.headers["X-Aybiza-Signature"], r.body) for r in receiver.received)
    assert registry.get_sample_value("aybiza_webhook_deliveries_total", {"outcome": "retry"}) == 2
    assert registry.get_sample_value("aybiza_webhook_deliveries_total", {"outcome": "failed"}) == 1
    assert "failed after 3 attempts: HTTP 503" in caplog.text


@pytest.mark.anyio
async def test_a_missing_secret_never_sends_unsigned(tmp_path: Path) -> None:
    from aybiza.results.spec import WebhookSpec

    with WebhookReceiver() as receiver:
        outbox = open_outbox(SQLiteArchive(tmp_path / "a.db"))
        results = PostCallResults(outbox, secret=lambda name: None, agent=_agent,
                                  policy=RetryPolicy(max_attempts=1), poll_s=0.05)
        agent = (await _agent("default")).model_copy(update={"webhook": WebhookSpec(url=receiver.url,
                                                                                     secret="HOOK")})
        queued = await results.enqueue(_record(), agent)
        assert queued is not None
        d = await _settled(results, outbox, queued.id)
        await outbox.aclose()
    assert d.status == "failed" and "AYBIZA_SECRET_HOOK is not set" in d.last_error
    assert receiver.received == []
