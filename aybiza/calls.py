"""How each transport's calls enter a session: admission, the caller's identity, then :class:`CallSession`.

Twilio: a stream waits for its ``start`` under the admission's caps on
waiting connections (the oldest gives way to a newer one; no call slot is
taken yet), and must then bring back the one-time token the signed webhook
minted, for the same call: CallSid, AccountSid and caller number as announced
(:func:`~aybiza.transports.tokens.binding_refusal`). A call already live here
or already ended is not taken by a second stream. Only then is it admitted
(phone budget) and run as a session over a
:class:`~aybiza.transports.twilio_ws.TwilioStream` with its media timeout and
pace guard, with call control over Twilio's REST API when an account is
configured. Every refusal closes the socket with a reason and is counted in
``aybiza_refused_total``.

WebRTC: an offer is admitted (browser budget, in total and per address),
answered, and its call run as a session over a
:class:`~aybiza.transports.webrtc.WebRTCPeer` in the process's task group of
browser calls — once its media connects. A peer that never connects is
dropped with no session and no record.
"""

from __future__ import annotations

import logging
import secrets

import anyio
from starlette.websockets import WebSocket

from .logs import Throttled
from .pipeline import CallContext
from .runtime import Runtime
from .session import CallSession, Ticket
from .transports.ids import clean_text
from .transports.pacing import MediaPacer
from .transports.tokens import Announcement, binding_refusal
from .transports.twilio_rest import TwilioCallControl
from .transports.twilio_ws import TwilioStream, accept_stream, close_websocket
from .transports.webrtc import Offer, WebRTCCalls, WebRTCPeer, ice_servers

__all__ = ["BrowserCalls", "serve_twilio_stream"]

log = logging.getLogger("aybiza.calls")
_floods = Throttled(log)
_MAX_PARAMETERS, _MAX_PARAMETER_NAME, _MAX_PARAMETER_VALUE = 16, 64, 256


async def serve_twilio_stream(websocket: WebSocket, runtime: Runtime) -> None:
    """Run one Media Stream as a call, from admission to archive."""
    admission, metrics, settings = runtime.admission, runtime.metrics, runtime.settings
    if not admission.has_room("twilio"):
        log.warning("refused stream: at capacity (%d calls)", admission.active)
        metrics.refused("twilio_stream", "at_capacity")
        await websocket.close(code=1013, reason="at capacity")
        return
    client = websocket.client.host if websocket.client else ""
    announced: list[Announcement] = []

    def check_token(custom: dict[str, str]) -> bool:
        announcement = runtime.tokens.redeem(custom.get("call_token", ""))
        if announcement is not None:
            announced.append(announcement)
        return announcement is not None

    let_go = anyio.CancelScope()
    waiting = admission.wait_for_start(client, let_go.cancel)
    try:
        with let_go:
            accepted = await accept_stream(websocket, check_token=check_token,
                                           max_message_bytes=settings.max_message_bytes,
                                           start_timeout_s=settings.stream_start_timeout_s)
    finally:
        waiting.done()
    if let_go.cancelled_caught:
        _floods.warning("waiting", "let a stream go: too many streams waiting for their start (%d from %s)",
                        admission.waiting_per_client, client or "?")
        metrics.refused("twilio_stream", "waiting_cap")
        await close_websocket(websocket, 1013, "too many streams waiting to start")
        return
    if accepted is None:
        metrics.refused("twilio_stream", "no_start")
        return
    protocol, started = accepted
    announcement = announced[0]
    kind, problem = "binding", binding_refusal(announcement, started)
    if problem is None and not await runtime.tokens.claim(announcement):
        problem = "the call token was used already"
    if problem is None:
        kind = "duplicate"
        if started.call_sid in runtime.calls:
            problem = "the call already has a live stream"
        elif await _ended_before(runtime, started.call_sid):
            problem = "the call has already ended"
    if problem is not None:
        log.warning("refused stream from %s: %s", client or "?", problem)
        metrics.refused("twilio_stream", kind)
        await close_websocket(websocket, 1008, problem)
        return
    ticket = admission.admit("twilio")
    if ticket is None:
        log.warning("refused stream: at capacity (%d calls)", admission.active)
        metrics.refused("twilio_stream", "at_capacity")
        await close_websocket(websocket, 1013, "at capacity")
        return
    pacer = MediaPacer(rate=settings.media_rate, burst_s=settings.media_burst_s,
                       close_after_s=settings.media_flood_close_s)
    try:
        ctx = CallContext(call_id=started.call_sid, transport="twilio", caller=announcement.caller,
                          agent_id=announcement.agent_id, custom=_custom(started.custom_parameters))
        control = None
        if settings.twilio_account_sid and settings.twilio_auth_token:
            control = TwilioCallControl(ctx.call_id, account_sid=settings.twilio_account_sid,
                                        auth_token=settings.twilio_auth_token, api_url=settings.twilio_api_url)
        stream = TwilioStream(websocket, protocol, ctx, control=control, media_timeout_s=settings.media_timeout_s,
                              pacer=pacer)
        await CallSession(runtime, ctx, stream).run()
    finally:
        ticket.release()
        metrics.media_dropped("twilio", pacer.dropped_frames)


