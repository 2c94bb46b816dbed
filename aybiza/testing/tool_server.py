"""An HTTP service for an agent's tools to call: scripted answers, every request recorded.

What an agent's HTTP tool (:mod:`aybiza.tools.http`) reaches in tests and
local runs: any method on any path is recorded as a :class:`ToolRequest`
(method, path as sent — still percent-encoded —, query pairs, JSON body,
headers) and answered from a script — per
path, a :class:`ToolAnswer` (status, JSON body, a delay before answering)
or a callable that builds one from the request. Unscripted paths get 404.

    with ToolServer({"/orders/4321": ToolAnswer({"status": "shipped"})}) as tools:
        ...  # an agent whose tool URL is tools.url + "/orders/{order_id}"
        assert tools.requests[0].path == "/orders/4321"
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._server import LoopbackServer

__all__ = ["ToolAnswer", "ToolRequest", "ToolServer"]


@dataclass(frozen=True, slots=True)
class ToolAnswer:
    """How the service answers: a JSON body (or raw text), its status, after ``delay_s``."""

    body: Any = field(default_factory=dict)
    status: int = 200
    delay_s: float = 0.0
    text: str | None = None  # instead of JSON


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """One request as the service received it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any
    headers: dict[str, str]


Script = Mapping[str, ToolAnswer | Callable[[ToolRequest], ToolAnswer]]


class ToolServer(LoopbackServer):
    """Scripted JSON endpoints on a free loopback port (``.url`` is the base URL)."""

    def __init__(self, script: Script | None = None) -> None:
        super().__init__()
        self.script: dict[str, ToolAnswer | Callable[[ToolRequest], ToolAnswer]] = dict(script or {})
        self.requests: list[ToolRequest] = []
        self.answered: list[ToolRequest] = []  # requests whose answer was sent in full

    def to(self, path: str) -> list[ToolRequest]:
        """The requests to ``path``, in order."""
        return [request for request in self.requests if request.path == path]

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        path = request.rel_url.raw_path
        received = ToolRequest(request.method, path, list(request.query.items()), body, dict(request.headers))
        self.requests.append(received)
        answer = self.script.get(path)
        if answer is None:
            return web.json_response({"error": "not found"}, status=404)
        if callable(answer):
            answer = answer(received)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        self.answered.append(received)
        if answer.text is not None:
            return web.Response(text=answer.text, status=answer.status)
        return web.json_response(answer.body, status=answer.status)
