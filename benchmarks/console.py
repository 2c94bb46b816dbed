"""Operator console: server time of the call list and the call page with 100k archived calls.

An archive of 100,000 calls over 30 days (SQLite, written through the
archive's own row format: JSON plus the console's derived columns) is built
in a scratch directory; ``aybiza serve`` runs on it (loopback; requests carry the local API token)
and each page is fetched in turn over loopback, one request at a time, so the time measured is the
server's (plus a loopback round trip of well under a millisecond).

Pages: the list unfiltered, by country, by two flags, by end reason and
cost, on its deepest page (page 1000 of 100), and random calls' pages;
then the dashboard with its pictures of the last hour (about 140 calls).
Records look like real ones: 2-6 turns with timings, tool calls on some,
barge-ins, failovers, cost lines.

Run: ``.venv/bin/python -m benchmarks.console [--quick]`` (prints the figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time
from typing import Any

import httpx

from aybiza.edge.archive import SQLiteArchive, default_archive_path
from aybiza.edge.records import CallRecord, TurnRecord
from aybiza.pipeline.ledger import FAILOVER_AT, ToolUse, Usage
from aybiza.testing.processes import free_port, serving

ROOT = Path(__file__).resolve().parents[1]
CALLS = 100_000
DAYS = 30
COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IN", "CA", "AU", "MX", "BR")
REGIONS = ("us-east-1", "us-west-2", "eu-west-2", "eu-central-1", "ap-southeast-1")
OUTCOMES = ("hangup",) * 12 + ("agent_ended",) * 4 + ("transferred", "caller_silent", "model_unavailable",
                                                       "disconnected")
MODELS = ("eu.anthropic.claude-sonnet-4-6", "us.anthropic.claude-haiku-4-5", "faq")


def _record(rng: random.Random, n: int, now: float) -> CallRecord:
    started = now - rng.random() * DAYS * 86400
    turns = []
    at = started + 1.0
    interrupted = rng.random() < 0.1
    failover = rng.random() < 0.03
    for turn_id in range(rng.randint(2, 6)):
        at += rng.uniform(3, 9)
        tools = [ToolUse(turn=turn_id, name="order_status", kind="http", arguments={"order_id": "4321"},
                         outcome="ok", result={"status": "shipped"}, at_s=at - started + 0.5,
                         duration_ms=rng.uniform(80, 900))] if rng.random() < 0.05 else []
        timings = {"stt_final": rng.uniform(0.1, 0.4), "llm_first_token": rng.uniform(0.2, 0.8),
                   "tts_first_byte": rng.uniform(0.05, 0.2), "voice_to_voice": rng.uniform(0.5, 1.4)}
        if failover and turn_id == 1:
            timings[FAILOVER_AT] = at - started
        turns.append(TurnRecord(turn_id=turn_id, user="where is my order please" if turn_id else "",
                                agent="Your order has shipped and will arrive on Tuesday.", at=at, timings=timings,
                                interrupted=interrupted and turn_id == 1, tool_calls=tools))
    region = rng.choice(REGIONS)
    model = rng.choice(MODELS)
    usage = Usage(answers={model: len(turns) - 1}, interruptions=int(interrupted),
                  failovers=[(region, REGIONS[(REGIONS.index(region) + 1) % len(REGIONS)])] if failover else [])
    amount = rng.uniform(0.005, 0.08)
    lines = [{"kind": kind, "detail": detail, "quantity": "1", "unit": "unit", "rate": "0.001",
              "rate_unit": "unit", "amount": f"{amount / 6:.6f}", "estimated": False}
             for kind, detail in (("llm_input", model), ("llm_output", model), ("stt", "nova-3"),
                                  ("tts", "aura-2"), ("telephony", "inbound"), ("media_streams", "twilio"))]
    return CallRecord(
        call_id=f"CA{n:032x}", status="ended", version=3, caller="+15555550123",
        caller_country=rng.choice(COUNTRIES), agent_id=rng.choice(("default", "shop", "clinic")),
        transport="webrtc" if rng.random() < 0.1 else "twilio", route={"region": region, "model_tier": "advanced"},
        started_at=started, updated_at=at + 2, ended_at=at + 2, turns=turns, usage=usage,
        cost={"currency": "USD", "region": region, "price_date": "2026-12-01", "total_usd": f"{amount:.6f}",
              "lines": lines}, quality={"score": 0.9, "tier": "high", "min_score": rng.uniform(0.3, 0.95)},
        outcome=rng.choice(OUTCOMES), timings=[(k, v) for k, v in turns[-1].timings.items() if k != FAILOVER_AT])


def build_archive(path: Path, calls: int, *, seed: int = 17) -> float:
    """Write ``calls`` records through the archive's row format; return the seconds it took."""
    from aybiza.edge.archive import _SQLITE_UPSERT, _row

    began = time.perf_counter()
    SQLiteArchive(path)._db.close()  # the schema, as the server makes it
    rng = random.Random(seed)
    now = time.time()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")  # a fixture being built, not calls being kept
    db.execute("BEGIN")
    for n in range(calls):
        db.execute(_SQLITE_UPSERT, _row(_record(rng, n, now)))
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()
    return time.perf_counter() - began


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _time(client: httpx.Client, url: str, repeats: int) -> dict[str, float]:
    client.get(url).raise_for_status()  # warm
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
    return {"p50_ms": _p(samples, 0.5), "p95_ms": _p(samples, 0.95), "max_ms": round(max(samples), 2)}


