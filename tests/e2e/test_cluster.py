"""Three nodes, one Redis, one PostgreSQL archive, one phone number: calls spread, a drain, a crash.

Each call is placed like Twilio places it through a round-robin "load balancer"
(any live node's ``POST /twiml``) and connects where the TwiML says. Phase A
spreads calls over three nodes; node A is then SIGTERMed while its calls are
live (they must all finish: greeting and answer heard, ended normally) and
exits 0; phase B's calls go to B and C only; node B is kill -9'd with calls
live (C archives them as interrupted, and the calls /twiml sent to B whose
streams had not started: they left no call state); phase C's calls all go to
C. Every call's record is in PostgreSQL at the end.

The nodes recognise the callers' speech through Deepgram's real SDK against
the shipped fake (real wire protocol, scripted transcript: whisper on 150
calls does not fit a shared 2-core machine), answer with the embedded FAQ
and speak with the embedded voice (piper, its answer audio shared through the
Redis cache).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from aybiza.edge.archive import open_archive
from aybiza.edge.records import CallRecord
from aybiza.testing.caller import CallReport, Say, Script, Wait, caller_speech, place_call, ring
from aybiza.testing.fake_deepgram import FakeDeepgram
from aybiza.testing.postgres_server import PostgresServer, postgres_bin_dir
from aybiza.testing.redis_server import RedisServer, redis_server_binary

from .server import AUTH_TOKEN, Server, running_server

pytestmark = [pytest.mark.slow, pytest.mark.exclusive,  # 3 nodes and 150 calls fill both cores
              pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed"),
              pytest.mark.skipif(postgres_bin_dir() is None, reason="PostgreSQL is not installed")]

CALLS_A, CALLS_B, CALLS_C = (int(n) for n in os.environ.get("AYBIZA_TEST_CLUSTER_CALLS", "60,45,45").split(","))
"""Calls per phase (150 in all by default)."""
STAGGER_S = 0.08  # between call arrivals: a busy number, not one instant
HEARTBEAT_S = 1.0
API_TOKEN = "cluster-test-api-token"
START_TIMEOUT_S = 300  # three servers loading their models at once on a busy 2-core machine


@contextmanager
def three_nodes(tmp: Path, env: dict[str, str]) -> Iterator[list[Server]]:
    """Three servers started side by side (each loads its models: in parallel it takes one start's time)."""
    with ExitStack() as stack, ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(stack.enter_context, running_server(tmp / name, env, start_timeout_s=START_TIMEOUT_S))
                   for name in "abc"]
        yield [future.result() for future in futures]


def port_of(report: CallReport) -> int:
    return urlsplit(report.stream_url).port or 0


async def call(lb: Iterator[Server], question: bytes, reports: list[CallReport], failures: list[str]) -> None:
    """One short call through the next node of the load balancer: greeting, one question, its answer."""
    node = next(lb)
    script: Script = [Wait(15), Say(question), Wait(30)]
    try:
        reports.append(await place_call(node.stream_url, script, auth_token=AUTH_TOKEN, follow_twiml=True,
                                        hangup_after=0.3, call_timeout=90))
    except Exception as error:  # a call that could not even be placed is lost: the test fails on it
        failures.append(f"via {node.port}: {type(error).__name__}: {error}")


async def place(count: int, lb: Iterator[Server], question: bytes, reports: list[CallReport],
                failures: list[str], tg: anyio.abc.TaskGroup) -> None:
    for _ in range(count):
        tg.start_soon(call, lb, question, reports, failures)
        await anyio.sleep(STAGGER_S)


def answered(report: CallReport) -> bool:
    """The caller heard a reply after its question, and the call ended from its side (not cut off)."""
    return bool(report.turns) and report.turns[0].latency is not None and report.close_code in (None, 1000)


async def ring_until_sent_to(target: Server, via: Server, count: int) -> list[str]:
    """Calls announced through ``via``'s webhook until ``count`` were sent to ``target``: their streams never
    start (Twilio's connect to a node that dies next); their sids."""
    sent: list[str] = []
    for _ in range(20 * count):
        call_sid, stream_url = await ring(via.stream_url, auth_token=AUTH_TOKEN)
        if urlsplit(stream_url).port == target.port:
            sent.append(call_sid)
            if len(sent) == count:
                break
    return sent


def describe(report: CallReport) -> str:
    latency = report.turns[0].latency if report.turns else None
    return f"{report.call_sid}: heard {report.received_bytes} B, reply after {latency}, close {report.close_code}"


