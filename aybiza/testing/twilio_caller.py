"""Twilio's side of a Media Stream, sans-I/O: for the fake caller and tests.

:class:`TwilioCallerProtocol` builds the messages Twilio sends, in exactly the
shape of docs/protocols.md §1.3 (same key order, compact JSON, string
``sequenceNumber``/``chunk``/``timestamp``), and parses what a server sends
back (§1.4) into :class:`ServerMedia`, :class:`ServerMark` and
:class:`ServerClear`. Garbage from the server raises
:class:`~aybiza.errors.ProtocolError`.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from aybiza.errors import ProtocolError
from aybiza.transports.twilio import (
    DTMF_DIGITS,
    ULAW_ENCODING,
    ULAW_SAMPLE_RATE,
    field_base64,
    field_object,
    field_str,
    load_object,
)

__all__ = ["ServerMedia", "ServerMark", "ServerClear", "ServerEvent", "TwilioCallerProtocol", "new_sid"]

_BYTES_PER_MS = ULAW_SAMPLE_RATE // 1000


@dataclass(frozen=True, slots=True)
class ServerMedia:
    """Agent audio from the server: raw 8 kHz μ-law."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class ServerMark:
    """The server placed a mark after the audio it sent so far; echo it once played."""

    name: str


@dataclass(frozen=True, slots=True)
class ServerClear:
    """The server asked to drop buffered audio and echo every pending mark now."""


ServerEvent: TypeAlias = ServerMedia | ServerMark | ServerClear


def new_sid(prefix: str) -> str:
    """A Twilio-style SID: two-letter prefix (``MZ``, ``CA``, ``AC``) and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class TwilioCallerProtocol:
    """What Twilio says on a bidirectional stream: ``connected``, ``start``, ``media``… ``stop``.

    Messages must be built in order (``connected``, ``start``, then media,
    dtmf and mark echoes, then ``stop``); ``sequenceNumber`` counts every
    message after ``connected``, ``chunk`` counts media messages from 1, and
    ``timestamp`` defaults to the milliseconds of audio sent before the chunk.
    """

    def __init__(
        self,
        *,
        custom_parameters: Mapping[str, str] | None = None,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        account_sid: str | None = None,
        max_message_bytes: int = 1024 * 1024,
    ) -> None:
        self.custom_parameters = dict(custom_parameters or {})
        self.stream_sid = stream_sid or new_sid("MZ")
        self.call_sid = call_sid or new_sid("CA")
        self.account_sid = account_sid or new_sid("AC")
        self._max_message_bytes = max_message_bytes
        self._stage = "new"  # new -> connected -> started -> stopped
        self._sequence = 0
        self._chunk = 0
        self._audio_bytes = 0

    def _next(self, what: str, *, allowed: str) -> str:
        if self._stage != allowed:
            raise ProtocolError(f"caller cannot send {what} now (stream is {self._stage})")
        self._sequence += 1
        return str(self._sequence)

    def connected(self) -> str:
        """The first message on the socket."""
        if self._stage != "new":
            raise ProtocolError(f"caller cannot send connected now (stream is {self._stage})")
        self._stage = "connected"
        return _dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self) -> str:
        """Stream metadata: SIDs, ``customParameters``, μ-law 8 kHz mono."""
        sequence = self._next("start", allowed="connected")
        self._stage = "started"
        start = {
            "accountSid": self.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": ULAW_ENCODING, "sampleRate": ULAW_SAMPLE_RATE, "channels": 1},
            "customParameters": self.custom_parameters,
        }
        return _dumps(
            {"event": "start", "sequenceNumber": sequence, "start": start, "streamSid": self.stream_sid}
        )

    def media(self, ulaw: bytes, *, timestamp_ms: int | None = None) -> str:
        """One inbound audio chunk (Twilio sends 160 bytes = 20 ms)."""
        if not ulaw:
            raise ValueError("a media message needs at least one byte of audio")
        sequence = self._next("media", allowed="started")
        self._chunk += 1
        if timestamp_ms is None:
            timestamp_ms = self._audio_bytes // _BYTES_PER_MS
        self._audio_bytes += len(ulaw)
        media = {
            "track": "inbound",
            "chunk": str(self._chunk),
            "timestamp": str(timestamp_ms),
            "payload": base64.b64encode(ulaw).decode("ascii"),
        }
        return _dumps(
            {"event": "media", "sequenceNumber": sequence, "media": media, "streamSid": self.stream_sid}
        )

    def dtmf(self, digit: str) -> str:
        """The caller pressed ``digit`` (0-9, *, #, A-D)."""
        if digit not in DTMF_DIGITS:
            raise ValueError(f"{digit!r} is not a DTMF digit")
        sequence = self._next("dtmf", allowed="started")
        return _dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": sequence,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def mark(self, name: str) -> str:
        """Echo of the server's mark ``name`` (played, or dropped by ``clear``)."""
        sequence = self._next("mark", allowed="started")
        return _dumps(
            {
                "event": "mark",
                "sequenceNumber": sequence,
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def stop(self) -> str:
        """The call ended; the last message on the socket."""
        sequence = self._next("stop", allowed="started")
        self._stage = "stopped"
        stop = {"accountSid": self.account_sid, "callSid": self.call_sid}
        return _dumps(
            {"event": "stop", "sequenceNumber": sequence, "stop": stop, "streamSid": self.stream_sid}
        )

    def receive(self, message: str | bytes) -> ServerEvent:
        """Parse one server message (``media``, ``mark`` or ``clear``); raise ProtocolError on garbage."""
        msg = load_object(message, self._max_message_bytes, "server")
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            raise ProtocolError("server message has no 'event'" if event is None else "unknown server event")
        where = f"server {event}"
        if self._stage in ("new", "connected"):
            raise ProtocolError(f"{where} before start")
        stream_sid = field_str(msg, "streamSid", where)
        if stream_sid != self.stream_sid:
            raise ProtocolError(f"{where}: wrong streamSid")
        if event == "media":
            # Outbound audio "can be of any size" (§1.4), so only the message size bounds it.
            payload = field_base64(
                field_object(msg, "media", where), "payload", where, self._max_message_bytes
            )
            return ServerMedia(payload)
        if event == "mark":
            return ServerMark(field_str(field_object(msg, "mark", where), "name", where))
        return ServerClear()
