"""Call tokens any node can check: the announcement signed with a key the nodes share, used once cluster-wide.

With several nodes behind one number, the node that answers ``POST /twiml``
is usually not the node the Media Stream connects to, so the in-memory table
of :class:`~aybiza.transports.tokens.CallTokens` cannot redeem it there. The
token therefore carries the announcement (CallSid, AccountSid, caller,
agent, expiry, a nonce) with an HMAC-SHA256 over it, keyed by a random secret
the nodes share through Redis (:func:`shared_key`): the node the stream lands
on checks it without asking anyone, in the ``start`` handler, and the
binding checks of :func:`~aybiza.transports.tokens.binding_refusal` apply
unchanged. One use in the whole cluster is enforced right after: the nonce
is claimed with ``SET NX`` (:meth:`SignedCallTokens.claim`), so a captured
token replayed to another node gets nothing.

The per-CallSid mint limit and the table bound still hold per node (the
local :class:`CallTokens` keeps its bookkeeping); a token expires after
``ttl_s`` wherever it is presented.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from .tokens import Announcement, CallTokens

__all__ = ["SignedCallTokens", "shared_key"]

log = logging.getLogger("aybiza.transports.signed_tokens")

_KEY_NAME = "call_token_key"


async def shared_key(client: Redis, prefix: str = "aybiza:") -> bytes:
    """The nodes' token key: the first node to ask creates it (``SET NX``), every node reads the same one."""
    key = prefix + _KEY_NAME
    await client.set(key, secrets.token_hex(32), nx=True)
    value = await client.get(key)
    if value is None:  # deleted in between: make it again
        return await shared_key(client, prefix)
    return bytes.fromhex(value.decode() if isinstance(value, bytes) else str(value))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SignedCallTokens(CallTokens):
    """:class:`CallTokens` whose tokens verify on any node holding ``key``; ``claim_once`` makes them one-time.

    ``claim_once(nonce, ttl_s)`` returns True the first time a nonce is claimed anywhere (Redis ``SET NX``).
    """

    def __init__(self, key: bytes, claim_once: Callable[[str, float], Awaitable[bool]], ttl_s: float = 120.0, *,
                 max_pending: int = 2000, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ttl_s, clock, max_pending=max_pending)
        self._key = key
        self._claim_once = claim_once

    def mint(self, call_sid: str, caller: str, agent_id: str, *, account_sid: str = "") -> str | None:
        """A signed token, within the local mint limits (None when they are used up)."""
        if super().mint(call_sid, caller, agent_id, account_sid=account_sid) is None:
            return None
        expires = int(self._clock() + self.ttl_s) + 1
        body = json.dumps([call_sid, account_sid, caller, agent_id, expires, secrets.token_hex(8)],
                          separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def redeem(self, token: str) -> Announcement | None:
        """The announcement a genuine, unexpired token carries (its one use is settled by :meth:`claim`)."""
        body_text, _, signature = token.partition(".")
        if not body_text or not signature or len(token) > 1024:
            return None
        try:
            body = _unb64(body_text)
            if not hmac.compare_digest(_unb64(signature), self._sign(body)):
                return None
            call_sid, account_sid, caller, agent_id, expires, nonce = json.loads(body)
        except (ValueError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (call_sid, account_sid, caller, agent_id, nonce)):
            return None
        if not isinstance(expires, int) or expires <= self._clock():
            return None
        return Announcement(call_sid, caller, agent_id, float(expires), account_sid, nonce)

    async def claim(self, announcement: Announcement) -> bool:
        """Whether this is the token's first use in the cluster (False for a replay, here or on another node)."""
        if not announcement.nonce:
            return False
        return await self._claim_once(announcement.nonce, self.ttl_s + 5)

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()
