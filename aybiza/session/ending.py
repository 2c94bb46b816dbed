"""Ending live calls from outside them: the node that must stop says goodbye to each caller first.

A call normally ends from within (the caller hangs up, the agent says
goodbye, a stage fails). A draining node whose calls cannot move to another
node (no Redis, a browser call, a redirect that failed) must still stop; if it
just closed the sockets, every caller would hear the line go dead. Each
:class:`~aybiza.session.session.CallSession` registers here while it runs;
:meth:`LiveCalls.end_all` asks each to end with a typed reason, and the session
then apologises, says goodbye (or hands the caller to a person when the agent
has a transfer number), and archives the call the way any call ends.
:meth:`LiveCalls.wait` returns once every session has finished archiving.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import anyio

from ..errors import EndReason

__all__ = ["EndCall", "LiveCalls"]

EndCall = Callable[[EndReason, str], None]
"""Ask one running call to end now with this reason and detail (it finishes on its own task)."""


class LiveCalls:
    """The sessions running in this process, each with the way to end it."""

    def __init__(self) -> None:
        self._enders: dict[str, EndCall] = {}

    def __len__(self) -> int:
        return len(self._enders)

    def add(self, call_id: str, end: EndCall) -> None:
        """A session started: ``end`` ends it."""
        self._enders[call_id] = end

    def discard(self, call_id: str) -> None:
        """The session finished (its record archived)."""
        self._enders.pop(call_id, None)

    def end_all(self, reason: EndReason, detail: str, *, keep: Collection[str] = ()) -> int:
        """Ask every running session but those in ``keep`` (handed over) to end; how many were asked."""
        enders = [end for call_id, end in self._enders.items() if call_id not in keep]
        for end in enders:
            end(reason, detail)
        return len(enders)

    async def wait(self, timeout_s: float, *, poll_s: float = 0.1) -> bool:
        """Wait up to ``timeout_s`` for every session to finish; whether they all did."""
        with anyio.move_on_after(timeout_s):
            while self._enders:  # noqa: ASYNC110 - sessions end in many places; none signals this
                await anyio.sleep(poll_s)
        return not self._enders
