"""One-time call tokens: bind a Media Stream to the signed webhook that announced it.

``POST /twiml`` (signed by Twilio) mints a token and puts it in a
``<Parameter>``; the stream's ``start`` message must bring it back once,
before it expires. A stream nobody announced gets no pipeline.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CallTokens", "Announcement"]


@dataclass(frozen=True, slots=True)
class Announcement:
    """What the signed webhook told us about a call."""

    call_sid: str
    caller: str
    agent_id: str
    expires_at: float


class CallTokens:
    """Mint and redeem one-time tokens (in memory, per process)."""

    def __init__(self, ttl_s: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._pending: dict[str, Announcement] = {}

    def mint(self, call_sid: str, caller: str, agent_id: str) -> str:
        """A fresh token for a call the webhook announced."""
        self._expire()
        token = secrets.token_urlsafe(24)
        self._pending[token] = Announcement(call_sid, caller, agent_id, self._clock() + self.ttl_s)
        return token

    def redeem(self, token: str) -> Announcement | None:
        """The announcement for ``token`` if it is valid; a token works once."""
        self._expire()
        return self._pending.pop(token, None)

    def _expire(self) -> None:
        now = self._clock()
        for token in [t for t, a in self._pending.items() if a.expires_at <= now]:
            del self._pending[token]
