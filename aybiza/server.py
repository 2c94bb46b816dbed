"""The ASGI app: thin routes over the process's :class:`~aybiza.runtime.Runtime`.

``POST /twiml`` (signed) mints a one-time call token and connects Twilio's
Media Stream; ``/twilio/stream`` and ``/webrtc/offer`` hand calls to their
sessions (:mod:`aybiza.calls`); ``/health`` says what each dependency is
doing, ``/ready`` whether a call could be answered now; ``/api/calls``
(and a call's recording, :mod:`aybiza.recording.api`), ``/metrics`` and
``/dashboard`` show what happened. Who may use which route
is :mod:`aybiza.guard`'s to say; every body is read bounded, and the webhook's
signature header is looked at before its body is.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket
from twilio.twiml.voice_response import Connect, VoiceResponse

from .calls import BrowserCalls, serve_twilio_stream
from .config import Settings
from .console.routes import console_routes, dashboard_pictures
from .edge.records import Offer
from .engines import Engines
from .errors import ProtocolError
from .guard import DEFAULT_CSP, Guard, SecureHeaders
from .logs import Throttled
from .observability.dashboard import content_security_policy, render_dashboard
from .outbound.routes import outbound_routes
from .recording.api import recording_response
from .runtime import Runtime
from .transports.ids import clean_text, is_sid
from .transports.urls import STREAM_PATH
from .transports.webrtc import WEB_DIR, demo_page, parse_offer

__all__ = ["MAX_OFFER_BYTES", "MAX_PAGE_LIMIT", "MAX_PAGE_OFFSET", "MAX_WEBHOOK_BYTES", "create_app"]

log = logging.getLogger("aybiza.server")
_refusals = Throttled(log)

MAX_OFFER_BYTES = 64 * 1024
"""A browser's offer (an SDP of a few kB, in JSON)."""
MAX_WEBHOOK_BYTES = 16 * 1024
"""Twilio's voice webhook is a form of about 1 kB."""
BODY_TIMEOUT_S = 10.0
"""A request body must arrive within this (its head has the server's header timeout)."""
MAX_PAGE_LIMIT = 500
MAX_PAGE_OFFSET = 1_000_000
_MAX_FILTER_CHARS = 64


class _Refused(Exception):
    """A request refused while its body was read: the response says why."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) unread when ``Content-Length`` is over ``limit``, cut off when a stream is,
    and given up (408) when it takes longer than :data:`BODY_TIMEOUT_S` (a slow body holds a task)."""
    length = request.headers.get("content-length")
    too_large = PlainTextResponse(f"413 Payload Too Large: at most {limit} bytes\n", status_code=413)
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise _Refused(too_large)
    body = bytearray()
    with anyio.move_on_after(BODY_TIMEOUT_S) as scope:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _Refused(too_large)
    if scope.cancelled_caught:
        raise _Refused(PlainTextResponse("408 Request Timeout: the body came too slowly\n", status_code=408))
    return bytes(body)


