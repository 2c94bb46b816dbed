"""The Processor contract: a stage of one call's pipeline.

Downstream: a processor receives frames with ``process(frame)`` and hands
frames on with ``push(frame)``, which *is* the next processor's ``process``
(bound once at link time), so a hop costs one coroutine call. A processor
that waits on I/O does not block the hop: it composes a
:class:`~aybiza.pipeline.worker.Worker` (a bounded queue and one task) and
returns at once.

Upstream (the control path): a later stage steers earlier ones with
``steer(frame)``, which is the previous processor's ``control``. The
default ``control`` passes the frame further up, so a control frame
reaches every earlier stage; a stage that acts on it overrides ``control``
and, unless it means to stop it, passes it on with ``steer``. Control
frames are rare (a language switch, the agent starting to talk): this path
is not on the per-frame budget. What reaches the first stage's ``steer``
goes to the pipeline's control sink (dropped unless the transport wants it).

Every processor declares what it ``consumes`` (frame types it acts on,
arriving from upstream or on the control path), ``produces`` (pushed
downstream) and ``steers`` (sent upstream). :func:`~aybiza.pipeline.pipeline.check_wiring`
checks at build time that whatever a stage consumes has a producer before it
or a steerer after it, so a stage placed where its input can never reach it
is a build error, not a silent gap.

Contract every stage keeps (``aybiza.testing.kit.check_conformance`` tests it):
frames it does not consume are forwarded unchanged and in order;
:class:`~aybiza.pipeline.frames.Interruption` drops its queued work before it
is forwarded; ``stop()`` is idempotent and also runs after errors.

Lifecycle: ``start(ctx, tg)`` once before the first frame (spawn tasks in
``tg``, the call's task group), ``stop()`` once after the last.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from anyio.abc import TaskGroup

from .context import CallContext
from .frames import Frame

__all__ = ["Processor", "discard"]


async def discard(frame: Frame) -> None:
    """The end of the line: frames pushed past the last processor (or above the first) vanish."""
    return None


class Processor:
    """Base of every stage; by default passes frames through unchanged, both ways."""

    __slots__ = ("push", "steer", "ctx")

    name: str = "processor"
    consumes: ClassVar[frozenset[type[Frame]]] = frozenset()
    """Frame types this stage acts on (from upstream, or steered from downstream)."""
    produces: ClassVar[frozenset[type[Frame]]] = frozenset()
    """Frame types this stage pushes downstream."""
    steers: ClassVar[frozenset[type[Frame]]] = frozenset()
    """Control frame types this stage sends upstream."""

    def __init__(self) -> None:
        self.push: Callable[[Frame], Awaitable[None]] = discard
        self.steer: Callable[[Frame], Awaitable[None]] = discard
        self.ctx: CallContext | None = None

    def link(self, downstream: Processor | None) -> None:
        """Send what this processor pushes to ``downstream`` (or nowhere), and take its control frames."""
        if downstream is None:
            self.push = discard
            return
        self.push = downstream.process
        downstream.steer = self.control

    async def process(self, frame: Frame) -> None:
        """Handle one frame from upstream; the default passes it on."""
        await self.push(frame)

    async def control(self, frame: Frame) -> None:
        """Handle one control frame from downstream; the default passes it further up."""
        await self.steer(frame)

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Prepare for a call; I/O processors start their worker in ``tg``."""
        self.ctx = ctx

    async def stop(self) -> None:
        """Release what ``start`` acquired. Called once, also after errors."""
        return None
