"""The console's routes: ``/calls``, ``/calls/{id}``, ``/calls/{id}/recording`` and its static files.

The call pages show call records, so they need what ``/api/calls`` needs:
the API's token, as a bearer or as the sign-in cookie of
:mod:`aybiza.console.access`. The stylesheet and script are served like
``/dashboard`` (the dashboard uses the stylesheet). The pages show what the
call record holds and nothing more.

The player's source, ``/calls/{id}/recording``, hands the request to the
API's ``GET /api/calls/{id}/recording`` inside the process with the API's
token, so a browser never holds that token and the recording is served (with
its ranges, for seeking) by the one endpoint that owns recordings. When the
call has no recording, or this build has no such endpoint, it answers 404.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ..guard import Guard
from ..runtime import Runtime
from .access import LOGIN_PATH, ConsoleAccess
from .listing import COUNT_CAP, render_list
from .page import CONSOLE_CSP, STATIC_PATH
from .pictures import MAX_CALLS, WINDOW_S, render_pictures
from .query import QueryError, parse_list_query
from .timeline import recording_of, render_call

__all__ = ["STATIC_DIR", "console_routes", "dashboard_pictures"]

STATIC_DIR = Path(__file__).with_name("static")
MAX_CALL_ID_CHARS = 64


def _html(page: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(page, status_code=status, headers={"Content-Security-Policy": CONSOLE_CSP,
                                                           "Cache-Control": "no-store"})


def _bad(reason: str, status: int = 400) -> PlainTextResponse:
    phrase = {400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}[status]
    return PlainTextResponse(f"{status} {phrase}: {reason}\n", status_code=status)


def _call_id(value: str) -> str | None:
    return value if 0 < len(value) <= MAX_CALL_ID_CHARS and value.isprintable() else None


async def dashboard_pictures(runtime: Runtime, regions: Any = None) -> str:
    """The dashboard's pictures of the last hour (empty while the store is not open)."""
    if runtime.store is None:
        return ""
    now = time.time()
    records = await runtime.store.archive.started_since(now - WINDOW_S, limit=MAX_CALLS)
    return render_pictures(records, regions=regions if isinstance(regions, dict) else None, now=now)


class _RecordingProxy:
    """``/calls/{id}/recording``: the API's recording endpoint, reached inside the process with its token."""

    def __init__(self, runtime: Runtime, guard: Guard, access: ConsoleAccess) -> None:
        self.runtime = runtime
        self.guard = guard
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._refusal(request)
        if response is not None:
            await response(scope, receive, send)
            return
        call_id = request.path_params["call_id"]
        path = f"/api/calls/{call_id}/recording"
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"authorization", b"cookie")]
        inner: dict[str, Any] = {**scope, "path": path, "raw_path": path.encode(), "query_string": b"",
                                 "headers": [*headers, (b"authorization", f"Bearer {self.guard.api_token}".encode())]}
        for route in scope["app"].router.routes:
            if isinstance(route, Route) and route.endpoint is not self:
                match, child = route.matches(inner)
                if match == Match.FULL:
                    inner.update(child)
                    await route.handle(inner, receive, send)
                    return
        await _bad("no recording endpoint in this build", 404)(scope, receive, send)

    async def _refusal(self, request: Request) -> Response | None:
        if (refusal := self.access.refusal(request)) is not None:
            return refusal
        store = self.runtime.store
        if store is None:
            return _bad("starting", 503)
        call_id = _call_id(request.path_params["call_id"])
        record = await store.get(call_id) if call_id else None
        if record is None:
            return _bad("no such call", 404)
        if recording_of(record) is None:
            return _bad("no recording", 404)
        return None


def console_routes(runtime: Runtime, guard: Guard) -> list[BaseRoute]:
    """The console's routes for the app ``runtime`` serves."""
    access = ConsoleAccess(guard, secure=runtime.settings.base_url.startswith("https://"))

    async def calls_page(request: Request) -> Response:
        if (refusal := access.refusal(request)) is not None:
            return refusal
        try:
            query = parse_list_query(request.query_params, now=time.time())
        except QueryError as error:
            return _bad(str(error))
        store = runtime.store
        if store is None:
            return _bad("starting", 503)
        rows, total = await store.archive.search(query.filters, limit=query.per_page,
                                                 offset=(query.page - 1) * query.per_page, count_cap=COUNT_CAP)
        return _html(render_list(query, rows, total, live=len(runtime.calls)))

    async def call_page(request: Request) -> Response:
        if (refusal := access.refusal(request)) is not None:
            return refusal
        store = runtime.store
        if store is None:
            return _bad("starting", 503)
        call_id = _call_id(request.path_params["call_id"])
        record = await store.get(call_id) if call_id else None
        if record is None:
            return _bad("no such call", 404)
        return _html(render_call(record))

    async def login_page(request: Request) -> Response:
        return access.login_page()

    class _Static(StaticFiles):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            refusal = guard.dashboard_refusal(Request(scope, receive))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            await super().__call__(scope, receive, send)

    return [
        Route("/calls", calls_page),
        Route(LOGIN_PATH, login_page, methods=["GET"]),
        Route(LOGIN_PATH, access.login, methods=["POST"]),
        Route("/calls/{call_id}/recording", _RecordingProxy(runtime, guard, access)),
        Route("/calls/{call_id}", call_page),
        Mount(STATIC_PATH, _Static(directory=STATIC_DIR), name="console-static"),
    ]