LIST_PAGES = {
    "unfiltered": "/calls",
    "country": "/calls?country=DE",
    "flags": "/calls?flag=failover&flag=tool_call",
    "outcome_cost": "/calls?outcome=transferred&min_cost=0.05",
    "last_page": "/calls?per_page=100&page=1000",
    "agent_transport_hours": "/calls?agent=shop&transport=webrtc&hours=48",
}


def run(quick: bool = False) -> dict[str, Any]:
    """Build the archive, serve it, time the pages; returns the figures (ms)."""
    repeats = 20 if quick else 60
    scratch = Path(tempfile.mkdtemp(prefix="aybiza-bench-console-"))
    try:
        data = scratch / "data"
        data.mkdir(mode=0o700)
        build_s = build_archive(default_archive_path(data), CALLS)
        port = free_port()
        env = {**os.environ, "AYBIZA_DATA_DIR": str(data), "AYBIZA_PUBLIC_URL": f"http://127.0.0.1:{port}",
               "TWILIO_AUTH_TOKEN": "bench-token", "AYBIZA_LOG_LEVEL": "WARNING",
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        command = [sys.executable, "-m", "aybiza.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        result: dict[str, Any] = {"calls": CALLS, "archive_build_s": round(build_s, 1), "list": {}, "repeats": repeats}
        rng = random.Random(5)
        with serving(command, health_url=f"http://127.0.0.1:{port}/health", log_path=scratch / "server.log",
                     env=env, cwd=ROOT, what="console server", timeout_s=120), \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers={
                    "Authorization": f"Bearer {(data / 'api_token').read_text().strip()}"}) as client:
            for name, path in LIST_PAGES.items():
                result["list"][name] = _time(client, path, repeats)
            call_samples: list[float] = []
            for _ in range(repeats):
                path = f"/calls/CA{rng.randrange(CALLS):032x}"
                began = time.perf_counter()
                client.get(path).raise_for_status()
                call_samples.append((time.perf_counter() - began) * 1000)
            result["call"] = {"p50_ms": _p(call_samples, 0.5), "p95_ms": _p(call_samples, 0.95),
                              "max_ms": round(max(call_samples), 2)}
            result["dashboard"] = _time(client, "/dashboard", max(10, repeats // 3))
        result["list_p95_ms"] = max(page["p95_ms"] for page in result["list"].values())
        result["call_p95_ms"] = result["call"]["p95_ms"]
        result["dashboard_p95_ms"] = result["dashboard"]["p95_ms"]
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    """Command line: ``--quick`` for fewer requests (the archive is 100k calls either way)."""
    parser = argparse.ArgumentParser(description="console pages with 100k archived calls")
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
