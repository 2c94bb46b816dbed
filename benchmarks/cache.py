"""Edge cache and call state: hit ratio, model calls avoided, cached vs fresh latency, state write costs.

**Answers.** A call mix on the default agent (agents/default.yaml, 12 FAQs,
69 phrasings): 70 % of calls open with an FAQ-like question (one of the
agent's phrasings, FAQ popularity Zipf-distributed, with fillers, casing and
punctuation varied the way transcripts vary), 30 % with a question nobody
else asks; 0-2 context-dependent follow-ups per call. Each call runs
``CachedAnswers`` around a scripted model that answers after a fixed delay
(a stand-in for an LLM's time to first sentence) under the LLM policy
(first turn or FAQ-like turns only), 50 calls at a time, cache starting
empty. Reported per backend (memory; Redis on a real ``redis-server`` when
installed): hit ratio over cacheable lookups, over FAQ-like openings and in
the second half of the run (warm), model calls avoided, and the latency
from the caller's turn to the first sentence for cached and fresh answers.

**Audio.** The greeting and the first answer of each call through
``CachingSynthesizer`` around a scripted engine with a fixed delay to its
first chunk: hit ratio and time to first audio, cached vs fresh.

**Agent configs.** Three reads per call through ``AgentConfigs``.

**Call state.** Per-turn update (SQLite ``synchronous=NORMAL`` inline on the
loop; Redis Lua), the end-of-call archive commit (SQLite ``FULL``), and an
``anyio.to_thread`` round trip for comparison — the figures behind running
SQLite writes inline.

Run: ``.venv/bin/python benchmarks/cache.py [--quick]`` (prints the figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from aybiza.agents import AgentConfig, load_agent
from aybiza.edge.agent_configs import AgentConfigs
from aybiza.edge.answers import AnswerPolicy
from aybiza.edge.archive import SQLiteArchive
from aybiza.edge.cache import Cache, MemoryCache, RedisCache
from aybiza.edge.calls import CallStore
from aybiza.edge.records import CallRecord, TurnRecord
from aybiza.edge.redis_util import redis_client
from aybiza.edge.state_redis import RedisState
from aybiza.edge.state_sqlite import SQLiteState
from aybiza.pipeline import AgentText, AgentTurnDone, CacheKind, CallContext, Frame, Processor, Usage, UserTurn
from aybiza.processors.cache import CachedAnswers, CachingSynthesizer

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]
FAQ_SHARE = 0.70
CONCURRENCY = 50

_FILLERS = ("", "", "Um, ", "Hi, ", "Hello, ", "Uh, so ", "Yeah hi, ")
_ENDINGS = ("", "", " please", ", thanks", "")
_FOLLOW_UPS = (
    "And what about Saturdays?", "Is that the same for my husband?", "Could you repeat the second part?",
    "OK, and how long does that take?", "What did you say the price was?", "Does that include the X-ray?",
)


def _vary(text: str, rng: random.Random) -> str:
    """How one caller's transcript of a phrasing differs from another's: fillers, case, punctuation."""
    body = text.rstrip(".?!")
    if rng.random() < 0.3:
        body = body.lower()
    ending = rng.choice(_ENDINGS)
    mark = rng.choice(("?", ".", "")) if text.endswith("?") else rng.choice((".", ""))
    return f"{rng.choice(_FILLERS)}{body}{ending}{mark}"


def _call_plan(agent: AgentConfig, calls: int, seed: int = 7) -> list[list[tuple[str, str]]]:
    """Per call: ``[(text, kind)]`` with kind ``faq`` / ``unique`` (first turn) or ``follow_up``."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(agent.faqs))]
    plan = []
    for _ in range(calls):
        turns: list[tuple[str, str]] = []
        if rng.random() < FAQ_SHARE:
            faq = rng.choices(agent.faqs, weights)[0]
            turns.append((_vary(rng.choice(faq.questions), rng), "faq"))
        else:
            name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))
            turns.append((f"I have a question about the {name} treatment my cousin had", "unique"))
        for _ in range(rng.choice((0, 1, 1, 2))):
            turns.append((rng.choice(_FOLLOW_UPS), "follow_up"))
        plan.append(turns)
    return plan


