"""A bounded queue and one task: how an I/O-bound processor stays off the hop.

The worker runs ``handler(item)`` for each queued item in order. ``flush()``
(barge-in) drops everything queued and cancels the item in progress (a stage
whose item must finish, such as a tool call under way, keeps it with
``cancel_current=False``). Items
carry the generation they were queued in, so an item already handed to the
task when ``flush`` runs is still dropped.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["Worker"]

T = TypeVar("T")


class Worker(Generic[T]):
    """Runs ``handler`` on queued items in one task of the call's task group."""

    def __init__(self, handler: Callable[[T], Awaitable[None]], maxsize: int = 64) -> None:
        self._handler = handler
        self._send: MemoryObjectSendStream[tuple[int, T]]
        self._receive: MemoryObjectReceiveStream[tuple[int, T]]
        self._send, self._receive = anyio.create_memory_object_stream[tuple[int, T]](
            maxsize if maxsize > 0 else math.inf
        )
        self._generation = 0
        self._scope: anyio.CancelScope | None = None

    def start(self, tg: TaskGroup, name: str = "worker") -> None:
        """Start the worker task in the call's task group."""
        tg.start_soon(self._run, name=name)

    async def put(self, item: T) -> None:
        """Queue ``item``; waits when the queue is full (backpressure)."""
        await self._send.send((self._generation, item))

    def put_nowait(self, item: T) -> None:
        """Queue ``item`` or raise ``anyio.WouldBlock`` when full."""
        self._send.send_nowait((self._generation, item))

    def flush(self, *, cancel_current: bool = True) -> int:
        """Drop every queued item and cancel the one in progress (unless told not to); return how many were dropped."""
        self._generation += 1
        dropped = 0
        while True:
            try:
                self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            dropped += 1
        if cancel_current and self._scope is not None:
            self._scope.cancel()
        return dropped

    @property
    def pending(self) -> int:
        """Items queued and not yet started."""
        return self._receive.statistics().current_buffer_used

    @property
    def busy(self) -> bool:
        """An item is being handled (a cancelled one counts until its clean-up has run)."""
        return self._scope is not None

    async def close(self) -> None:
        """Let the task finish what is queued, then end."""
        await self._send.aclose()

    async def _run(self) -> None:
        async with self._receive:
            async for generation, item in self._receive:
                if generation != self._generation:
                    continue
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    try:
                        await self._handler(item)
                    finally:
                        self._scope = None
