"""The ASGI app: TwiML webhook, Twilio Media Streams, WebRTC offer and demo page, health, a small JSON API.

``create_app(settings)`` wires a call together: the signed webhook mints a
one-time token, the stream brings it back, and the speech stack builds the
call's pipeline. Models load once at startup (off the event loop);
``GET /health`` answers 200 only once they have.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket
from twilio.twiml.voice_response import Connect, VoiceResponse

from .config import Settings
from .errors import ProtocolError
from .observability.dashboard import render_dashboard
from .pipeline import CallContext, Frame, Processor
from .runtime import Runtime
from .stack import SpeechStack
from .transports.tokens import Announcement
from .transports.twilio import Started
from .transports.twilio_ws import CallSetup, serve_stream
from .transports.webrtc import WEB_DIR, WebRTCCalls, WebRTCSetup, demo_page, ice_servers_from_env, parse_offer

__all__ = ["create_app"]

log = logging.getLogger("aybiza.server")
MAX_OFFER_BYTES = 128 * 1024


def create_app(settings: Settings | None = None, stack: SpeechStack | None = None) -> Starlette:
    """The ASGI application for ``settings`` (defaults: environment and the embedded stack)."""
    state = Runtime(settings or Settings(), stack)
    ice_servers = ice_servers_from_env()
    webrtc = WebRTCCalls(WebRTCSetup(build=state.stack.build, on_end=state.call_ended, ice_servers=ice_servers))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with state.run(), webrtc.running():
            yield

    async def health(request: Request) -> Response:
        if not state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "active_calls": len(state.calls)})

    async def twiml(request: Request) -> Response:
        form = await request.form()
        params = {key: str(value) for key, value in form.items()}
        url = state.public_url(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
        if not state.signature_ok(url, params, request.headers.get("X-Twilio-Signature", "")):
            log.warning("refused /twiml: bad or missing X-Twilio-Signature for %s", url)
            return PlainTextResponse(
                "403 Forbidden: X-Twilio-Signature is missing or does not match this server's Twilio auth "
                "token and public URL (AYBIZA_PUBLIC_URL). Set AYBIZA_TWILIO_VALIDATE=false only for local use.\n",
                status_code=403,
            )
        caller = params.get("From", "")
        agent_id = request.query_params.get("agent", state.settings.default_agent)
        if not state.stack.has_agent(agent_id):
            log.warning("refused /twiml: unknown agent %r", agent_id)
            return PlainTextResponse(f"404 Not Found: no agent {agent_id!r}\n", status_code=404)
        call_sid = params.get("CallSid", "")
        token = state.tokens.mint(call_sid, caller, agent_id)
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=state.public_url("/twilio/stream", websocket=True))
        stream.parameter(name="call_token", value=token)
        stream.parameter(name="caller", value=caller)
        stream.parameter(name="agent", value=agent_id)
        response.append(connect)
        return Response(str(response), media_type="application/xml")

    async def twilio_stream(websocket: WebSocket) -> None:
        signature = websocket.headers.get("X-Twilio-Signature")
        if signature is not None and not state.signature_ok(
            state.public_url(websocket.url.path, websocket=True), {}, signature
        ):
            log.warning("refused stream: bad X-Twilio-Signature on the WebSocket upgrade")
            await websocket.close(code=1008, reason="bad X-Twilio-Signature")
            return
        if len(state.calls) >= state.settings.max_calls:
            log.warning("refused stream: at capacity (%d calls)", len(state.calls))
            await websocket.close(code=1013, reason="at capacity")
            return
        announced: list[Announcement] = []

        def check_token(custom: dict[str, str]) -> bool:
            announcement = state.tokens.redeem(custom.get("call_token", ""))
            if announcement is not None:
                announced.append(announcement)
            return announcement is not None

        def context(started: Started) -> CallContext:
            announcement = announced[0]
            ctx = CallContext(
                call_id=started.call_sid or announcement.call_sid,
                transport="twilio",
                caller=announcement.caller,
                agent_id=announcement.agent_id,
                custom=dict(started.custom_parameters),
            )
            ctx.custom.pop("call_token", None)
            state.call_started(ctx)
            return ctx

        async def build(ctx: CallContext, started: Started) -> tuple[list[Processor], list[Frame]]:
            history, resumed = await state.open_call(ctx)
            return state.stack.build(ctx, history=history, resumed=resumed)

        setup = CallSetup(
            check_token=check_token,
            build=build,
            context=context,
            on_end=state.call_ended,
            max_message_bytes=state.settings.max_message_bytes,
        )
        await serve_stream(websocket, setup)

    async def demo(request: Request) -> Response:
        return HTMLResponse(demo_page(ice_servers), headers={"Content-Security-Policy": "default-src 'self'"})

    async def webrtc_offer(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_OFFER_BYTES:
                return PlainTextResponse(f"413 Payload Too Large: an offer is at most {MAX_OFFER_BYTES} bytes\n",
                                         status_code=413)
        try:
            offer = parse_offer(json.loads(body))
        except (ProtocolError, ValueError) as error:
            return PlainTextResponse(f"400 Bad Request: {error}\n", status_code=400)
        agent_id = offer.agent or state.settings.default_agent
        if not state.stack.has_agent(agent_id):
            return PlainTextResponse(f"404 Not Found: no agent {agent_id!r}\n", status_code=404)
        if len(state.calls) >= state.settings.max_calls:
            log.warning("refused /webrtc/offer: at capacity (%d calls)", len(state.calls))
            return PlainTextResponse("503 Service Unavailable: at capacity\n", status_code=503)
        client = request.client.host if request.client else ""
        ctx = CallContext(call_id=f"WR{secrets.token_hex(16)}", transport="webrtc", agent_id=agent_id,
                          codec="opus", custom={"client": client})
        try:
            answer = await webrtc.open(ctx, offer)
        except ProtocolError as error:
            log.warning("refused /webrtc/offer: %s", error)
            return PlainTextResponse(f"400 Bad Request: {error}\n", status_code=400)
        # Registered before the call's task first runs (no await in between), so call_ended finds it.
        state.call_started(ctx)
        return JSONResponse({"sdp": answer.sdp, "type": answer.type, "call_id": ctx.call_id})

    async def list_calls(request: Request) -> Response:
        if (refusal := state.api_refusal(request)) is not None:
            return refusal
        if state.store is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        query = request.query_params
        try:
            limit, offset = min(int(query.get("limit", 50)), 500), max(int(query.get("offset", 0)), 0)
        except ValueError:
            return PlainTextResponse("400 Bad Request: limit and offset are integers\n", status_code=400)
        body = await state.store.list_calls(limit=limit, offset=offset, status=query.get("status"),
                                            agent_id=query.get("agent"))
        return JSONResponse(body)

    async def get_call(request: Request) -> Response:
        if (refusal := state.api_refusal(request)) is not None:
            return refusal
        if state.store is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        record = await state.store.get(request.path_params["call_id"])
        if record is None:
            return PlainTextResponse("404 Not Found: no such call\n", status_code=404)
        return JSONResponse(record.model_dump(mode="json"))

    async def metrics(request: Request) -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    async def dashboard(request: Request) -> Response:
        if (refusal := state.api_refusal(request)) is not None:
            return refusal
        return HTMLResponse(render_dashboard(state.metrics.snapshot()))

    async def dashboard_data(request: Request) -> Response:
        if (refusal := state.api_refusal(request)) is not None:
            return refusal
        return JSONResponse(state.metrics.snapshot())

    routes = [
        Route("/health", health),
        Route("/twiml", twiml, methods=["POST"]),
        WebSocketRoute("/twilio/stream", twilio_stream),
        Route("/api/calls", list_calls),
        Route("/api/calls/{call_id}", get_call),
        Route("/metrics", metrics),
        Route("/dashboard", dashboard),
        Route("/api/dashboard", dashboard_data),
        Route("/", demo),
        Route("/webrtc/offer", webrtc_offer, methods=["POST"]),
        Mount("/web", StaticFiles(directory=WEB_DIR), name="web"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.aybiza = state
    return app
