"""AWS event-stream encoder (``application/vnd.amazon.eventstream``), for fake servers.

A message is ``[total u32][headers_len u32][prelude_crc u32][headers][payload][message_crc u32]``,
all big-endian; both CRCs are CRC-32 (zlib polynomial), the first over the
8-byte prelude, the second over everything before it. Headers are
``name_len u8 | name | type u8 | value``; strings (type 7) are what Bedrock
uses, bools, 32/64-bit ints and byte strings are encoded too.
"""

from __future__ import annotations

import binascii
import json
import struct
from collections.abc import Mapping
from typing import Any

__all__ = ["HeaderValue", "encode_message", "event_frame", "exception_frame", "error_frame"]

HeaderValue = str | bytes | bool | int

_TRUE, _FALSE, _INT32, _INT64, _BYTES, _STRING = 0, 1, 4, 5, 6, 7


def _crc(data: bytes) -> int:
    return binascii.crc32(data) & 0xFFFFFFFF


def _encode_header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode("utf-8")
    if len(raw_name) > 255:
        raise ValueError(f"header name too long: {name!r}")
    head = struct.pack(">B", len(raw_name)) + raw_name
    if isinstance(value, bool):
        return head + struct.pack(">B", _TRUE if value else _FALSE)
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return head + struct.pack(">Bi", _INT32, value)
        return head + struct.pack(">Bq", _INT64, value)
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > 0xFFFF:
        raise ValueError(f"header {name!r} value too long")
    kind = _STRING if isinstance(value, str) else _BYTES
    return head + struct.pack(">BH", kind, len(raw)) + raw


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes = b"") -> bytes:
    """One event-stream message with both CRCs."""
    raw_headers = b"".join(_encode_header(name, value) for name, value in headers.items())
    total = 16 + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", total, len(raw_headers))
    body = prelude + struct.pack(">I", _crc(prelude)) + raw_headers + payload
    return body + struct.pack(">I", _crc(body))


def event_frame(event_type: str, payload: Any) -> bytes:
    """An ``event`` message (e.g. ``contentBlockDelta``) with a JSON payload."""
    return encode_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(payload, separators=(",", ":")).encode("utf-8"),
    )


def exception_frame(exception_type: str, message: str, **fields: Any) -> bytes:
    """A modelled in-stream exception (e.g. ``throttlingException``)."""
    body = {"message": message, **fields}
    return encode_message(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps(body, separators=(",", ":")).encode("utf-8"),
    )


def error_frame(code: str, message: str) -> bytes:
    """A generic (unmodelled) ``error`` message: code and message in headers, no payload."""
    return encode_message({":message-type": "error", ":error-code": code, ":error-message": message})