def test_three_nodes_share_one_number_through_a_drain_and_a_crash(tmp_path: Path) -> None:
    question = caller_speech("what are your opening hours")
    with RedisServer() as redis, PostgresServer() as pg, \
            FakeDeepgram(transcripts=["what are your opening hours"]) as deepgram:
        env = {"AYBIZA_STT": "deepgram", "DEEPGRAM_API_KEY": "test-key", "AYBIZA_DEEPGRAM_URL": deepgram.url,
               "AYBIZA_REDIS_URL": redis.url, "AYBIZA_ARCHIVE_URL": pg.url, "AYBIZA_API_TOKEN": API_TOKEN,
               "AYBIZA_NODE_HEARTBEAT_S": str(HEARTBEAT_S), "AYBIZA_DRAIN_TIMEOUT_S": "60",
               "AYBIZA_END_OF_TURN": "silence",  # a turn ends on 400 ms of silence: no smart-turn model per turn
               # 150 callers share this process with the fake Deepgram: when the machine starves it, a caller
               # catches up in a burst the pace guard would close as a flood (tests/security test the guard).
               "AYBIZA_MEDIA_BURST_S": "30", "AYBIZA_MEDIA_FLOOD_CLOSE_S": "60"}
        with three_nodes(tmp_path, env) as nodes:
            a, b, c = nodes
            phase_a: list[CallReport] = []
            phase_b: list[CallReport] = []
            phase_c: list[CallReport] = []
            failures: list[str] = []
            drained_at: list[float] = []
            unstarted: list[str] = []  # sent to B by /twiml, B killed before their streams started

            async def scenario() -> None:
                async with anyio.create_task_group() as tg:
                    # Phase A: three nodes up; the load balancer takes turns.
                    await place(CALLS_A, itertools.cycle(nodes), question, phase_a, failures, tg)
                    await anyio.sleep(1.0)  # the last ones connected
                    os.kill(a.process.pid, signal.SIGTERM)
                    async with httpx.AsyncClient(timeout=5) as client:  # A says it drains (or is gone already)
                        while a.process.poll() is None:
                            try:
                                if (await client.get(f"{a.http}/ready")).status_code == 503:
                                    break
                            except httpx.TransportError:
                                pass
                            await anyio.sleep(0.05)
                    drained_at.append(time.monotonic())
                    # Phase B: A drains. Its /twiml still answers while it is up, sending the call elsewhere;
                    # the load balancer, seeing A's /ready at 503, sends webhooks to B and C only.
                    tg.start_soon(call, iter([a]), question, phase_b, failures)
                    await place(CALLS_B - 1, itertools.cycle([b, c]), question, phase_b, failures, tg)
                    await anyio.sleep(1.0)
                    unstarted.extend(await ring_until_sent_to(b, c, 2))
                    os.kill(b.process.pid, signal.SIGKILL)
                    # The load balancer's health check drops B; B's registration expires within a few heartbeats.
                    await anyio.sleep(HEARTBEAT_S * 3 + 0.5)
                    # Its health checks leave the load balancer C alone (A drains: /ready 503; B is dead).
                    await place(CALLS_C, itertools.cycle([c]), question, phase_c, failures, tg)

            anyio.run(scenario)
            assert a.process.wait(30) == 0, a.log()[-3000:]  # drained, then a clean exit
            b.process.wait(10)

            assert not failures, failures
            everyone = phase_a + phase_b + phase_c
            assert len(everyone) == CALLS_A + CALLS_B + CALLS_C

            # Phase A spread within ±20 % of an even share.
            counts = {n.port: sum(port_of(r) == n.port for r in phase_a) for n in nodes}
            even = CALLS_A / 3
            assert all(abs(k - even) <= 0.2 * even for k in counts.values()), counts

            # Nothing on A was cut off by its drain: every caller there heard the answer, and hung up itself.
            on_a = [r for r in phase_a if port_of(r) == a.port]
            assert on_a and all(answered(r) for r in on_a), [(r.call_sid, r.close_code) for r in on_a
                                                               if not answered(r)]
            assert "draining" in a.log()
            # No call went to A once it drained, nor to B once it died.
            assert all(port_of(r) != a.port for r in phase_b + phase_c)
            assert all(port_of(r) == c.port for r in phase_c)
            assert all(answered(r) for r in phase_c), [describe(r) for r in phase_c if not answered(r)]
            assert {port_of(r) for r in phase_b} == {b.port, c.port}

            # B's calls live at the kill, and those sent to B that had not started: archived by C as interrupted,
            # once.
            on_b_cut = [r.call_sid for r in phase_b + phase_a if port_of(r) == b.port and not answered(r)]
            assert on_b_cut, "no call was live on B when it was killed"
            assert len(unstarted) == 2, "/twiml sent no call to B before the kill"
            on_b_cut += unstarted

            async def archived() -> dict[str, CallRecord | None]:
                archive = open_archive(pg.url, tmp_path)
                try:
                    return {sid: await archive.get(sid) for sid in [r.call_sid for r in everyone] + unstarted}
                finally:
                    await archive.aclose()

            deadline = time.monotonic() + 30
            while True:  # C archives B's calls once B's registration and call-state lease (10 s) ran out
                records = asyncio.run(archived())
                if all(records[sid] is not None and records[sid].status == "interrupted"  # type: ignore[union-attr]
                       for sid in on_b_cut) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            missing = [sid for sid, record in records.items() if record is None]
            assert not missing, f"{len(missing)} call(s) not in PostgreSQL: {missing[:5]}"
            interrupted = sorted(sid for sid, record in records.items() if record and record.status == "interrupted")
            assert interrupted == sorted(on_b_cut)
            assert all("died before the call's stream started" in records[sid].outcome_detail  # type: ignore[union-attr]
                       for sid in unstarted)
            assert c.log().count("archived as interrupted") == len(on_b_cut)
            # ... and C's metrics say so: the calls it reaped, and that it is the one live node left
            metrics = httpx.get(f"{c.http}/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=5).text
            assert f"aybiza_reaped_calls_total {float(len(on_b_cut))}" in metrics
            assert "aybiza_cluster_nodes 1.0" in metrics and "aybiza_node_draining 0.0" in metrics
            others = [record for sid, record in records.items() if sid not in on_b_cut]
            assert all(r is not None and r.status == "ended" and r.outcome == "hangup" for r in others), \
                {r.call_id: (r.status, r.outcome) for r in others if r and (r.status, r.outcome) != ("ended", "hangup")}
