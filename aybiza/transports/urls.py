"""Where a server's Twilio Media Stream is, from its public (http/https) address."""

from __future__ import annotations

__all__ = ["STREAM_PATH", "media_stream_url", "websocket_url"]

STREAM_PATH = "/twilio/stream"
"""The Media Stream's path on every server."""


def websocket_url(url: str) -> str:
    """``url`` with ``http``/``https`` made ``ws``/``wss`` (any other scheme unchanged)."""
    scheme, sep, rest = url.partition("://")
    return {"http": "ws", "https": "wss"}.get(scheme, scheme) + sep + rest


def media_stream_url(base_url: str) -> str:
    """The Media Stream URL of the server whose public address is ``base_url``."""
    return websocket_url(base_url.rstrip("/")) + STREAM_PATH