def _custom(parameters: dict[str, str]) -> dict[str, str]:
    """The stream's ``<Parameter>`` values a call keeps (its record holds them): a few, short, printable."""
    kept = {clean_text(key, _MAX_PARAMETER_NAME): clean_text(value, _MAX_PARAMETER_VALUE)
            for key, value in list(parameters.items())[:_MAX_PARAMETERS] if key != "call_token"}
    return {key: value for key, value in kept.items() if key}


async def _ended_before(runtime: Runtime, call_sid: str) -> bool:
    """Whether ``call_sid`` is archived as ended (Twilio never reconnects an ended call; a replay would)."""
    store = runtime.store
    if store is None:
        return False
    try:
        record = await store.get(call_sid)
    except Exception as error:  # the store is down: the call is taken, as it would be without a record
        log.warning("cannot check the call's record (%s: %s)", type(error).__name__, error)
        return False
    return record is not None and record.status == "ended"


class BrowserCalls:
    """The process's browser calls: each admitted offer is answered, and run as a session once it connects."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.ice = ice_servers(settings.ice_servers, settings.ice_username, settings.ice_credential)
        self.calls = WebRTCCalls(self._run, ice=self.ice, connect_timeout_s=settings.browser_connect_timeout_s,
                                 media_timeout_s=settings.media_timeout_s)
        self._tickets: dict[str, Ticket] = {}

    async def answer(self, offer: Offer, client: str) -> tuple[str, str, str] | None:
        """``(sdp, type, call id)`` of the answer, or None when the browser budget (or this client's) is used up.

        Raises ProtocolError for an unusable offer.
        """
        runtime = self.runtime
        ticket = runtime.admission.admit("webrtc", client)
        if ticket is None:
            return None
        agent_id = offer.agent or runtime.settings.default_agent
        custom = {"client": client} | ({"language": offer.language} if offer.language else {})
        ctx = CallContext(call_id=f"WR{secrets.token_hex(16)}", transport="webrtc", agent_id=agent_id,
                          codec="opus", custom=custom)
        self._tickets[ctx.call_id] = ticket
        try:
            answer = await self.calls.open(ctx, offer.sdp)
        except BaseException:
            self._release(ctx.call_id)
            raise
        return answer.sdp, answer.type, ctx.call_id

    async def _run(self, peer: WebRTCPeer) -> None:
        try:
            if not await peer.wait_connected():
                # No session, no pipeline, no record: an answered offer that never connected is no call.
                self.runtime.metrics.refused("webrtc_offer", "no_connection")
                _floods.warning("no_connection", "browser offer never connected within %g s; dropped",
                                peer.connect_timeout_s)
                return
            await CallSession(self.runtime, peer.ctx, peer).run()
        finally:
            self._release(peer.ctx.call_id)

    def _release(self, call_id: str) -> None:
        ticket = self._tickets.pop(call_id, None)
        if ticket is not None:
            ticket.release()
