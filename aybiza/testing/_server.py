"""An aiohttp application served on a free loopback port from its own thread.

Fakes run in their own thread and event loop so that blocking clients
(boto3) and async clients (the Deepgram SDK) can both talk to them, from sync
or async tests alike: ``with Fake() as f`` or ``async with Fake() as f``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
from aiohttp import web

__all__ = ["LoopbackServer", "wait_until"]

T = TypeVar("T")


class LoopbackServer(ABC):
    """Base of the fakes: subclasses build the app in :meth:`make_app`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._sockets: set[web.WebSocketResponse] = set()

    def track(self, ws: web.WebSocketResponse) -> None:
        """Remember an open WebSocket so that stopping the server closes it cleanly."""
        self._sockets.add(ws)

    def untrack(self, ws: web.WebSocketResponse) -> None:
        """Forget a WebSocket its handler has finished with."""
        self._sockets.discard(ws)

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutdown")
        self._sockets.clear()

    @abstractmethod
    def make_app(self) -> web.Application:
        """The aiohttp application to serve."""

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Bind a free port and serve from a daemon thread; returns once listening."""
        if self._thread is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))  # 0 (a free port) unless a subclass fixed one
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._main, args=(sock,), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        if self._error is not None:
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._error

    def stop(self) -> None:
        """Stop serving (open connections are closed) and join the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None

    def call(self, coro: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10.0) -> T:
        """Run ``coro()`` on the server's loop and return its result (from any other thread)."""
        if self._loop is None:
            raise RuntimeError("server not started")
        return asyncio.run_coroutine_threadsafe(coro(), self._loop).result(timeout)

    def _main(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(sock))
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self, sock: socket.socket) -> None:
        self._stop = asyncio.Event()
        app = self.make_app()
        app.on_shutdown.append(self._close_sockets)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1, access_log=None)
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)


async def wait_until(predicate: Callable[[], bool], limit_s: float = 5.0, interval: float = 0.005) -> None:
    """Poll ``predicate`` until true; ``TimeoutError`` after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await anyio.sleep(interval)
