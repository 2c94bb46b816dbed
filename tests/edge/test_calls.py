"""Call state on SQLite and on a real redis-server: lifecycle, fencing, recovery, outbox, API data."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest
import redis

from aybiza.edge.archive import Archive, SQLiteArchive
from aybiza.edge.calls import CallStore, open_call_store, read_calls
from aybiza.edge.records import CallRecord, Offer, TurnRecord
from aybiza.edge.redis_util import redis_client
from aybiza.edge.state import CallFenced, CallStateError, StateBackend
from aybiza.edge.state_redis import RedisState
from aybiza.edge.state_sqlite import SQLiteState
from aybiza.errors import ConfigError, EndReason
from aybiza.pipeline import CacheKind, CallContext, IncidentKind, Stage, Usage
from aybiza.testing.redis_server import free_port

pytestmark = pytest.mark.anyio

OpenStore = Callable[..., Awaitable[CallStore]]


@pytest.fixture(params=["sqlite", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores sharing one state backend location and one archive (like processes on one machine)."""
    opened: list[CallStore] = []

    def state() -> StateBackend:
        if request.param == "sqlite":
            return SQLiteState(tmp_path / "live.db")
        return RedisState(redis_client(request.getfixturevalue("redis_url")), owns_client=True, lease_s=5.0)

    async def make(*, archive: Archive | None = None, owner: str | None = None) -> CallStore:
        store = CallStore(state(), archive or SQLiteArchive(tmp_path / "archive.db"),
                          outbox_dir=tmp_path / "outbox", owner=owner)
        opened.append(store)
        return await store.open()

    yield make
    for store in opened:
        try:
            await store.aclose()
        except Exception:  # already closed by the test
            pass


def _turn(turn_id: int, user: str, agent: str) -> TurnRecord:
    return TurnRecord(turn_id=turn_id, user=user, agent=agent, timings={"llm_first_token": 0.05 * turn_id})


async def test_lifecycle_start_update_end_archives_before_returning(open_store: OpenStore) -> None:
    store = await open_store()
    started = await store.start(CallRecord(call_id="CA1", caller="+15550001", agent_id="default"))
    assert started.status == "active" and started.version == 1 and started.owner == store.owner
    await store.update("CA1", turn=_turn(1, "Hours?", "Nine to five."), language="en-GB")
    await store.update("CA1", turn=_turn(2, "Parking?", "Behind the building."))
    live = await store.get("CA1")
    assert live is not None and live.status == "active" and [t.user for t in live.turns] == ["Hours?", "Parking?"]

    ended = await store.end("CA1", outcome="hangup", usage=Usage(stt_seconds={"nova-3": 3.5}),
                            cost={"total_usd": "0.02"})
    archived = await store.archive.get("CA1")  # committed before end() returned
    assert archived == ended
    assert archived is not None and archived.status == "ended" and archived.outcome == "hangup"
    assert archived.language == "en-GB" and archived.usage == Usage(stt_seconds={"nova-3": 3.5})
    assert len(archived.turns) == 2
    assert archived.ended_at is not None and archived.ended_at >= archived.started_at
    assert await store.state.read("CA1") is None  # gone from live state
    assert await store.get("CA1") == archived
    assert store.owned == []


async def test_turn_updates_replace_by_turn_id(open_store: OpenStore) -> None:
    store = await open_store()
    await store.start(CallRecord(call_id="CA1"))
    await store.update("CA1", turn=_turn(1, "Hours?", "Nine"))
    await store.update("CA1", turn=_turn(1, "Hours?", "Nine to five."))
    record = await store.state.read("CA1")
    assert record is not None and [t.agent for t in record.turns] == ["Nine to five."]
    with pytest.raises(TypeError):
        await store.update("CA1", no_such_field=1)