class SlowModel(Processor):
    """Answers each turn after ``delay`` seconds with two sentences (a stand-in for an LLM)."""

    name = "slow-model"

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.calls = 0
        self._tg: TaskGroup | None = None

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        self._tg = tg

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, UserTurn):
            self.calls += 1
            assert self._tg is not None
            self._tg.start_soon(self._answer, frame)
            return
        await self.push(frame)

    async def _answer(self, turn: UserTurn) -> None:
        await anyio.sleep(self.delay)
        await self.push(AgentText("Here is what you asked about.", turn.turn_id))
        await self.push(AgentText("Anything else?", turn.turn_id))
        await self.push(AgentTurnDone(turn.turn_id))


class TimingSink:
    """Notes when each turn's first sentence and its end arrive."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.done: dict[int, anyio.Event] = {}

    def expect(self, turn_id: int) -> anyio.Event:
        event = self.done[turn_id] = anyio.Event()
        return event

    async def __call__(self, frame: Frame) -> None:
        if isinstance(frame, AgentText):
            self.first.setdefault(frame.turn_id, time.perf_counter())
        elif isinstance(frame, AgentTurnDone) and frame.turn_id in self.done:
            self.done[frame.turn_id].set()


@dataclass
class _Tally:
    turns: dict[str, int] = field(default_factory=lambda: {"faq": 0, "unique": 0, "follow_up": 0})
    hits: dict[str, int] = field(default_factory=lambda: {"faq": 0, "unique": 0, "follow_up": 0})
    cached_ms: list[float] = field(default_factory=list)
    fresh_ms: list[float] = field(default_factory=list)
    model_calls: int = 0
    second_half_lookups: int = 0
    second_half_hits: int = 0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary_ms(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(_pct(values, 0.5), 3), "p95_ms": round(_pct(values, 0.95), 3),
            "mean_ms": round(statistics.fmean(values), 3) if values else float("nan")}


async def _answers(cache: Cache, agent: AgentConfig, calls: int, delay: float) -> dict[str, Any]:
    plan = _call_plan(agent, calls)
    policy = AnswerPolicy(agent)  # LLM policy: first turns and FAQ-like turns only
    tally = _Tally()
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def one_call(index: int, turns: list[tuple[str, str]]) -> None:
        async with limiter:
            model = SlowModel(delay)
            cached = CachedAnswers(model, cache, policy)
            sink = TimingSink()
            cached.link(None)
            cached.push = sink
            ctx = CallContext(call_id=f"CA{index}")
            async with anyio.create_task_group() as tg:
                await cached.start(ctx, tg)
                for turn_id, (text, kind) in enumerate(turns, 1):
                    hits_before = cached.hits
                    done = sink.expect(turn_id)
                    sent = time.perf_counter()
                    await cached.process(UserTurn(text, turn_id=turn_id))
                    await done.wait()
                    latency_ms = (sink.first[turn_id] - sent) * 1000
                    hit = cached.hits > hits_before
                    tally.turns[kind] += 1
                    tally.hits[kind] += int(hit)
                    (tally.cached_ms if hit else tally.fresh_ms).append(latency_ms)
                    if index >= calls // 2 and kind == "faq":
                        tally.second_half_lookups += 1
                        tally.second_half_hits += int(hit)
                tg.cancel_scope.cancel()
            await cached.stop()
            tally.model_calls += model.calls

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for index, turns in enumerate(plan):
            tg.start_soon(one_call, index, turns)
    stats = cache.stats("llm")
    total_turns = sum(tally.turns.values())
    faq_turns = tally.turns["faq"]
    return {
        "calls": calls,
        "turns": total_turns,
        "turns_by_kind": tally.turns,
        "hits_by_kind": tally.hits,
        "cacheable_lookups": stats.lookups,
        "hit_ratio_cacheable": round(stats.hit_ratio, 4),
        "hit_ratio_faq_openings": round(tally.hits["faq"] / faq_turns, 4) if faq_turns else 0.0,
        "hit_ratio_faq_openings_second_half": round(tally.second_half_hits / max(1, tally.second_half_lookups), 4),
        "share_of_all_turns_from_cache": round(sum(tally.hits.values()) / total_turns, 4),
        "llm_calls_made": tally.model_calls,
        "llm_calls_avoided": sum(tally.hits.values()),
        "llm_calls_avoided_share": round(sum(tally.hits.values()) / total_turns, 4),
        "cache_errors": stats.errors,
        "model_delay_ms": delay * 1000,
        "latency_cached_first_sentence": _summary_ms(tally.cached_ms),
        "latency_fresh_first_sentence": _summary_ms(tally.fresh_ms),
        "seconds": round(time.perf_counter() - started, 2),
    }


class ScriptedEngine:
    """A TTS engine whose first chunk takes ``delay`` seconds (then 3 chunks of 100 ms at 16 kHz)."""

    name = "scripted-tts"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = 0

    def synthesize(self, text: str, language: str) -> Iterator[tuple[bytes, int]]:
        self.requests += 1
        time.sleep(self.delay)
        for _ in range(3):
            yield b"\x00\x01" * 1600, 16000


def _first_chunk(synthesizer: CachingSynthesizer, text: str) -> float:
    started = time.perf_counter()
    chunks = iter(synthesizer.synthesize(text, "en"))
    next(chunks)
    first = time.perf_counter() - started
    for _ in chunks:
        pass
    return first


async def _tts(cache: Cache, agent: AgentConfig, calls: int, delay: float) -> dict[str, Any]:
    engine = ScriptedEngine(delay)
    rng = random.Random(11)
    cached_ms: list[float] = []
    fresh_ms: list[float] = []
    plan = _call_plan(agent, calls)
    answers = {faq.id: faq.answer.split(". ")[0] for faq in agent.faqs}
    for turns in plan:
        ctx = CallContext(call_id="tts")
        synthesizer = CachingSynthesizer(engine, cache, ctx=ctx)
        texts = [agent.greeting]
        if turns[0][1] == "faq":
            texts.append(answers[rng.choice(list(answers))])
        for text in texts:
            before = ctx.ledger.cache_hits(CacheKind.AUDIO)
            seconds = await anyio.to_thread.run_sync(_first_chunk, synthesizer, text)
            (cached_ms if ctx.ledger.cache_hits(CacheKind.AUDIO) > before else fresh_ms).append(seconds * 1000)
    stats = cache.stats("tts")
    return {
        "sentences": len(cached_ms) + len(fresh_ms),
        "hit_ratio": round(stats.hit_ratio, 4),
        "engine_calls_avoided": len(cached_ms),
        "engine_first_chunk_delay_ms": delay * 1000,
        "first_audio_cached": _summary_ms(cached_ms),
        "first_audio_fresh": _summary_ms(fresh_ms),
    }


async def _agent_configs(cache: Cache, calls: int) -> dict[str, Any]:
    configs = AgentConfigs(cache, ROOT / "agents")
    started = time.perf_counter()
    for _ in range(calls * 3):
        await configs.get("default")
    elapsed = time.perf_counter() - started
    reads = calls * 3
    return {"reads": reads, "file_loads": configs.loads, "hit_ratio": round(1 - configs.loads / reads, 4),
            "mean_read_us": round(elapsed / reads * 1e6, 2)}


def _us(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50_us": round(_pct(samples, 0.5) * 1e6, 1),
            "p99_us": round(_pct(samples, 0.99) * 1e6, 1)}


async def _state(directory: Path, redis_url: str | None, calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    backends: list[tuple[str, Any]] = [("sqlite", SQLiteState(directory / "live.db"))]
    if redis_url:
        backends.append(("redis", RedisState(redis_client(redis_url), owns_client=True)))
    for name, state in backends:
        store = await CallStore(state, SQLiteArchive(directory / f"archive-{name}.db")).open()
        starts: list[float] = []
        updates: list[float] = []
        ends: list[float] = []
        for index in range(calls):
            call_id = f"{name}-{index}"
            t0 = time.perf_counter()
            await store.start(CallRecord(call_id=call_id, caller="+15550001"))
            starts.append(time.perf_counter() - t0)
            for turn_id in range(1, 9):
                turn = TurnRecord(turn_id=turn_id, user="What are your opening hours on Saturday?",
                                  agent="We are open from nine to one on Saturdays.",
                                  timings={"stt_final": 0.2, "llm_first_token": 0.3, "voice_to_voice": 0.9})
                t0 = time.perf_counter()
                await store.update(call_id, turn=turn, usage=Usage(stt_seconds={"nova-3": 2.0 * turn_id}))
                updates.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await store.end(call_id, outcome="hangup")
            ends.append(time.perf_counter() - t0)
        await store.aclose()
        out[name] = {"start": _us(starts), "turn_update": _us(updates), "end_with_archive_commit": _us(ends)}

    hops: list[float] = []
    for _ in range(200):
        t0 = time.perf_counter()
        await anyio.to_thread.run_sync(lambda: None)
        hops.append(time.perf_counter() - t0)
    out["to_thread_round_trip"] = _us(hops)
    return out


async def _main(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    agent = load_agent("default", ROOT / "agents")
    calls = 400 if quick else 1500
    delay = 0.15 if quick else 0.35
    result: dict[str, Any] = {"benchmark": "cache", "quick": quick, "python": platform.python_version(),
                              "machine": platform.machine(), "faq_share_of_openings": FAQ_SHARE}
    result["answers"] = {"memory": await _answers(MemoryCache(), agent, calls, delay)}
    redis_url: str | None = None
    server = None
    try:
        from aybiza.testing.redis_server import RedisServer, redis_server_binary

        if redis_server_binary() is not None:
            server = RedisServer().start()
            redis_url = server.url
        else:
            result["answers"]["redis"] = {"skipped": "redis-server not installed"}
        if redis_url:
            cache = RedisCache(redis_client(redis_url), owns_client=True)
            result["answers"]["redis"] = await _answers(cache, agent, calls, delay)
            await cache.aclose()
        result["tts"] = await _tts(MemoryCache(), agent, calls // 2, 0.08 if quick else 0.15)
        result["agent_configs"] = await _agent_configs(MemoryCache(), calls)
        with tempfile.TemporaryDirectory(prefix="aybiza-bench-") as tmp:
            result["state"] = await _state(Path(tmp), redis_url, 30 if quick else 150)
    finally:
        if server is not None:
            server.stop()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def run(quick: bool) -> dict[str, Any]:
    """Run the benchmark; a dict of results (see the module docstring)."""
    return anyio.run(_main, quick)


def main() -> None:
    """Run standalone and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    result = run(quick=parser.parse_args().quick)
    for backend, row in result["answers"].items():
        if "skipped" in row:
            print(f"answers[{backend}]: skipped ({row['skipped']})")
            continue
        print(f"answers[{backend}]: hit ratio {row['hit_ratio_cacheable']:.1%} of cacheable lookups, "
              f"{row['hit_ratio_faq_openings']:.1%} of FAQ openings "
              f"({row['hit_ratio_faq_openings_second_half']:.1%} in the second half); "
              f"LLM calls avoided {row['llm_calls_avoided']} of {row['turns']} turns; first sentence "
              f"cached p50 {row['latency_cached_first_sentence']['p50_ms']} ms vs fresh "
              f"{row['latency_fresh_first_sentence']['p50_ms']} ms")
    tts = result["tts"]
    print(f"tts: hit ratio {tts['hit_ratio']:.1%}; first audio cached p50 {tts['first_audio_cached']['p50_ms']} ms "
          f"vs fresh {tts['first_audio_fresh']['p50_ms']} ms")
    configs = result["agent_configs"]
    print(f"agent configs: hit ratio {configs['hit_ratio']:.2%} over {configs['reads']} reads")
    for backend, row in result["state"].items():
        print(f"state[{backend}]: {row}")


if __name__ == "__main__":
    main()
