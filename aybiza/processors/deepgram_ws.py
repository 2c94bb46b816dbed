"""Deepgram's WebSockets without permessage-deflate: audio does not compress, and deflating it costs CPU.

``deepgram-sdk`` 7 opens its streaming sockets (``/v1/listen``, ``/v1/speak``)
with ``websockets``' ``connect`` and its defaults, which *offer*
permessage-deflate (RFC 7692). Deepgram accepts the offer, and then every
media message we send (μ-law or PCM, already near-random bytes) and every
audio message Aura sends back goes through zlib: about 6 % of a server's core
in the conversation benchmark (``benchmarks/conversation.py``), for a few
percent of bandwidth at most. The extension is negotiated: a client that does
not offer it gets plain frames (RFC 7692 §5: a server must not use an
extension the client did not offer), and Deepgram's own reference for
lower-level WebSocket clients asks for RFC 6455 only.

The SDK takes no option for it, so :func:`without_compression` rebinds the
``websockets_client_connect`` name in the SDK's async listen and speak
client modules to ``connect`` with ``compression=None``. It is called where
the process builds its Deepgram client (:func:`~aybiza.processors.stt.deepgram.deepgram_client`),
never on import; it is idempotent, and the SDK's behaviour is otherwise the
same (same URL, headers, handshake errors).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from typing import Any

__all__ = ["SDK_MODULES", "without_compression"]

SDK_MODULES = ("deepgram.listen.v1.client", "deepgram.listen.v1.raw_client", "deepgram.listen.v2.client",
               "deepgram.listen.v2.raw_client", "deepgram.speak.v1.client", "deepgram.speak.v1.raw_client")
"""The SDK modules that open async streaming sockets through ``websockets_client_connect``."""

_MARK = "_aybiza_no_compression"


def without_compression() -> list[str]:
    """Make the SDK's async streaming sockets offer no compression; returns the modules changed now."""
    changed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK imports websockets' legacy client
        for name in SDK_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            connect: Any = getattr(module, "websockets_client_connect", None)
            if connect is None or getattr(connect, _MARK, False):
                continue
            plain = functools.partial(connect, compression=None)
            setattr(plain, _MARK, True)
            module.websockets_client_connect = plain  # type: ignore[attr-defined]
            changed.append(name)
    return changed