async def test_duplicate_start_and_unknown_call_are_refused(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    await first.start(CallRecord(call_id="CA1"))
    with pytest.raises(CallStateError):
        await second.start(CallRecord(call_id="CA1"))
    with pytest.raises(CallStateError):
        await second.update("CA1", language="de")


async def test_resume_hands_the_call_over_and_fences_the_old_owner(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    await a.start(CallRecord(call_id="CA1", agent_id="default"))
    await a.update("CA1", turn=_turn(1, "I want to book a cleaning", "Which day suits you?"))
    resumed = await b.resume("CA1")
    assert resumed is not None and resumed.owner == b.owner
    assert await b.context("CA1") == [
        {"role": "user", "text": "I want to book a cleaning"},
        {"role": "assistant", "text": "Which day suits you?"},
    ]
    with pytest.raises(CallFenced):
        await a.update("CA1", turn=_turn(2, "stale", "stale"))
    assert "CA1" not in a.owned
    await b.update("CA1", turn=_turn(2, "Tuesday", "Tuesday at ten is free."))
    ended = await b.end("CA1", outcome="hangup")
    assert [t.user for t in ended.turns] == ["I want to book a cleaning", "Tuesday"]
    assert await a.resume("CA1") is None  # ended calls cannot be taken over


async def test_recovery_archives_calls_of_dead_owners_only(open_store: OpenStore) -> None:
    alive, dying = await open_store(), await open_store()
    await alive.start(CallRecord(call_id="CA-alive"))
    await dying.start(CallRecord(call_id="CA-dead"))
    await dying.update("CA-dead", turn=_turn(1, "Hello?", "Hi, how can I help?"),
                       usage=Usage(stt_seconds={"nova-3": 1.0}))
    await dying.state.aclose()  # the process is gone without ending its call

    restarted = await open_store()
    assert await restarted.recover_interrupted() == ["CA-dead"]
    record = await restarted.archive.get("CA-dead")
    assert record is not None and record.status == "interrupted" and record.outcome == "interrupted"
    assert [t.agent for t in record.turns] == ["Hi, how can I help?"]
    assert record.usage == Usage(stt_seconds={"nova-3": 1.0})
    assert await restarted.recover_interrupted() == []
    live = await alive.get("CA-alive")
    assert live is not None and live.status == "active"
    assert [r.call_id for r in await restarted.live()] == ["CA-alive"]


async def test_a_call_whose_node_died_before_its_stream_is_archived_once_from_its_offer(
    open_store: OpenStore,
) -> None:
    """The webhook sent the call to a node that died before the stream's start: no call state, only the offer."""
    survivor, other = await open_store(), await open_store()
    await other.start(CallRecord(call_id="CA-live"))
    await other.end("CA-live", outcome="hangup")
    await other.start(CallRecord(call_id="CA-running"))

    def offer(call_sid: str) -> Offer:
        return Offer(call_sid=call_sid, caller="+442071234567", agent_id="", offered_at=1_700_000_000.0)

    died = dict(outcome=EndReason.INTERRUPTED, detail="its node node-b died before the call's stream started")
    assert await survivor.archive_offer(offer("CA-never"), **died)  # type: ignore[arg-type]
    record = await survivor.archive.get("CA-never")
    assert record is not None and (record.status, record.outcome) == ("interrupted", "interrupted")
    assert (record.caller, record.caller_country, record.agent_id) == ("+442071234567", "GB", "default")
    assert record.started_at == record.ended_at == 1_700_000_000.0
    assert "node-b died before the call's stream started" in record.outcome_detail
    # Archived already, ended normally, or live after all: not touched.
    for call_sid in ("CA-never", "CA-live", "CA-running"):
        assert not await survivor.archive_offer(offer(call_sid), **died)  # type: ignore[arg-type]
    ended = await survivor.archive.get("CA-live")
    assert ended is not None and ended.outcome == "hangup"
    running = await survivor.get("CA-running")
    assert running is not None and running.status == "active"


async def test_a_call_sent_to_a_process_that_died_before_its_stream_is_archived_by_the_next(
    tmp_path: Path,
) -> None:
    """One machine, no Redis: the webhook's offer is kept in the live-call file until the stream starts."""
    def store() -> CallStore:
        return CallStore(SQLiteState(tmp_path / "live.db"), SQLiteArchive(tmp_path / "archive.db"),
                         outbox_dir=tmp_path / "outbox")

    now = time.time()
    dead = await store().open()
    for call_sid in ("CA-started", "CA-cut"):
        await dead.offered(Offer(call_sid=call_sid, caller="+34911234567", agent_id="default", offered_at=now))
    await dead.start(CallRecord(call_id="CA-started", caller="+34911234567"))  # its stream came: offer done
    assert [offer.call_sid for _, offer in await dead.state.offers()] == ["CA-cut"]
    await dead.state.aclose()  # the process is killed: its owner lock goes, nothing else is written

    async with store() as restarted:
        assert sorted(await restarted.recover_interrupted()) == ["CA-cut", "CA-started"]
        cut = await restarted.archive.get("CA-cut")
        assert cut is not None and (cut.status, cut.outcome, cut.caller_country) == ("interrupted", "interrupted", "ES")
        assert cut.outcome_detail == "the server stopped before the call's stream started"
        assert await restarted.state.offers() == []
        assert await restarted.recover_interrupted() == []  # once


async def test_a_call_whose_stream_never_came_is_archived_as_no_connection_after_the_token_expired(
    tmp_path: Path,
) -> None:
    """Twilio was told where to connect and never did (a wrong public URL): the operator sees the call."""
    async with CallStore(SQLiteState(tmp_path / "live.db"), SQLiteArchive(tmp_path / "archive.db"),
                         outbox_dir=tmp_path / "outbox") as store:
        await store.offered(Offer(call_sid="CA-lost", caller="+15551230000", agent_id="default",
                                  offered_at=time.time() - 30))
        assert await store.recover_interrupted(min_idle_s=30, stream_wait_s=120) == []  # may still come
        assert await store.archive.get("CA-lost") is None
        assert await store.recover_interrupted(min_idle_s=30, stream_wait_s=20) == ["CA-lost"]
        record = await store.archive.get("CA-lost")
        assert record is not None and (record.status, record.outcome) == ("ended", "no_connection")
        assert "never opened the call's Media Stream" in record.outcome_detail
        assert "AYBIZA_PUBLIC_URL" in record.outcome_detail
        assert await store.state.offers() == []


async def test_an_unreadable_offer_is_dropped_and_recovery_goes_on(tmp_path: Path) -> None:
    async with CallStore(SQLiteState(tmp_path / "live.db"), SQLiteArchive(tmp_path / "archive.db"),
                         outbox_dir=tmp_path / "outbox") as store:
        state = store.state
        assert isinstance(state, SQLiteState)
        state.db.execute("INSERT INTO offered_calls VALUES ('CA-bad', 'gone', 0, '{not json')")
        await store.offered(Offer(call_sid="CA-ok", caller="", agent_id="default", offered_at=time.time() - 500))
        assert await store.recover_interrupted(stream_wait_s=120) == ["CA-ok"]
        assert await state.offers() == []


async def test_recovery_grace_period_leaves_recent_calls_for_resume(open_store: OpenStore) -> None:
    dying = await open_store()
    await dying.start(CallRecord(call_id="CA1"))
    await dying.state.aclose()
    other = await open_store()
    assert await other.recover_interrupted(min_idle_s=60) == []
    assert await other.resume("CA1") is not None


async def test_recovery_finishes_an_end_that_was_cut_short(open_store: OpenStore) -> None:
    dying = await open_store()
    await dying.start(CallRecord(call_id="CA1"))
    record = dying._mine("CA1")
    record.status, record.outcome, record.version = "ended", "hangup", record.version + 1
    assert await dying.state.write(record)  # "ended" written, then the process died before archiving
    await dying.state.aclose()
    restarted = await open_store()
    assert await restarted.recover_interrupted() == []
    archived = await restarted.archive.get("CA1")
    assert archived is not None and archived.status == "ended" and archived.outcome == "hangup"
    assert await restarted.live() == []


class BrokenArchive(SQLiteArchive):
    """An archive whose writes fail until repaired."""

    broken = True

    async def put(self, record: CallRecord) -> None:
        if self.broken:
            raise OSError("archive unreachable")
        await super().put(record)


async def test_archive_outage_keeps_the_record_in_the_outbox(open_store: OpenStore, tmp_path: Path) -> None:
    archive = BrokenArchive(tmp_path / "archive2.db")
    store = await open_store(archive=archive)
    await store.start(CallRecord(call_id="CA1"))
    ended = await store.end("CA1", outcome="hangup")
    assert await archive.get("CA1") is None
    assert len(list((tmp_path / "outbox").glob("*.json"))) == 1
    archive.broken = False
    assert await store.flush_outbox() == 1
    assert await archive.get("CA1") == ended
    assert list((tmp_path / "outbox").glob("*.json")) == []


async def test_redis_outage_does_not_stop_the_call(tmp_path: Path) -> None:
    state = RedisState(redis_client(f"redis://127.0.0.1:{free_port()}/0"), owns_client=True)
    store = CallStore(state, SQLiteArchive(tmp_path / "archive.db"), owner="edge-1")
    with anyio.fail_after(10):
        await store.start(CallRecord(call_id="CA1"))
        await store.update("CA1", turn=_turn(1, "Hours?", "Nine to five."))
        ended = await store.end("CA1", outcome="hangup")
    assert (await store.archive.get("CA1")) == ended and len(ended.turns) == 1
    await store.archive.aclose()


async def test_exactly_one_of_many_concurrent_takeovers_wins(redis_url: str) -> None:
    states = [RedisState(redis_client(redis_url), owns_client=True) for _ in range(10)]
    await states[0].create(CallRecord(call_id="CA1", owner="origin", version=1))
    winners: list[str] = []

    async def claim(index: int) -> None:
        if await states[index % 10].take_over("CA1", f"claimer-{index}", expect_owner="origin") is not None:
            winners.append(f"claimer-{index}")

    async with anyio.create_task_group() as tg:
        for index in range(50):
            tg.start_soon(claim, index)
    assert len(winners) == 1
    record = await states[0].read("CA1")
    assert record is not None and record.owner == winners[0] and record.version == 2
    for state in states:
        await state.aclose()


async def test_end_call_and_list_calls_give_the_api_data(open_store: OpenStore, tmp_path: Path) -> None:
    store = await open_store()
    ctx = CallContext(call_id="CA1", caller="+15550001", agent_id="default", region="eu-west-2")
    ctx.ledger.add_stt("nova-3", 2.0)
    ctx.ledger.cache(CacheKind.ANSWER, hit=True)
    ctx.ledger.answered("cache")
    ctx.ledger.time(Stage.VOICE_TO_VOICE, 0.8)
    ctx.ledger.incident(IncidentKind.TTS_FALLBACK, "aura-2 refused")
    await store.start_call(ctx)
    await store.start(CallRecord(call_id="CA2"))
    ended = await store.end_call(ctx, "hangup", cost={"total_usd": "0.01"}, detail="the caller hung up")
    assert ended.route["region"] == "eu-west-2" and ended.usage.cache_hits(CacheKind.ANSWER) == 1
    assert ended.usage.stt_seconds == {"nova-3": 2.0}
    assert ended.timings == [("voice_to_voice", 0.8)] and ended.cost == {"total_usd": "0.01"}
    assert ended.outcome == "hangup" and ended.outcome_detail == "the caller hung up"
    assert [(i.kind, i.detail) for i in ended.incidents] == [(IncidentKind.TTS_FALLBACK, "aura-2 refused")]
    archived = await store.archive.get("CA1")
    assert archived == ended  # the typed usage and incidents survive the archive's JSON

    listing = await store.list_calls()
    assert [c["call_id"] for c in listing["active"]] == ["CA2"]
    assert [c["call_id"] for c in listing["calls"]] == ["CA1"] and listing["archived_total"] == 1
    summary = listing["calls"][0]
    assert summary["cost_usd"] == "0.01" and "turns" in summary
    assert summary["cache_hits"] == {"llm": 1} and summary["model"] == "cache"
    assert summary["incidents"] == ["tts_fallback"]


async def test_read_calls_for_the_cli(tmp_path: Path) -> None:
    store = await open_call_store(tmp_path)
    await store.start(CallRecord(call_id="CA1"))
    await store.end("CA1", outcome="hangup")
    await store.aclose()
    listing = await read_calls(tmp_path)
    assert [c["call_id"] for c in listing["calls"]] == ["CA1"]
    one = await read_calls(tmp_path, call_id="CA1")
    assert one["call"]["outcome"] == "hangup"
    assert (await read_calls(tmp_path, call_id="nope")) == {"call": None}
    assert not list((tmp_path / "calls-live.db.owners").glob("*.lock"))  # read-only: no owner registered


async def test_writes_keep_a_redis_owner_alive_without_the_keepalive_task(redis_url: str, tmp_path: Path) -> None:
    state = RedisState(redis_client(redis_url), owns_client=True, lease_s=0.3)
    store = await CallStore(state, SQLiteArchive(tmp_path / "archive.db")).open()
    watcher = RedisState(redis_client(redis_url), owns_client=True)
    await store.start(CallRecord(call_id="CA1"))
    for turn_id in range(1, 7):
        await anyio.sleep(0.12)
        await store.update("CA1", turn=_turn(turn_id, "more", "yes"))
        assert await watcher.owner_alive(store.owner)
    await store.aclose()
    assert not await watcher.owner_alive(store.owner)  # a clean shutdown drops the lease at once
    await watcher.aclose()


async def test_open_call_starts_resumes_or_continues_an_archived_call(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    ctx = CallContext(call_id="CA1", caller="+15550001")
    record, resumed = await a.open_call(ctx)
    assert not resumed and record.owner == a.owner
    await a.update("CA1", turn=_turn(1, "Book a cleaning.", "Which day?"))
    record, resumed = await b.open_call(ctx)  # the stream reconnected to another process
    assert resumed and record.owner == b.owner and record.context()[0]["text"] == "Book a cleaning."
    ended = await b.end("CA1", outcome="hangup")

    record, resumed = await a.open_call(ctx)  # the same call id once more, after it was archived
    assert resumed and [t.user for t in record.turns] == ["Book a cleaning."]
    assert record.version > ended.version
    await a.update("CA1", turn=_turn(2, "Tuesday.", "Booked."))
    final = await a.end("CA1", outcome="hangup")
    archived = await a.archive.get("CA1")
    assert archived == final and [t.user for t in archived.turns] == ["Book a cleaning.", "Tuesday."]


# -- processes sharing state share the archive -------------------------------------------


async def test_stores_on_one_redis_without_an_archive_url_share_one_archive(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aybiza.edge.calls")
    a = await open_call_store(tmp_path / "a", redis_url=redis_url)
    b = await open_call_store(tmp_path / "b", redis_url=redis_url)
    try:
        await a.start(CallRecord(call_id="CA1", caller="+15550001"))
        await a.update("CA1", turn=_turn(1, "Hours?", "Nine to five."))
        ended = await a.end("CA1", outcome="hangup")
        assert await b.get("CA1") == ended
        assert [c["call_id"] for c in (await b.list_calls())["calls"]] == ["CA1"]
    finally:
        await a.aclose()
        await b.aclose()
    client = redis.Redis.from_url(redis_url)
    assert client.get("aybiza:archive_url") == f"sqlite:///{(tmp_path / 'a').resolve()}/calls-archive.db".encode()
    client.close()
    assert not (tmp_path / "b" / "calls-archive.db").exists()
    warnings = [r.getMessage() for r in caplog.records if "postgresql://" in r.getMessage()]
    assert len(warnings) == 1 and "several machines" in warnings[0]
    listing = await read_calls(tmp_path / "cli", redis_url=redis_url)  # the CLI on another data dir sees it too
    assert [c["call_id"] for c in listing["calls"]] == ["CA1"]


async def test_an_archive_url_setting_wins_over_the_registered_one(redis_url: str, tmp_path: Path) -> None:
    first = await open_call_store(tmp_path / "a", redis_url=redis_url)
    await first.aclose()
    own = await open_call_store(tmp_path / "b", redis_url=redis_url, archive_url=f"sqlite:///{tmp_path}/own.db")
    try:
        assert isinstance(own.archive, SQLiteArchive) and own.archive.path == tmp_path / "own.db"
    finally:
        await own.aclose()


async def test_a_read_only_store_registers_no_archive(redis_url: str, tmp_path: Path) -> None:
    await read_calls(tmp_path, redis_url=redis_url)
    client = redis.Redis.from_url(redis_url)
    assert client.get("aybiza:archive_url") is None
    client.close()


async def test_an_unusable_registered_archive_url_is_a_config_error(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("aybiza:archive_url", "mysql://admin:secret@db/calls")
    client.close()
    with pytest.raises(ConfigError, match="aybiza:archive_url") as raised:
        await open_call_store(tmp_path, redis_url=redis_url)
    assert "AYBIZA_ARCHIVE_URL" in str(raised.value) and "secret" not in str(raised.value)


async def test_unreachable_redis_at_startup(tmp_path: Path) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    with anyio.fail_after(10):
        with pytest.raises(CallStateError):
            await open_call_store(tmp_path, redis_url=down)
        listing = await read_calls(tmp_path, redis_url=down)  # the CLI still reads the local archive
    assert listing["calls"] == []
