"""What a transport gives a call's session: its input, its output stage, and (for phones) call control.

A transport (a Twilio Media Stream, a WebRTC peer) only turns its wire into
frames and back. The :class:`~aybiza.session.session.CallSession` does the
rest — admission, route, record, stack, run, end reason, price, archive —
the same way for every transport.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from ..errors import EndReason
from ..pipeline import Frame, Processor

__all__ = ["LEG_ENDED", "CallControl", "CallTransport", "Push"]

Push = Callable[[Frame], Awaitable[None]]

LEG_ENDED = frozenset({"busy", "no-answer", "failed", "canceled", "completed"})
"""A second leg's statuses (:meth:`CallControl.leg_status`, Twilio's words) once it is over or never started."""


class CallControl(Protocol):
    """Acting on the call at the telephony provider (Twilio's REST API: :mod:`aybiza.transports.twilio_rest`)."""

    @property
    def available(self) -> bool:
        """Whether the provider can be reached with the configured credentials."""
        ...

    async def transfer(self, target: str, *, announce: str = "") -> None:
        """Hand the live call to ``target`` (an E.164 number or a SIP URI)."""
        ...

    async def call_leg(self, to: str, *, brief: str, room: str, ring_s: float) -> str:
        """Ring ``to`` on a second call that, once answered, hears ``brief`` and joins conference ``room``; its id."""
        ...

    async def leg_status(self, sid: str) -> str:
        """The second call's status (``ringing``, ``in-progress``, ``busy``, ``no-answer`` ...)."""
        ...

    async def end_leg(self, sid: str, *, ringing: bool = True) -> None:
        """Hang up the second call."""
        ...

    async def join_conference(self, room: str) -> None:
        """Move the live call into conference ``room`` (on hold music until it starts; this leaves the stream)."""
        ...


class CallTransport(Protocol):
    """One call's connection to the caller."""

    kind: str
    sources: frozenset[type[Frame]]
    """Frame types :meth:`pump` pushes (for the pipeline's wiring check)."""

    @property
    def output(self) -> Processor:
        """The last stage: agent audio out to the caller."""
        ...

    @property
    def control(self) -> CallControl | None:
        """Call control at the provider, when the transport has one."""
        ...

    @property
    def open(self) -> bool:
        """Whether the caller is still connected (something said now would be heard)."""
        ...

    def arrange(self, stages: Sequence[Processor]) -> list[Processor]:
        """The call's stages as this transport wants them run (the browser adds event taps)."""
        ...

    async def pump(self, push: Push) -> EndReason:
        """Push the caller's input until the call ends there; return why it ended."""
        ...

    async def drained(self) -> None:
        """Return once the agent audio sent so far has been played to the caller."""
        ...

    async def close(self, reason: EndReason, detail: str) -> None:
        """End the connection, telling the peer why where the wire allows it."""
        ...
