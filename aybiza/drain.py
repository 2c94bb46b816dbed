"""SIGTERM drains the node: no new calls, live calls finish (or move to other nodes), then a clean exit.

uvicorn's own SIGTERM handling closes every WebSocket at once (code 1012):
every caller on the node would be cut off mid-sentence by a routine deploy.
:class:`DrainingServer` takes the first SIGTERM instead and runs
:func:`drain`:

1. the node drains: ``/ready`` answers 503 (a load balancer stops sending
   webhooks), and in a cluster the node is marked draining in Redis, so
   ``/twiml`` on *any* node stops offering it (:mod:`aybiza.cluster`);
2. live calls go on until they end, for up to ``AYBIZA_DRAIN_TIMEOUT_S`` in a
   cluster, else (no Redis: no other node could ever take them) for up to
   ``AYBIZA_DRAIN_ALONE_S``: waiting longer would only end them the same way
   later, or have the orchestrator kill the process with the callers on the line;
3. calls still live then are **handed over** through the takeover path calls
   already have (a stream reconnecting with the same CallSid on another node
   resumes the call's record and conversation, without a new greeting):
   the node gives the call's live record to a hand-over owner (so its own
   session, when its stream ends, does not archive the call as ended), and
   asks Twilio (REST, ``<Redirect>``) to fetch ``/twiml`` again through the
   webhook URL (the load balancer). Twilio ends the old stream and the
   new TwiML connects one to the freest non-draining node, which takes the
   call over. Twilio never reconnects a Media Stream on its own when the
   socket closes — ``<Connect>`` just ends — so closing the stream alone
   would hang the caller up; the redirect is what moves the call.
4. calls still live after that (a lone node's, browser calls, a redirect
   that failed) are **ended by the node** (:mod:`aybiza.session.ending`):
   each caller hears the agent's apology and goodbye (or is put through to
   the agent's transfer number), and the call is archived with the typed
   reason ``shutdown`` — never a line that just goes dead;
5. the server exits 0.

A second SIGTERM, or Ctrl+C, stops at once the way uvicorn does.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from types import FrameType
from typing import Any
from xml.sax.saxutils import quoteattr

import anyio
import uvicorn

from .errors import AybizaError, EndReason
from .runtime import Runtime
from .transports.twilio_rest import TwilioCallControl

__all__ = ["DrainingServer", "can_hand_over", "drain", "hand_over"]

log = logging.getLogger("aybiza.drain")

HANDOVER_WAIT_S = 15.0
"""After the redirects, how long the handed-over streams get to leave before the node stops anyway."""

GOODBYE_WAIT_S = 20.0
"""How long the calls the node ends get for the apology and goodbye (a few seconds of audio) and the archive."""


async def drain(runtime: Runtime, timeout_s: float, *, poll_s: float = 0.2) -> None:
    """Stop taking calls, let live ones end within the deadline, hand over what can move, end the rest."""
    runtime.draining = True
    if runtime.cluster is not None:
        await runtime.cluster.drain()
    movable = can_hand_over(runtime)
    alone = runtime.cluster is None
    deadline_s = min(timeout_s, runtime.settings.drain_alone_s) if alone else timeout_s
    log.warning("draining: no new calls; %d live call(s) may finish within %g s%s", len(runtime.calls),
                deadline_s, " (no other node can take them)" if alone else "")
    with anyio.move_on_after(deadline_s):
        await _calls_ended(runtime, poll_s)
    moved: set[str] = set()
    if runtime.calls and movable:
        moved = await hand_over(runtime)
        log.warning("drain deadline: handed %d of %d live call(s) to other nodes", len(moved), len(runtime.calls))
        with anyio.move_on_after(HANDOVER_WAIT_S):
            await _calls_ended(runtime, poll_s)
    if runtime.calls:
        asked = runtime.live.end_all(EndReason.SHUTDOWN, "the node stopped (drain deadline)", keep=moved)
        log.warning("drain deadline: ending %d live call(s) with a goodbye", asked)
        if not await runtime.live.wait(GOODBYE_WAIT_S, poll_s=poll_s):
            log.error("drained: %d call(s) did not finish their goodbye in time", len(runtime.live))
    log.warning("drained: %d call(s) still live end with the node", len(runtime.calls))


def can_hand_over(runtime: Runtime) -> bool:
    """Whether live calls can move to other nodes: a cluster on Redis, a store, and Twilio's REST API to redirect."""
    settings = runtime.settings
    return (runtime.store is not None and runtime.cluster is not None
            and bool(settings.twilio_account_sid and settings.twilio_auth_token))


async def _calls_ended(runtime: Runtime, poll_s: float) -> None:
    """Return once the node has no live call (polled: calls end in many places, none of them signals this)."""
    while runtime.calls:  # noqa: ASYNC110
        await anyio.sleep(poll_s)


async def hand_over(runtime: Runtime) -> set[str]:
    """Move this node's live Twilio calls to other nodes (see the module's step 3); the ids of those moved."""
    settings, store = runtime.settings, runtime.store
    if store is None or not can_hand_over(runtime):
        return set()
    moved: set[str] = set()
    for ctx in list(runtime.calls.values()):
        if ctx.transport != "twilio":
            continue
        holder = f"handover-{secrets.token_hex(8)}"
        try:
            claimed = await store.state.take_over(ctx.call_id, holder, expect_owner=store.owner)
        except AybizaError as error:
            log.warning("call %s not handed over: %s", ctx.call_id, error)
            continue
        if claimed is None:
            continue
        url = f"{settings.webhook_base_url}/twiml?agent={ctx.agent_id}"
        control = TwilioCallControl(ctx.call_id, account_sid=settings.twilio_account_sid,
                                    auth_token=settings.twilio_auth_token, api_url=settings.twilio_api_url)
        try:
            await control.redirect(f'<Response><Redirect method="POST">{quoteattr(url)[1:-1]}</Redirect></Response>')
        except AybizaError as error:
            ctx.log.warning("hand-over redirect failed (%s); the call ends with this node", error)
            await store.state.take_over(ctx.call_id, store.owner, expect_owner=holder)
            continue
        ctx.log.info("handed over: Twilio fetches /twiml again and the stream moves to another node")
        moved.add(ctx.call_id)
    return moved


class DrainingServer(uvicorn.Server):
    """uvicorn whose first SIGTERM drains ``runtime`` (:func:`drain`) before the usual shutdown."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._drain_requested = False
        self._drain: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self._drain_requested and not self.should_exit:
            self._drain_requested = True  # picked up by the next tick, on the event loop
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested and self._drain is None:
            self._drain = asyncio.ensure_future(drain(self.runtime, self.runtime.settings.drain_timeout_s))
            self._drain.add_done_callback(self._drained)
        return await super().on_tick(counter)

    def _drained(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("drain failed (%s); stopping", task.exception())
        self.should_exit = True
