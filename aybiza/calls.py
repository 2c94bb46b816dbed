"""How each transport's calls enter a session: admission, the caller's identity, then :class:`CallSession`.

Twilio: a stream is admitted (phone budget), accepted, read up to its
``start`` (which must bring back the one-time token the signed webhook
minted, for the same ``CallSid``), and then run as a session over a
:class:`~aybiza.transports.twilio_ws.TwilioStream`, with call control over
Twilio's REST API when an account is configured.

WebRTC: an offer is admitted (browser budget), answered, and its call run
as a session over a :class:`~aybiza.transports.webrtc.WebRTCPeer` in the
process's task group of browser calls.
"""

from __future__ import annotations

import logging
import secrets

from starlette.websockets import WebSocket

from .pipeline import CallContext
from .runtime import Runtime
from .session import CallSession, Ticket
from .transports.tokens import Announcement
from .transports.twilio_rest import TwilioCallControl
from .transports.twilio_ws import TwilioStream, accept_stream, close_websocket
from .transports.webrtc import Offer, WebRTCCalls, WebRTCPeer, ice_servers

__all__ = ["BrowserCalls", "serve_twilio_stream"]

log = logging.getLogger("aybiza.calls")


async def serve_twilio_stream(websocket: WebSocket, runtime: Runtime) -> None:
    """Run one Media Stream as a call, from admission to archive."""
    ticket = runtime.admission.admit("twilio")
    if ticket is None:
        log.warning("refused stream: at capacity (%d calls)", runtime.admission.active)
        await websocket.close(code=1013, reason="at capacity")
        return
    try:
        announced: list[Announcement] = []

        def check_token(custom: dict[str, str]) -> bool:
            announcement = runtime.tokens.redeem(custom.get("call_token", ""))
            if announcement is not None:
                announced.append(announcement)
            return announcement is not None

        settings = runtime.settings
        accepted = await accept_stream(websocket, check_token=check_token,
                                       max_message_bytes=settings.max_message_bytes)
        if accepted is None:
            return
        protocol, started = accepted
        announcement = announced[0]
        if announcement.call_sid and started.call_sid != announcement.call_sid:
            log.warning("refused stream: start.callSid does not match the call the webhook announced")
            await close_websocket(websocket, 1008, "callSid does not match the announced call")
            return
        ctx = CallContext(call_id=started.call_sid or announcement.call_sid, transport="twilio",
                          caller=announcement.caller, agent_id=announcement.agent_id,
                          custom={k: v for k, v in started.custom_parameters.items() if k != "call_token"})
        control = None
        if settings.twilio_account_sid and settings.twilio_auth_token:
            control = TwilioCallControl(ctx.call_id, account_sid=settings.twilio_account_sid,
                                        auth_token=settings.twilio_auth_token, api_url=settings.twilio_api_url)
        await CallSession(runtime, ctx, TwilioStream(websocket, protocol, ctx, control=control)).run()
    finally:
        ticket.release()


class BrowserCalls:
    """The process's browser calls: each admitted offer is answered and run as a session."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.ice = ice_servers(settings.ice_servers, settings.ice_username, settings.ice_credential)
        self.calls = WebRTCCalls(self._run, ice=self.ice)
        self._tickets: dict[str, Ticket] = {}

    async def answer(self, offer: Offer, client: str) -> tuple[str, str, str] | None:
        """``(sdp, type, call id)`` of the answer, or None when the browser budget is used up.

        Raises ProtocolError for an unusable offer.
        """
        runtime = self.runtime
        ticket = runtime.admission.admit("webrtc")
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
            await CallSession(self.runtime, peer.ctx, peer).run()
        finally:
            self._release(peer.ctx.call_id)

    def _release(self, call_id: str) -> None:
        ticket = self._tickets.pop(call_id, None)
        if ticket is not None:
            ticket.release()



