"""The process-wide state of a server: settings, speech stack, call tokens, metrics, cache, call store, routing.

Everything a call needs from the process lives here; the ASGI routes in
:mod:`aybiza.server` are thin. ``run()`` is the server's lifespan: it loads
models off the event loop, opens the durable call store and archives the
calls a previous process left open as ``interrupted``, then keeps the
background work going (store keepalive, recovery sweeps, retention, region
health probes) until shutdown.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from twilio.request_validator import RequestValidator

from .config import Settings
from .edge.cache import Cache, open_cache
from .edge.calls import CallStore, open_call_store
from .edge.state import CallFenced, CallStateError
from .errors import AybizaError
from .observability.metrics import Metrics
from .pipeline import CallContext
from .routing.costs import cost_of
from .routing.countries import locate_number
from .routing.service import RoutingService
from .stack import SpeechStack
from .transports.tokens import CallTokens
from .twilio_auth import auth_token_for

__all__ = ["Runtime"]

log = logging.getLogger("aybiza.runtime")

_NORMAL_ENDINGS = frozenset({"stopped", "disconnected", "hangup"})


class Runtime:
    """One server process's state and the bookkeeping of every call's start and end."""

    def __init__(self, settings: Settings, stack: SpeechStack | None = None) -> None:
        self.settings = settings
        self.stack = stack or SpeechStack(settings)
        self.tokens = CallTokens(settings.call_token_ttl_s)
        self.auth_token = auth_token_for(settings)
        self.validator = RequestValidator(self.auth_token)
        self.metrics = Metrics()
        self.cache: Cache = open_cache(settings.redis_url or None)
        self.routing = RoutingService.from_file(settings.catalog_path, model_overrides=settings.model_overrides,
                                                thinking_budget=settings.thinking_budget)
        self.store: CallStore | None = None
        self.calls: dict[str, CallContext] = {}
        self.ready = False
        self.stack.cache = self.cache
        self.stack.routing = self.routing
        self.stack.on_failover = self.metrics.failover

    @property
    def routes_calls(self) -> bool:
        """Whether calls go to cloud regions (else everything runs here, region ``local``)."""
        return self.settings.llm == "bedrock"

    # -- lifespan ------------------------------------------------------------------

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Load, recover, serve, and shut down cleanly."""
        started = time.perf_counter()
        await anyio.to_thread.run_sync(self.stack.warm)
        settings = self.settings
        self.store = await open_call_store(settings.data_dir, redis_url=settings.redis_url or None,
                                           archive_url=settings.archive_url or None)
        self.stack.store = self.store
        interrupted = await self.store.recover_interrupted()
        if interrupted:
            log.warning("archived %d call(s) left open by a previous process as interrupted: %s",
                        len(interrupted), ", ".join(interrupted))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.store.keepalive)
                tg.start_soon(self._housekeeping)
                if self.routes_calls and settings.health_probes:
                    tg.start_soon(self.routing.prober().run)
                    tg.start_soon(self._export_region_health)
                self.ready = True
                log.info("ready in %.1f s: stt=%s llm=%s tts=%s, public URL %s", time.perf_counter() - started,
                         settings.stt, settings.llm, settings.tts, settings.base_url)
                yield
                tg.cancel_scope.cancel()
        finally:
            self.ready = False
            with anyio.CancelScope(shield=True):
                await self.store.aclose()
                await self.cache.aclose()

    async def _housekeeping(self) -> None:
        """Sweep calls of processes that died meanwhile; purge old transcripts daily."""
        last_purge = 0.0
        while True:
            await anyio.sleep(60)
            assert self.store is not None
            try:
                await self.store.recover_interrupted(min_idle_s=30)
                await self.store.flush_outbox()
                if self.settings.retention_days and time.monotonic() - last_purge > 86400:
                    purged = await self.store.purge(self.settings.retention_days)
                    last_purge = time.monotonic()
                    log.info("retention: removed transcripts of %d archived call(s)", purged)
            except AybizaError as error:
                log.warning("housekeeping failed, will retry: %s", error)

    async def _export_region_health(self) -> None:
        while True:
            for name, health in self.routing.health.snapshot().regions.items():
                self.metrics.region_state(name, health.state, health.latency_ms / 1000 if health.latency_ms else None)
            await anyio.sleep(2)

    # -- calls ---------------------------------------------------------------------

    def call_started(self, ctx: CallContext) -> None:
        """Register a live call: where the caller is, where the call goes, and start measuring it."""
        ctx.caller_country = ctx.caller_country or locate_number(ctx.caller).country
        ctx.on_timing = self.metrics.observe_timing
        if self.routes_calls:
            agent = self.stack.agent(ctx.agent_id)
            chosen = self.routing.route_call(ctx.caller, residency=agent.residency)
            ctx.region, ctx.fallback_regions = chosen.region, chosen.fallbacks
            ctx.log.info("route: %s (fallbacks %s): %s", chosen.region, ", ".join(chosen.fallbacks) or "none",
                         chosen.reason)
        self.calls[ctx.call_id] = ctx
        self.metrics.call_started(ctx.caller_country or "unknown", ctx.region, ctx.model_tier)
        ctx.log.info("call started: transport=%s caller=%s country=%s agent=%s", ctx.transport,
                     ctx.caller or "?", ctx.caller_country or "?", ctx.agent_id)

    async def open_call(self, ctx: CallContext) -> tuple[list[dict[str, str]], bool]:
        """Open the call's durable record; a call live elsewhere (a reconnecting stream) is taken over.

        Returns the conversation so far and whether the call was resumed.
        """
        if self.store is None:
            return [], False
        try:
            record, resumed = await self.store.open_call(ctx)
        except CallStateError as error:  # the call goes on; the journal retries its writes
            ctx.log.warning("call record not opened: %s", error)
            return [], False
        if resumed:
            ctx.log.info("resumed a call from another process: %d turn(s) on record", len(record.turns))
        return record.context(), resumed

    async def call_ended(self, ctx: CallContext, reason: str) -> None:
        """Price the call, count it, and commit its record to the durable archive."""
        self.calls.pop(ctx.call_id, None)
        minutes = (time.monotonic() - ctx.started_at) / 60
        # Deepgram is priced at its default models; the embedded engines cost nothing.
        stt = None if self.settings.stt == "deepgram" else self.settings.stt
        tts = None if self.settings.tts == "deepgram" else self.settings.tts
        cost: dict[str, Any] | None = None
        try:
            priced = cost_of(ctx.usage, ctx.region, minutes, stt_model=stt, tts_model=tts, transport=ctx.transport)
            cost = priced.to_dict()
            self.metrics.call_ended(priced.total, ctx.region)
        except AybizaError as error:  # a missing price must not lose the call record
            ctx.log.warning("call not priced: %s", error)
            self.metrics.call_ended(0.0, ctx.region)
        if reason.split(":", 1)[0] not in _NORMAL_ENDINGS:
            self.metrics.error(reason.split(":", 1)[0])
        if self.store is None:
            return
        try:
            await self.store.end_call(ctx, reason, cost=cost)
        except CallFenced:
            ctx.log.info("call moved to another process; it records the end")
        except CallStateError as error:
            ctx.log.error("call record not saved: %s", error)

    # -- requests ------------------------------------------------------------------

    def public_url(self, path: str, *, websocket: bool = False) -> str:
        """Absolute public URL of ``path`` (ws/wss for WebSocket paths)."""
        base = self.settings.base_url
        if websocket:
            scheme, rest = base.split("://", 1)
            base = ("wss://" if scheme == "https" else "ws://") + rest
        return base + path

    def signature_ok(self, url: str, params: dict[str, str], signature: str) -> bool:
        """Check ``X-Twilio-Signature`` unless the check is disabled for local use."""
        if not self.settings.twilio_validate:
            return True
        return bool(signature) and bool(self.validator.validate(url, params, signature))

    def api_refusal(self, request: Request) -> Response | None:
        """Call records hold phone numbers and transcripts: bearer token if set, else loopback only."""
        token = self.settings.api_token
        if token:
            if secrets.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
                return None
            return PlainTextResponse("401 Unauthorized: send Authorization: Bearer <AYBIZA_API_TOKEN>\n",
                                     status_code=401, headers={"WWW-Authenticate": "Bearer"})
        client = request.client.host if request.client else ""
        if client in ("127.0.0.1", "::1", "localhost"):
            return None
        return PlainTextResponse("403 Forbidden: set AYBIZA_API_TOKEN to use the API from other hosts\n",
                                 status_code=403)
