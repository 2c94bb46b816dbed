"""Chaining processors, checking their wiring, and running them for one call.

Frames move by direct ``await`` from one processor to the next, and control
frames by direct ``await`` back up (see :mod:`.processor`). ``run`` opens the
call's task group, starts every processor, runs the transport's ``feed``
coroutine (which pushes input frames) and stops everything when the feed
returns or any task fails. A failure ends this call only: it leaves ``run``
as an exception for the call's session to end the call with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack

import anyio
from anyio.abc import TaskGroup

from .context import CallContext
from .frames import Frame
from .processor import Processor, discard

__all__ = ["Pipeline", "check_wiring"]


def _covered(kind: type[Frame], types: Iterable[type[Frame]]) -> bool:
    return any(issubclass(kind, offered) or issubclass(offered, kind) for offered in types)


def check_wiring(processors: Sequence[Processor], sources: Iterable[type[Frame]] = ()) -> list[str]:
    """Every frame type a stage consumes that can never reach it, as readable problems.

    A consumed type reaches a stage when ``sources`` (what the transport and
    the opening push in) or an earlier stage produces it, or a later stage
    steers it upstream.
    """
    problems: list[str] = []
    available = set(sources)
    for index, processor in enumerate(processors):
        steered_later = {kind for later in processors[index + 1:] for kind in later.steers}
        for kind in sorted(processor.consumes, key=lambda k: k.__name__):
            if not (_covered(kind, available) or _covered(kind, steered_later)):
                problems.append(f"{processor.name} consumes {kind.__name__}, but no stage before it produces "
                                f"it and none after it steers it")
        available.update(processor.produces)
    return problems


class Pipeline:
    """A chain of processors for one call: ``input -> ... -> output``."""

    __slots__ = ("processors", "push")

    def __init__(self, processors: Sequence[Processor], *,
                 on_control: Callable[[Frame], Awaitable[None]] = discard) -> None:
        if not processors:
            raise ValueError("a pipeline needs at least one processor")
        self.processors = list(processors)
        for upstream, downstream in zip(self.processors, self.processors[1:], strict=False):
            upstream.link(downstream)
        self.processors[-1].link(None)
        self.processors[0].steer = on_control
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
