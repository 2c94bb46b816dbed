"""The process-wide state of a server: its services, built once from Settings, and the bookkeeping of calls.

A :class:`Runtime` owns what every call shares: the engines, the edge cache,
the agent-config cache, routing (when calls go to cloud regions), the call
store, the metrics, the failsafe voice, call admission and the one-time
call tokens. It answers no HTTP: the routes in :mod:`aybiza.server` and the
call entry points in :mod:`aybiza.calls` use it.

``run()`` is the server's lifespan: it loads models off the event loop,
opens the durable call store and archives the calls a previous process left
open as ``interrupted``, then keeps the background work going (store
keepalive, recovery sweeps, retention, region health probes, shared health)
until shutdown. ``dependencies()`` says what each provider is doing, for
``/health`` and ``/ready``. A serving process (``aybiza serve``) also
freezes its startup heap for the garbage collector (:func:`freeze_startup_heap`).
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from .agents import AgentConfig
from .config import Settings
from .edge.agent_configs import AgentConfigs
from .edge.cache import Cache, open_cache
from .edge.calls import CallStore, open_call_store
from .edge.redis_util import redis_client
from .engines import Engines
from .errors import AybizaError, ConfigError, EndReason
from .observability.metrics import Metrics
from .outbound.registry import OutboundCalls
from .pipeline import CacheKind, CallContext, IncidentKind
from .processors.language import DEFAULT_LANGUAGES
from .recording.salvage import salvage_recordings
from .recording.storage import RecordingStore
from .results.delivery import PostCallResults
from .routing.costs import cost_of, tokens_cost
from .routing.service import RoutingService
from .routing.shared import SharedHealth
from .session.admission import Admission, RateLimit
from .session.ending import LiveCalls
from .session.failsafe import FailsafeVoice
from .session.rendered_cache import RenderedCache
from .stack import SpeechStack
from .transports.tokens import CallTokens

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Runtime", "freeze_startup_heap"]

log = logging.getLogger("aybiza.runtime")

_RECENT_S = 60.0  # a fallback taken this recently marks its provider degraded in /health


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now out of the garbage collector's sight (``gc.freeze``).

    What a server builds at startup (modules, pydantic and boto3 models,
    engines, routes: about 126,000 tracked objects) lives as long as the
    process, yet every full collection walked all of it again: 93 ms at
    idle, 195 ms with 100 calls live, and about one full collection every
    30 s under load stalls every call's audio for that long (a 20 ms p99
    frame-lateness window fails on one such pause). Frozen, a full
    collection walks only what calls created: 94 ms instead of 180 ms with
    200 calls live (measured in process on the scripted stack). Reference
    counting still frees frozen objects; only a cycle among startup objects
    would never be collected, and those live until exit anyway. The
    collection thresholds stay the default: raising them traded more,
    shorter pauses for fewer pauses of 20-60 ms and let ended calls'
    garbage (their cancelled tasks' tracebacks are cycles) pile up for
    minutes. Only for a serving process: a test process builds apps and
    throws them away.
    """
    gc.collect()
    gc.freeze()