async def _read_form(request: Request, limit: int) -> dict[str, str]:
    """A urlencoded form (Twilio's webhook), bounded; nothing else is parsed (no multipart, no spooling)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise _Refused(PlainTextResponse("415 Unsupported Media Type: Twilio posts "
                                         "application/x-www-form-urlencoded\n", status_code=415))
    body = await _read_body(request, limit)
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=128))
    except (UnicodeDecodeError, ValueError):
        raise _Refused(PlainTextResponse("400 Bad Request: not a form\n", status_code=400)) from None


def _page(query: QueryParams) -> tuple[int, int]:
    """``limit`` (1..500) and ``offset`` (0..1,000,000) from the query; 400 otherwise."""
    values = []
    for name, default, low, high in (("limit", "50", 1, MAX_PAGE_LIMIT), ("offset", "0", 0, MAX_PAGE_OFFSET)):
        text = query.get(name, default)
        if not (text.isascii() and text.isdigit() and len(text) <= 7 and low <= int(text) <= high):
            raise _Refused(PlainTextResponse(f"400 Bad Request: {name} is an integer from {low} to {high}\n",
                                             status_code=400))
        values.append(int(text))
    return values[0], values[1]


def create_app(settings: Settings | None = None, engines: Engines | None = None, *,
               freeze_heap: bool = False) -> Starlette:
    """The ASGI application for ``settings`` (defaults: environment and the embedded stack).

    ``freeze_heap``: a serving process's app freezes its startup heap once ready (see
    :func:`~aybiza.runtime.freeze_startup_heap`). Raises ConfigError when the settings would expose
    call records without a token.
    """
    runtime = Runtime(settings or Settings(), engines, freeze_heap=freeze_heap)
    settings = runtime.settings
    guard = Guard(settings)
    browser = BrowserCalls(runtime)
    metrics = runtime.metrics

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
                             "waiting_streams": runtime.admission.waiting, "dependencies": dependencies})

    async def ready(request: Request) -> Response:
        ok, why = runtime.can_serve()
        return JSONResponse({"ready": ok, "reason": why}, status_code=200 if ok else 503)

    async def twiml(request: Request) -> Response:
        signature = request.headers.get("X-Twilio-Signature", "")
        if settings.twilio_validate and not signature:  # refused before a byte of the body is read
            return _unsigned(request, "missing")
        try:
            params = await _read_form(request, MAX_WEBHOOK_BYTES)
        except _Refused as refused:
            metrics.refused("twiml", "too_large" if refused.response.status_code == 413 else "bad_request")
            return refused.response
        # Signed over the URL Twilio posted to: the load balancer's (AYBIZA_WEBHOOK_URL) for the calls it
        # balances; this node's own (AYBIZA_PUBLIC_URL) for a call it dialled (outbound/dialing.py names it).
        call_sid, account_sid = params.get("CallSid", ""), params.get("AccountSid", "")
        outbound = runtime.outbound.get(call_sid)  # a call we dialled: the callee is the caller (issue 14.3)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        bases = (settings.webhook_base_url, settings.base_url) if outbound else (settings.webhook_base_url,)
        if not any(guard.signature_ok(base + target, params, signature) for base in dict.fromkeys(bases)):
            return _unsigned(request, "bad")
        if not (is_sid(call_sid, "CA") and is_sid(account_sid, "AC")):
            metrics.refused("twiml", "bad_request")
            log.warning("refused /twiml: CallSid or AccountSid is not a Twilio id")
            return PlainTextResponse("400 Bad Request: CallSid and AccountSid must be Twilio ids\n", status_code=400)
        if settings.twilio_account_sid and account_sid != settings.twilio_account_sid:
            metrics.refused("twiml", "signature")
            log.warning("refused /twiml: a call of another Twilio account")
            return PlainTextResponse("403 Forbidden: not this server's Twilio account\n", status_code=403)
        caller = clean_text(params.get("To" if outbound else "From", ""))
        agent_id = outbound.agent_id if outbound else request.query_params.get("agent", settings.default_agent)
        if not runtime.agents.exists(agent_id):
            log.warning("refused /twiml: unknown agent %r", agent_id[:64])
            return PlainTextResponse(f"404 Not Found: no agent {agent_id[:64]!r}\n", status_code=404)
        # An outbound call's stream must reach the node that dialled it (its AMD verdict waits there).
        stream_url = (guard.public_url(STREAM_PATH, websocket=True) if outbound
                      else await _stream_url(call_sid, caller, agent_id))
        if stream_url is None:
            metrics.refused("twiml", "at_capacity")
            _refusals.warning("placement", "refused /twiml: no node takes calls now (full or draining)")
            return PlainTextResponse("503 Service Unavailable: no node takes calls now\n", status_code=503,
                                     headers={"Retry-After": "5"})
        token = runtime.tokens.mint(call_sid, caller, agent_id, account_sid=account_sid)
        if token is None:
            metrics.refused("twiml", "tokens")
            _refusals.warning("tokens", "refused /twiml: no call token (this call asked too often, or %d calls "
                              "are waiting for their stream)", len(runtime.tokens))
            return PlainTextResponse("429 Too Many Requests: no call token for this call now\n", status_code=429,
                                     headers={"Retry-After": "10"})
        if runtime.cluster is None and runtime.store is not None:  # a cluster keeps its offers in Redis
            await runtime.store.offered(Offer(call_sid=call_sid, caller=caller, agent_id=agent_id,
                                              offered_at=time.time()))
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=stream_url)
        stream.parameter(name="call_token", value=token)
        stream.parameter(name="caller", value=caller)
        stream.parameter(name="agent", value=agent_id)
        if outbound:
            stream.parameter(name="direction", value="outbound")
        response.append(connect)
        return Response(str(response), media_type="application/xml")

    async def _stream_url(call_sid: str, caller: str, agent_id: str) -> str | None:
        """The freest node's stream URL in a cluster (:mod:`aybiza.cluster`), else this node's; None: none takes it."""
        if runtime.cluster is not None:
            return await runtime.cluster.stream_url(call_sid, caller=caller, agent_id=agent_id)
        return None if runtime.draining else guard.public_url(STREAM_PATH, websocket=True)

    def _unsigned(request: Request, how: str) -> Response:
        metrics.refused("twiml", "signature")
        _refusals.warning("signature", "refused /twiml: %s X-Twilio-Signature", how)
        return PlainTextResponse(
            "403 Forbidden: X-Twilio-Signature is missing or does not match this server's Twilio auth "
            "token and public URL (AYBIZA_PUBLIC_URL). Set AYBIZA_TWILIO_VALIDATE=false only for local use.\n",
            status_code=403)

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
        if settings.browser_calls == "local" and (refusal := guard.browser_refusal(request)) is not None:
            return refusal
        return HTMLResponse(demo_page(browser.ice), headers={"Content-Security-Policy": DEFAULT_CSP})

    async def webrtc_offer(request: Request) -> Response:
        refusal = guard.browser_refusal(request) or guard.origin_refusal(request)
        if refusal is not None:
            metrics.refused("webrtc_offer", "forbidden")
            return refusal
        client = request.client.host if request.client else ""
        if not runtime.admission.allow_offer(client):
            metrics.refused("webrtc_offer", "rate_limited")
            _refusals.warning("offers", "refused /webrtc/offer from %s: too many offers", client or "?")
            wait = math.ceil(runtime.admission.offers.retry_after(client))
            return PlainTextResponse("429 Too Many Requests: too many offers from this address\n", status_code=429,
                                     headers={"Retry-After": str(max(1, wait))})
        try:
            body = await _read_body(request, MAX_OFFER_BYTES)
            offer = parse_offer(json.loads(body))
        except _Refused as refused:
            metrics.refused("webrtc_offer", "bad_offer")
            return refused.response
        except (ProtocolError, ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
            metrics.refused("webrtc_offer", "bad_offer")
            detail = "JSON nested too deep" if isinstance(error, RecursionError) else str(error)[:200]
            return PlainTextResponse(f"400 Bad Request: {detail}\n", status_code=400)
        agent_id = offer.agent or settings.default_agent
        if not runtime.agents.exists(agent_id):
            return PlainTextResponse(f"404 Not Found: no agent {agent_id[:64]!r}\n", status_code=404)
        try:
            answer = await browser.answer(offer, client)
        except ProtocolError as error:
            metrics.refused("webrtc_offer", "bad_offer")
            _refusals.warning("bad_offer", "refused /webrtc/offer: %s", error)
            return PlainTextResponse(f"400 Bad Request: {error}\n", status_code=400)
        if answer is None:
            metrics.refused("webrtc_offer", "at_capacity")
            _refusals.warning("browser_capacity", "refused /webrtc/offer: browser calls at capacity")
            return PlainTextResponse("503 Service Unavailable: at capacity\n", status_code=503)
        sdp, kind, call_id = answer
        return JSONResponse({"sdp": sdp, "type": kind, "call_id": call_id})

    async def list_calls(request: Request) -> Response:
        if (refusal := guard.api_refusal(request)) is not None:
            metrics.refused("api", "unauthorized")
            return refusal
        query = request.query_params
        try:
            limit, offset = _page(query)
        except _Refused as refused:
            return refused.response
        status, agent = query.get("status"), query.get("agent")
        if any(value is not None and len(value) > _MAX_FILTER_CHARS for value in (status, agent)):
            return PlainTextResponse("400 Bad Request: status and agent are short names\n", status_code=400)
        if runtime.store is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        body = await runtime.store.list_calls(limit=limit, offset=offset, status=status, agent_id=agent)
        return JSONResponse(body)

    async def get_call(request: Request) -> Response:
        if (refusal := guard.api_refusal(request)) is not None:
            metrics.refused("api", "unauthorized")
            return refusal
        if runtime.store is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        call_id = request.path_params["call_id"]
        record = await runtime.store.get(call_id) if len(call_id) <= _MAX_FILTER_CHARS else None
        if record is None:
            return PlainTextResponse("404 Not Found: no such call\n", status_code=404)
        return JSONResponse(record.model_dump(mode="json"))

    async def get_recording(request: Request) -> Response:  # call recording (issue 14, item 4)
        if (refusal := guard.api_refusal(request)) is not None:
            metrics.refused("api", "unauthorized")
            return refusal
        if runtime.store is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return await recording_response(request, runtime.store, runtime.recordings)

    async def metrics_page(request: Request) -> Response:
        if (refusal := guard.metrics_refusal(request)) is not None:
            metrics.refused("api", "unauthorized")
            return refusal
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def dashboard(request: Request) -> Response:
        if (refusal := guard.dashboard_refusal(request)) is not None:
            return refusal
        snapshot = metrics.snapshot()
        page = render_dashboard(snapshot, pictures=await dashboard_pictures(runtime, snapshot.get("regions")))
        return HTMLResponse(page, headers={"Content-Security-Policy": content_security_policy(page)})

    async def dashboard_data(request: Request) -> Response:
        if (refusal := guard.dashboard_refusal(request)) is not None:
            return refusal
        return JSONResponse(metrics.snapshot())

    routes = [
        Route("/health", health),
        Route("/ready", ready),
        Route("/twiml", twiml, methods=["POST"]),
        WebSocketRoute(STREAM_PATH, twilio_stream),
        Route("/api/calls", list_calls),
        Route("/api/calls/{call_id}", get_call),
        Route("/api/calls/{call_id}/recording", get_recording),
        Route("/metrics", metrics_page),
        Route("/dashboard", dashboard),
        Route("/api/dashboard", dashboard_data),
        Route("/", demo),
        Route("/webrtc/offer", webrtc_offer, methods=["POST"]),
        Mount("/web", StaticFiles(directory=WEB_DIR), name="web"),
        # Outbound calls (issue 14, item 3): POST /api/calls dials, POST /twilio/amd takes the AMD verdict.
        *outbound_routes(runtime, guard, read_body=_read_body, read_form=_read_form, refused=_Refused,
                         webhook_limit=MAX_WEBHOOK_BYTES),
        *console_routes(runtime, guard),  # operator console (issue 17)
    ]
    middleware = [Middleware(SecureHeaders, guard=guard, on_refusal=lambda: metrics.refused("host", "not_allowed"))]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.aybiza = runtime
    return app
