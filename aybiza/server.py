"""The ASGI app: thin routes over the process's :class:`~aybiza.runtime.Runtime`.

``POST /twiml`` (signed) mints a one-time call token and connects Twilio's
Media Stream; ``/twilio/stream`` and ``/webrtc/offer`` hand calls to their
sessions (:mod:`aybiza.calls`); ``/health`` says what each dependency is
doing, ``/ready`` whether a call could be answered now; ``/api/calls``,
``/metrics`` and ``/dashboard`` show what happened.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket
from twilio.twiml.voice_response import Connect, VoiceResponse

from .calls import BrowserCalls, serve_twilio_stream
from .config import Settings
from .engines import Engines
from .errors import ProtocolError
from .guard import Guard
from .observability.dashboard import render_dashboard
from .runtime import Runtime
from .transports.webrtc import WEB_DIR, demo_page, parse_offer

__all__ = ["create_app"]

log = logging.getLogger("aybiza.server")
MAX_OFFER_BYTES = 128 * 1024


def create_app(settings: Settings | None = None, engines: Engines | None = None, *,
               freeze_heap: bool = False) -> Starlette:
    """The ASGI application for ``settings`` (defaults: environment and the embedded stack).

    ``freeze_heap``: a serving process's app freezes its startup heap once ready (see
    :func:`~aybiza.runtime.freeze_startup_heap`).
    """
    runtime = Runtime(settings or Settings(), engines, freeze_heap=freeze_heap)
    guard = Guard(runtime.settings)
    browser = BrowserCalls(runtime)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with runtime.run(), browser.calls.running():
            yield

    async def health(request: Request) -> Response:
        if not runtime.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        dependencies = runtime.dependencies()
        degraded = any(d["state"] != "ok" for d in dependencies.values())
        return JSONResponse({"status": "degraded" if degraded else "ok", "active_calls": len(runtime.calls),
                             "dependencies": dependencies})

    async def ready(request: Request) -> Response:
        ok, why = runtime.can_serve()
        return JSONResponse({"ready": ok, "reason": why}, status_code=200 if ok else 503)

    async def twiml(request: Request) -> Response:
        form = await request.form()
        params = {key: str(value) for key, value in form.items()}
        url = guard.public_url(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
        if not guard.signature_ok(url, params, request.headers.get("X-Twilio-Signature", "")):
            log.warning("refused /twiml: bad or missing X-Twilio-Signature for %s", url)
            return PlainTextResponse(
                "403 Forbidden: X-Twilio-Signature is missing or does not match this server's Twilio auth "
                "token and public URL (AYBIZA_PUBLIC_URL). Set AYBIZA_TWILIO_VALIDATE=false only for local use.\n",
                status_code=403,
            )
        caller = params.get("From", "")
        agent_id = request.query_params.get("agent", runtime.settings.default_agent)
        if not runtime.agents.exists(agent_id):
            log.warning("refused /twiml: unknown agent %r", agent_id)
            return PlainTextResponse(f"404 Not Found: no agent {agent_id!r}\n", status_code=404)
        token = runtime.tokens.mint(params.get("CallSid", ""), caller, agent_id)
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=guard.public_url("/twilio/stream", websocket=True))
        stream.parameter(name="call_token", value=token)
        stream.parameter(name="caller", value=caller)
        stream.parameter(name="agent", value=agent_id)
        response.append(connect)
        return Response(str(response), media_type="application/xml")

    async def twilio_stream(websocket: WebSocket) -> None:
        signature = websocket.headers.get("X-Twilio-Signature")
        if signature is not None and not guard.signature_ok(
            guard.public_url(websocket.url.path, websocket=True), {}, signature
        ):
            log.warning("refused stream: bad X-Twilio-Signature on the WebSocket upgrade")
            await websocket.close(code=1008, reason="bad X-Twilio-Signature")
            return
        await serve_twilio_stream(websocket, runtime)

    async def demo(request: Request) -> Response:
        return HTMLResponse(demo_page(browser.ice), headers={"Content-Security-Policy": "default-src 'self'"})

    async def webrtc_offer(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_OFFER_BYTES:
                return PlainTextResponse(f"413 Payload Too Large: an offer is at most {MAX_OFFER_BYTES} bytes\n",
                                         status_code=413)
        try:
            offer = parse_offer(json.loads(body))
        except (ProtocolError, ValueError, RecursionError) as error:
            return PlainTextResponse(f"400 Bad Request: {error}\n", status_code=400)
        agent_id = offer.agent or runtime.settings.default_agent
        if not runtime.agents.exists(agent_id):
            return PlainTextResponse(f"404 Not Found: no agent {agent_id!r}\n", status_code=404)
        client = request.client.host if request.client else ""
        try:
            answer = await browser.answer(offer, client)
        except ProtocolError as error:
            log.warning("refused /webrtc/offer: %s", error)
            return PlainTextResponse(f"400 Bad Request: {error}\n", status_code=400)
        if answer is None:
            log.warning("refused /webrtc/offer: browser calls at capacity")
            return PlainTextResponse("503 Service Unavailable: at capacity\n", status_code=503)
        sdp, kind, call_id = answer
        return JSONResponse({"sdp": sdp, "type": kind, "call_id": call_id})

    async def list_calls(request: Request) -> Response:
        if (refusal := guard.api_refusal(request)) is not None:
            return refusal
        if runtime.store is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        query = request.query_params
        try:
            limit, offset = min(int(query.get("limit", 50)), 500), max(int(query.get("offset", 0)), 0)
        except ValueError:
            return PlainTextResponse("400 Bad Request: limit and offset are integers\n", status_code=400)
        body = await runtime.store.list_calls(limit=limit, offset=offset, status=query.get("status"),
                                              agent_id=query.get("agent"))
        return JSONResponse(body)

    async def get_call(request: Request) -> Response:
        if (refusal := guard.api_refusal(request)) is not None:
            return refusal
        if runtime.store is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        record = await runtime.store.get(request.path_params["call_id"])
        if record is None:
            return PlainTextResponse("404 Not Found: no such call\n", status_code=404)
        return JSONResponse(record.model_dump(mode="json"))

    async def metrics(request: Request) -> Response:
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)

    async def dashboard(request: Request) -> Response:
        if (refusal := guard.api_refusal(request)) is not None:
            return refusal
        return HTMLResponse(render_dashboard(runtime.metrics.snapshot()))

    async def dashboard_data(request: Request) -> Response:
        if (refusal := guard.api_refusal(request)) is not None:
            return refusal
        return JSONResponse(runtime.metrics.snapshot())

    routes = [
        Route("/health", health),
        Route("/ready", ready),
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
    app.state.aybiza = runtime
    return app
