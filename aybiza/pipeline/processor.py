"""The Processor contract: a stage of one call's pipeline.

A processor receives frames with ``process(frame)`` and hands frames on with
``push(frame)``, which *is* the next processor's ``process`` (bound once at
link time), so a hop costs one coroutine call. A processor that waits on I/O
does not block the hop: it composes a :class:`~aybiza.pipeline.worker.Worker`
(a bounded queue and one task) and returns at once.

Lifecycle: ``start(ctx, tg)`` once before the first frame (spawn tasks in
``tg``, the call's task group), ``stop()`` once after the last.
"""

from __future__ import annotations

from anyio.abc import TaskGroup

from .context import CallContext
from .frames import Frame

__all__ = ["Processor", "discard"]


async def discard(frame: Frame) -> None:
    """The end of the line: frames pushed past the last processor vanish."""
    return None


class Processor:
    """Base of every stage; by default passes frames through unchanged."""

    __slots__ = ("push", "ctx")

    name: str = "processor"

    def __init__(self) -> None:
        self.push = discard
        self.ctx: CallContext | None = None

    def link(self, downstream: Processor | None) -> None:
        """Send what this processor pushes to ``downstream`` (or nowhere)."""
        self.push = downstream.process if downstream is not None else discard

    async def process(self, frame: Frame) -> None:
        """Handle one frame; the default passes it on."""
        await self.push(frame)

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Prepare for a call; I/O processors start their worker in ``tg``."""
        self.ctx = ctx

    async def stop(self) -> None:
        """Release what ``start`` acquired. Called once, also after errors."""
        return None
