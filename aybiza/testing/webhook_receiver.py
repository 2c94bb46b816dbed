"""A receiver of aybiza's post-call webhooks on loopback, for tests and local runs.

Every POST is recorded as it arrived (headers, the exact body bytes) in
:attr:`WebhookReceiver.received`; it answers ``status`` (200 by default).
``port`` fixes the port, so a test can point an agent at a receiver that is
not running yet (connections refused), then start it there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._server import LoopbackServer

__all__ = ["ReceivedWebhook", "WebhookReceiver"]


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    """One POST as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class WebhookReceiver(LoopbackServer):
    """Records POSTs on any path and answers ``status``."""

    def __init__(self, *, port: int = 0, status: int = 200) -> None:
        super().__init__()
        self.port = port
        self.status = status
        self.received: list[ReceivedWebhook] = []

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(ReceivedWebhook(request.path, dict(request.headers), body))
        return web.Response(status=self.status, text="ok")
