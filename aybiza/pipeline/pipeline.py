"""Chaining processors and running them for one call.

Frames move by direct ``await`` from one processor to the next. ``run``
opens the call's task group, starts every processor, runs the transport's
``feed`` coroutine (which pushes input frames) and stops everything when the
feed returns or any task fails. A failure ends this call only: it leaves
``run`` as an exception for the transport to log and close the call with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack

import anyio
from anyio.abc import TaskGroup

from .context import CallContext
from .frames import Frame
from .processor import Processor

__all__ = ["Pipeline"]


class Pipeline:
    """A chain of processors for one call: ``input -> ... -> output``."""

    __slots__ = ("processors", "push")

    def __init__(self, processors: Sequence[Processor]) -> None:
        if not processors:
            raise ValueError("a pipeline needs at least one processor")
        self.processors = list(processors)
        for upstream, downstream in zip(self.processors, self.processors[1:], strict=False):
            upstream.link(downstream)
        self.processors[-1].link(None)
        self.push: Callable[[Frame], Awaitable[None]] = self.processors[0].process

    async def run(self, ctx: CallContext, feed: Callable[[Pipeline, TaskGroup], Awaitable[None]]) -> None:
        """Run the call: start processors, await ``feed(pipeline, tg)``, then stop them all."""
        async with AsyncExitStack() as stack:
            for processor in reversed(self.processors):
                stack.push_async_callback(processor.stop)
            async with anyio.create_task_group() as tg:
                for processor in self.processors:
                    await processor.start(ctx, tg)
                await feed(self, tg)
                tg.cancel_scope.cancel()