class Runtime:
    """One server process's services and the bookkeeping of every call's start and end.

    ``freeze_heap``: freeze the startup heap once ready (:func:`freeze_startup_heap`); serving processes do.
    """

    def __init__(self, settings: Settings, engines: Engines | None = None, *, freeze_heap: bool = False) -> None:
        self.settings = settings
        self.freeze_heap = freeze_heap
        self.node_id = f"{socket.gethostname()}-{os.getpid()}"
        self.engines = engines or Engines(settings)
        self.metrics = Metrics()
        self.cache: Cache = open_cache(settings.redis_url or None)
        self.agents = AgentConfigs.from_settings(
            settings, self.cache, on_lookup=lambda hit: self.metrics.cache(CacheKind.AGENT, hit))
        shared = SharedHealth(redis_client(settings.redis_url), self.node_id) if settings.redis_url else None
        self.routing = RoutingService.from_settings(settings, shared=shared)
        self.stack = SpeechStack(settings, self.engines, cache=self.cache, routing=self.routing,
                                 cost_so_far=self._tokens_cost)
        self.failsafe = FailsafeVoice(self.engines.local_voice, self.engines.other_languages_voice,
                                      cache=RenderedCache(settings.startup_cache_dir / "failsafe"))
        self.admission = Admission(
            settings.max_calls, {"webrtc": settings.max_browser_calls},
            per_client={"webrtc": settings.max_browser_calls_per_ip},
            waiting_total=settings.max_pending_streams, waiting_per_client=settings.max_pending_streams_per_ip,
            offers=RateLimit(settings.browser_offers_per_minute, settings.browser_offer_burst))
        self.tokens = CallTokens(settings.call_token_ttl_s, max_pending=settings.max_call_tokens)
        self.outbound = OutboundCalls()  # outbound calls dialled from here (issue 14, item 3)
        self.languages = frozenset(DEFAULT_LANGUAGES)
        self.store: CallStore | None = None
        self.results: PostCallResults | None = None  # post-call webhooks (issue 14, item 6)
        self.recordings = RecordingStore(settings)  # call recording (issue 14, item 4)
        self.calls: dict[str, CallContext] = {}
        self.live = LiveCalls()  # the running sessions, each endable by a draining node (clean-up: drain)
        self.ready = False
        self._default_agent: AgentConfig | None = None
        # Scale-out (issue 16): the node's place among the nodes on this Redis, and whether it drains.
        self.cluster: Cluster | None = None
        self.draining = False
        self.metrics.node_state(lambda: self.draining, lambda: self.admission.total,
                                (lambda: self.cluster.seen_nodes if self.cluster is not None else 0)
                                if settings.redis_url else None)

    @property
    def routing_for_calls(self) -> RoutingService | None:
        """The routing calls use, when they go to cloud regions (else everything runs here, region ``local``)."""
        return self.routing if self.settings.llm == "bedrock" else None

    # -- lifespan ------------------------------------------------------------------

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Load, recover, serve, and shut down cleanly."""
        started = time.perf_counter()
        settings = self.settings
        self._default_agent = await self.agents.get(settings.default_agent)
        agent = self._default_agent
        await anyio.to_thread.run_sync(self.engines.warm, agent)
        await anyio.to_thread.run_sync(self.stack.warm)
        await anyio.to_thread.run_sync(
            lambda: self.failsafe.warm(agent.apology, f"{agent.apology} {agent.goodbye}",
                                       f"{agent.apology} {agent.retry_prompt}", f"{agent.apology} {agent.handoff}",
                                       language=agent.language))
        self.store = await open_call_store(settings.data_dir, redis_url=settings.redis_url or None,
                                           archive_url=settings.archive_url or None)
        self.stack.store = self.store
        from .results.service import open_post_call_results

        self.results = open_post_call_results(settings, self.store, self.agents, self.metrics, self.engines)
        interrupted = await self.store.recover_interrupted(stream_wait_s=settings.call_token_ttl_s)
        warming: threading.Thread | None = None
        if interrupted:
            log.warning("archived %d call(s) left open by a previous process as interrupted: %s",
                        len(interrupted), ", ".join(interrupted))
        await self._salvage_recordings()
        await self.interrupted_calls_ended(interrupted)
        try:
            if settings.redis_url:
                from .cluster import Cluster

                self.cluster = await Cluster.open(self)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.store.keepalive)
                if self.cluster is not None:
                    tg.start_soon(self.cluster.run)
                tg.start_soon(self._housekeeping)
                tg.start_soon(self.results.run)
                if self.routing_for_calls is not None:
                    if settings.health_probes:
                        tg.start_soon(self.routing.prober().run)
                    tg.start_soon(self._export_region_health)
                    tg.start_soon(self.routing.share_health)
                if self.freeze_heap:
                    freeze_startup_heap()
                # What calls need a moment later (multilingual whisper, language ID) loads while we serve.
                warming = self.engines.warm_in_background(agent)
                self.ready = True
                log.info("ready in %.1f s: stt=%s llm=%s tts=%s, public URL %s", time.perf_counter() - started,
                         settings.stt, settings.llm, settings.tts, settings.base_url)
                yield
                tg.cancel_scope.cancel()
        finally:
            self.ready = False
            with anyio.CancelScope(shield=True):
                if self.cluster is not None:
                    await self.cluster.aclose()
                if self.results is not None:
                    await self.results.outbox.aclose()
                await self.store.aclose()
                await self.cache.aclose()
                if warming is not None:  # a model half loaded while the interpreter exits may crash it
                    await anyio.to_thread.run_sync(warming.join, 60.0)
                self.engines.close()

    async def _housekeeping(self) -> None:
        """Sweep calls of processes that died meanwhile, and calls whose stream never came; purge old transcripts
        (and recordings on disk) daily. Every minute, or as often as a call token lives if that is shorter (a
        stream that has not come by then never will: its call is due in the archive)."""
        last_purge = 0.0
        while True:
            await anyio.sleep(min(60.0, self.settings.call_token_ttl_s))
            assert self.store is not None
            try:
                interrupted = await self.store.recover_interrupted(
                    min_idle_s=30, stream_wait_s=self.settings.call_token_ttl_s)
                await self._salvage_recordings()
                await self.interrupted_calls_ended(interrupted)
                await self.store.flush_outbox()
                if self.settings.retention_days and time.monotonic() - last_purge > 86400:
                    purged = await self.store.purge(self.settings.retention_days)
                    last_purge = time.monotonic()
                    log.info("retention: removed transcripts of %d archived call(s)", purged)
                    removed = await anyio.to_thread.run_sync(self.recordings.purge, self.settings.retention_days)
                    if removed:
                        log.info("retention: removed %d recording(s) from the data directory", removed)
            except AybizaError as error:
                log.warning("housekeeping failed, will retry: %s", error)

    async def interrupted_calls_ended(self, call_ids: list[str]) -> None:
        """Queue the post-call webhook of calls archived as ``interrupted`` here (their own process died
        before it could): the records as archived, recordings salvaged first where this node has them."""
        if not call_ids or self.results is None or self.store is None:
            return
        try:
            records = [record for call_id in call_ids if (record := await self.store.archive.get(call_id))]
        except Exception as error:  # noqa: BLE001 - the archive blipped: these calls go without their webhook
            log.error("webhooks of %d interrupted call(s) not queued: %s: %s", len(call_ids),
                      type(error).__name__, error)
            return
        await self.results.enqueue_interrupted(records)

    async def _salvage_recordings(self) -> None:
        """File and link the recordings of interrupted calls (left as ``.part`` by a process that died)."""
        assert self.store is not None
        try:
            await salvage_recordings(self.recordings, self.store)
        except (OSError, AybizaError) as error:  # the calls are archived; their recordings wait for the next sweep
            log.warning("recordings of interrupted calls not filed yet: %s", error)

    async def _export_region_health(self) -> None:
        while True:
            for name, health in self.routing.snapshot().regions.items():
                self.metrics.region_state(name, health.state, health.latency_ms / 1000 if health.latency_ms else None)
            await anyio.sleep(2)

    # -- calls ---------------------------------------------------------------------

    def fallback_agent(self) -> AgentConfig:
        """The agent whose apology and goodbye a call without a usable agent hears."""
        if self._default_agent is None:
            raise ConfigError("the default agent is not loaded yet")
        return self._default_agent

    def call_started(self, ctx: CallContext) -> None:
        """Register a live call."""
        self.calls[ctx.call_id] = ctx
        self.metrics.call_started()
        if self.routing_for_calls is not None and ctx.region != "local":
            self.routing.health.call_started(ctx.region)
        ctx.log.info("call started: transport=%s country=%s agent=%s", ctx.transport, ctx.caller_country or "?",
                     ctx.agent_id)

    def _tokens_cost(self, ctx: CallContext) -> float:
        return tokens_cost(ctx.ledger.usage(), ctx.region)

    def price(self, ctx: CallContext) -> dict[str, Any] | None:
        """The call's cost so far from its ledger (None when a price is missing: the record is kept regardless)."""
        minutes = (time.monotonic() - ctx.started_at) / 60
        try:
            return cost_of(ctx.ledger.usage(), ctx.region, minutes, transport=ctx.transport).to_dict()
        except AybizaError as error:
            ctx.log.warning("call not priced: %s", error)
            return None

    def call_ended(self, ctx: CallContext, reason: EndReason, cost: dict[str, Any] | None) -> None:
        """Take the call off the live calls and count it."""
        self.outbound.ended(ctx.call_id)
        if self.calls.pop(ctx.call_id, None) is None:
            return
        if self.routing_for_calls is not None and ctx.region != "local":
            self.routing.health.call_ended(ctx.region)
        total = float(cost["total_usd"]) if cost is not None else 0.0
        self.metrics.call_ended(total, region=ctx.region, country=ctx.caller_country,
                                model=ctx.ledger.usage().answered_by, reason=reason.value, failed=not reason.normal)

    # -- health ----------------------------------------------------------------------

    def dependencies(self) -> dict[str, dict[str, Any]]:
        """What each dependency is doing now: ``ok``, ``degraded`` (a fallback serves) or ``down``."""
        settings, metrics = self.settings, self.metrics
        incidents = metrics.snapshot()["incidents"]

        def provider(name: str, fallback: str | None, kind: IncidentKind) -> dict[str, Any]:
            # A fallback taken in the last minute: the provider is failing and the local one serves.
            since = metrics.since_incident(kind)
            recent = fallback is not None and since is not None and since < _RECENT_S
            return {"provider": name, "state": "degraded" if recent else "ok", "fallback": fallback,
                    "fallbacks_taken": incidents.get(kind.value, 0)}

        status: dict[str, dict[str, Any]] = {
            "store": {"state": "ok" if self.store is not None else "down",
                      "kind": "redis" if settings.redis_url else "sqlite"},
            "stt": provider(settings.stt, "whisper" if settings.stt == "deepgram" else None,
                            IncidentKind.STT_FALLBACK),
            "tts": provider(settings.tts, "local voice" if settings.tts == "deepgram" else None,
                            IncidentKind.TTS_FALLBACK),
            "llm": {"provider": settings.llm, "state": "ok"},
        }
        if self.routing_for_calls is not None:
            regions = {name: str(view.state) + ("" if str(view.breaker) == "closed" else f"/{view.breaker}")
                       for name, view in self.routing.snapshot().regions.items()}
            usable = [name for name, state in regions.items() if state in ("healthy", "degraded")]
            status["llm"].update(regions=regions, usable=len(usable),
                                 state="ok" if len(usable) == len(regions) else "degraded" if usable else "down")
        return status

    def can_serve(self) -> tuple[bool, str]:
        """Whether a new call could be answered now, and why not."""
        if not self.ready:
            return False, "starting"
        if self.draining:
            return False, "draining"
        for name, dependency in self.dependencies().items():
            if dependency["state"] == "down":
                return False, f"{name} is down"
        if self.admission.active >= self.admission.total:
            return False, "at capacity"
        return True, "ok"
