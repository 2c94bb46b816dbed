"""Twilio Media Streams, server side, as a sans-I/O state machine.

Feed each WebSocket text message to :meth:`TwilioProtocol.receive` and read
back typed events; call ``send_media`` / ``send_mark`` / ``send_clear`` for the
JSON text to write. No sockets, no asyncio, no logging: the WebSocket endpoint
is a thin adapter around this object, and its tests need no event loop.

Message shapes are docs/protocols.md §1.3 (Twilio → us) and §1.4 (us → Twilio).
Anything we cannot accept raises :class:`~aybiza.errors.ProtocolError` (a
rejected call token raises its subclass :class:`~aybiza.errors.AuthError`), and
the protocol then stays failed: the call is over.

Marks (§1.6): Twilio echoes a mark both when the audio sent before it has
played and when ``clear`` dropped that audio, and the two echoes look alike.
We tell them apart by order: a mark still pending when we sent ``clear`` comes
back as ``MarkDone(played=False)``; every other echo is ``played=True``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aybiza.errors import AuthError, ProtocolError

__all__ = [
    "Connected",
    "Started",
    "Media",
    "Dtmf",
    "MarkDone",
    "Stopped",
    "Event",
    "TwilioProtocol",
    "ULAW_ENCODING",
    "ULAW_SAMPLE_RATE",
    "MAX_PAYLOAD_BYTES",
    "DTMF_DIGITS",
]

ULAW_ENCODING = "audio/x-mulaw"
ULAW_SAMPLE_RATE = 8000
# Twilio sends 160-byte (20 ms) frames; anything above one second of audio in a
# single inbound message is not something Twilio does.
MAX_PAYLOAD_BYTES = 8000
DTMF_DIGITS = frozenset("0123456789*#ABCD")

_MAX_PAYLOAD_BASE64 = 4 * ((MAX_PAYLOAD_BYTES + 2) // 3)
_MAX_UINT_DIGITS = 18
_INBOUND_TRACKS = frozenset({"inbound", "inbound_track"})


@dataclass(frozen=True, slots=True)
class Connected:
    """Twilio opened the stream (always the first message)."""

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Started:
    """The stream's metadata; ``custom_parameters`` are the TwiML ``<Parameter>`` values."""

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Media:
    """Caller audio: raw 8 kHz μ-law bytes; ``timestamp_ms`` counts from stream start."""

    payload: bytes
    timestamp_ms: int
    chunk: int
    sequence: int


@dataclass(frozen=True, slots=True)
class Dtmf:
    """The caller pressed a key."""

    digit: str


@dataclass(frozen=True, slots=True)
class MarkDone:
    """Twilio echoed a mark; ``played`` is False when our ``clear`` dropped its audio."""

    name: str
    played: bool


@dataclass(frozen=True, slots=True)
class Stopped:
    """The stream ended (the caller hung up or the call was ended); nothing follows."""

    call_sid: str


Event: TypeAlias = Connected | Started | Media | Dtmf | MarkDone | Stopped

_AWAITING_START, _STARTED, _STOPPED = range(3)


class TwilioProtocol:
    """The server end of one bidirectional Media Stream: JSON text in, events out.

    ``check_token(custom_parameters)`` runs when ``start`` arrives; returning
    False raises :class:`AuthError`. ``max_message_bytes`` bounds one message.
    """

    def __init__(
        self,
        *,
        check_token: Callable[[dict[str, str]], bool] | None = None,
        max_message_bytes: int = 64 * 1024,
    ) -> None:
        self._check_token = check_token
        self._max_message_bytes = max_message_bytes
        self._state = _AWAITING_START
        self._connected = False
        self._failure: str | None = None
        self._last_sequence = 0
        self._stream_sid: str | None = None
        self._call_sid: str | None = None
        self._media_prefix = ""
        self._sid_json = ""
        self._mark_counter = 0
        # Marks sent and not yet echoed, oldest first. The first
        # ``_cleared_count`` of them were pending when we sent ``clear``:
        # clear only ever affects marks already sent, so they form a prefix.
        self._pending: list[str] = []
        self._cleared_count = 0

    # -- state -------------------------------------------------------------

    @property
    def stream_sid(self) -> str | None:
        """The ``streamSid`` from ``start``; None before it."""
        return self._stream_sid

    @property
    def call_sid(self) -> str | None:
        """The ``callSid`` from ``start``; None before it."""
        return self._call_sid

    @property
    def started(self) -> bool:
        """True once ``start`` was accepted (stays True after ``stop``)."""
        return self._stream_sid is not None

    @property
    def stopped(self) -> bool:
        """True once ``stop`` was accepted."""
        return self._state == _STOPPED

    @property
    def failed(self) -> bool:
        """True after any error: every later ``receive`` raises."""
        return self._failure is not None

    @property
    def pending_marks(self) -> tuple[str, ...]:
        """Names of marks sent and not yet echoed, oldest first."""
        return tuple(self._pending)

    @property
    def audio_pending(self) -> bool:
        """True while a mark is pending: the caller may still be hearing agent audio."""
        return bool(self._pending)

    # -- Twilio -> us --------------------------------------------------------

    def receive(self, message: str | bytes) -> list[Event]:
        """Parse one WebSocket text message into events; raise ProtocolError if unacceptable."""
        if self._failure is not None:
            raise ProtocolError(f"Twilio stream already failed: {self._failure}")
        try:
            return [self._receive(message)]
        except Exception as exc:
            self._failure = str(exc) or type(exc).__name__
            raise

    def _receive(self, message: str | bytes) -> Event:
        msg = load_object(message, self._max_message_bytes, "Twilio")
        event = msg.get("event")
        if event == "media":
            return self._on_media(msg)
        if self._state == _STOPPED and isinstance(event, str):
            raise ProtocolError(f"Twilio sent {_short(event)} after stop")
        if event == "mark":
            return self._on_mark(msg)
        if event == "dtmf":
            return self._on_dtmf(msg)
        if event == "start":
            return self._on_start(msg)
        if event == "stop":
            return self._on_stop(msg)
        if event == "connected":
            return self._on_connected(msg)
        if event is None:
            raise ProtocolError("Twilio message has no 'event' field")
        raise ProtocolError(f"unknown Twilio event {_short(event)}")

    def _check_stream(self, msg: dict[str, Any], event: str) -> int:
        """Ordering, ``streamSid`` and ``sequenceNumber`` checks shared by post-start events."""
        if self._state != _STARTED:
            when = "before start" if self._state == _AWAITING_START else "after stop"
            raise ProtocolError(f"Twilio sent {event} {when}")
        stream_sid = msg.get("streamSid")
        if stream_sid != self._stream_sid:
            if stream_sid is None:
                raise ProtocolError(f"Twilio {event}: missing field 'streamSid'")
            raise ProtocolError(
                f"Twilio {event}: wrong streamSid {_short(stream_sid)}, expected {self._stream_sid!r}"
            )
        sequence = _uint(msg.get("sequenceNumber"))
        if sequence is None:
            sequence = field_uint(msg, "sequenceNumber", f"Twilio {event}")
        if sequence <= self._last_sequence:
            raise ProtocolError(
                f"Twilio {event}: sequenceNumber {sequence} is not after {self._last_sequence}"
            )
        self._last_sequence = sequence
        return sequence

    def _on_media(self, msg: dict[str, Any]) -> Media:
        # Fifty of these a second per call: the well-formed message is checked inline, and anything
        # unusual goes through the field helpers, which raise the precise error.
        sequence = self._check_stream(msg, "media")
        media = msg.get("media")
        if type(media) is not dict:
            media = field_object(msg, "media", "Twilio media")
        track = media.get("track")
        if track is not None and (type(track) is not str or track not in _INBOUND_TRACKS):
            raise ProtocolError(f"Twilio media: track {_short(track)} is not the inbound track")
        text = media.get("payload")
        if type(text) is str and len(text) <= _MAX_PAYLOAD_BASE64:
            try:
                payload = binascii.a2b_base64(text, strict_mode=True)
            except ValueError:
                raise ProtocolError("Twilio media: 'payload' is not valid base64") from None
        else:
            payload = field_base64(media, "payload", "Twilio media", _MAX_PAYLOAD_BASE64)
        if not 0 < len(payload) <= MAX_PAYLOAD_BYTES:
            raise ProtocolError(
                f"Twilio media: payload of {len(payload)} bytes; expected 1..{MAX_PAYLOAD_BYTES}"
            )
        chunk = _uint(media.get("chunk"))
        if chunk is None:
            chunk = field_uint(media, "chunk", "Twilio media")
        timestamp_ms = _uint(media.get("timestamp"))
        if timestamp_ms is None:
            timestamp_ms = field_uint(media, "timestamp", "Twilio media")
        return Media(payload, timestamp_ms, chunk, sequence)

    def _on_mark(self, msg: dict[str, Any]) -> MarkDone:
        self._check_stream(msg, "mark")
        name = field_str(field_object(msg, "mark", "Twilio mark"), "name", "Twilio mark")
        try:
            index = self._pending.index(name)
        except ValueError:
            raise ProtocolError(f"Twilio mark: {_short(name)} was never sent or was already echoed") from None
        del self._pending[index]
        played = index >= self._cleared_count
        if not played:
            self._cleared_count -= 1
        return MarkDone(name, played)

    def _on_dtmf(self, msg: dict[str, Any]) -> Dtmf:
        self._check_stream(msg, "dtmf")
        digit = field_str(field_object(msg, "dtmf", "Twilio dtmf"), "digit", "Twilio dtmf")
        if digit not in DTMF_DIGITS:
            raise ProtocolError(f"Twilio dtmf: {_short(digit)} is not a DTMF digit")
        return Dtmf(digit)

    def _on_stop(self, msg: dict[str, Any]) -> Stopped:
        self._check_stream(msg, "stop")
        call_sid = field_str(field_object(msg, "stop", "Twilio stop"), "callSid", "Twilio stop")
        if call_sid != self._call_sid:
            raise ProtocolError(f"Twilio stop: callSid {_short(call_sid)} is not {self._call_sid!r}")
        self._state = _STOPPED
        return Stopped(call_sid)

    def _on_connected(self, msg: dict[str, Any]) -> Connected:
        if self._connected or self._state != _AWAITING_START:
            raise ProtocolError("Twilio connected: allowed only once, as the first message")
        self._connected = True
        protocol = field_str(msg, "protocol", "Twilio connected")
        return Connected(protocol, field_str(msg, "version", "Twilio connected"))

    def _on_start(self, msg: dict[str, Any]) -> Started:
        if self._state != _AWAITING_START:
            raise ProtocolError("Twilio sent a second start")
        where = "Twilio start"
        start = field_object(msg, "start", where)
        stream_sid = field_str(start, "streamSid", where)
        outer_sid = field_str(msg, "streamSid", where)
        if outer_sid != stream_sid:
            raise ProtocolError(f"{where}: streamSid {_short(outer_sid)} differs from start.streamSid")
        sequence = field_uint(msg, "sequenceNumber", where)
        if sequence < 1:
            raise ProtocolError(f"{where}: sequenceNumber must be at least 1")
        call_sid = field_str(start, "callSid", where)
        account_sid = field_str(start, "accountSid", where)
        tracks = field(start, "tracks", where)
        if type(tracks) is not list or not all(type(track) is str for track in tracks):
            raise ProtocolError(f"{where}: 'tracks' must be a list of strings")
        custom = start.get("customParameters", {})
        if type(custom) is not dict or not all(type(value) is str for value in custom.values()):
            raise ProtocolError(f"{where}: 'customParameters' must map names to strings")
        media_format = field_object(start, "mediaFormat", where)
        encoding = media_format.get("encoding")
        sample_rate = media_format.get("sampleRate")
        channels = media_format.get("channels")
        if not (
            encoding == ULAW_ENCODING
            and type(sample_rate) is int
            and sample_rate == ULAW_SAMPLE_RATE
            and type(channels) is int
            and channels == 1
        ):
            raise ProtocolError(
                f"{where}: mediaFormat {_short(encoding)} {_short(sample_rate)} Hz "
                f"{_short(channels)} channel(s) is not audio/x-mulaw 8000 Hz mono"
            )
        if self._check_token is not None and not self._check_token(dict(custom)):
            raise AuthError(f"{where}: call token rejected")
        self._state = _STARTED
        self._last_sequence = sequence
        self._stream_sid = stream_sid
        self._call_sid = call_sid
        self._sid_json = json.dumps(stream_sid)
        self._media_prefix = '{"event":"media","streamSid":' + self._sid_json + ',"media":{"payload":"'
        return Started(
            stream_sid=stream_sid,
            call_sid=call_sid,
            account_sid=account_sid,
            tracks=tuple(tracks),
            custom_parameters=dict(custom),
            encoding=encoding,
            sample_rate=sample_rate,
            channels=channels,
        )

    # -- us -> Twilio --------------------------------------------------------

    def send_media(self, ulaw: bytes) -> str:
        """JSON text carrying 8 kHz μ-law audio (no file header) to play to the caller."""
        self._require_sendable("media")
        if not ulaw:
            raise ValueError("send_media needs at least one byte of audio")
        return self._media_prefix + base64.b64encode(ulaw).decode("ascii") + '"}}'

    def send_mark(self, name: str | None = None) -> str:
        """JSON text of a mark after the audio sent so far; auto-named ``m-1``, ``m-2``… if no name."""
        self._require_sendable("mark")
        if name is None:
            self._mark_counter += 1
            name = f"m-{self._mark_counter}"
        self._pending.append(name)
        return '{"event":"mark","streamSid":' + self._sid_json + ',"mark":{"name":' + json.dumps(name) + "}}"

    def send_clear(self) -> str:
        """JSON text that drops the caller's buffered audio; pending marks will echo as not played."""
        self._require_sendable("clear")
        self._cleared_count = len(self._pending)
        return '{"event":"clear","streamSid":' + self._sid_json + "}"

    def _require_sendable(self, what: str) -> None:
        # Only "before start" is refused: the streamSid is unknown then. After
        # stop or a failure the text is still built (the endpoint is racing
        # the socket closing and may drop it), so a late frame is not an error.
        if self._stream_sid is None:
            raise ProtocolError(f"cannot send {what} before start")


# -- wire helpers shared with the caller side (aybiza.testing.twilio_caller) --


def load_object(message: str | bytes, max_bytes: int, peer: str) -> dict[str, Any]:
    """Decode one text message into a JSON object, bounded to ``max_bytes`` of UTF-8."""
    if isinstance(message, str):
        text = message
        # Measure UTF-8 only when the character count alone cannot decide.
        if len(text) > max_bytes or (
            4 * len(text) > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes
        ):
            raise ProtocolError(f"{peer} message exceeds {max_bytes} bytes")
    elif isinstance(message, bytes | bytearray):
        if len(message) > max_bytes:
            raise ProtocolError(f"{peer} message of {len(message)} bytes exceeds {max_bytes}")
        try:
            text = bytes(message).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{peer} message is not UTF-8 text") from None
    else:
        raise ProtocolError(f"{peer} message is {type(message).__name__}, not text")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(f"{peer} message is not valid JSON") from None
    if type(data) is not dict:
        raise ProtocolError(f"{peer} message is JSON {type(data).__name__}, not an object")
    return data


def field(obj: dict[str, Any], key: str, where: str) -> Any:
    """``obj[key]``, or a ProtocolError naming the missing field."""
    try:
        return obj[key]
    except KeyError:
        raise ProtocolError(f"{where}: missing field {key!r}") from None


def field_object(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """A required JSON-object field."""
    value = field(obj, key, where)
    if type(value) is not dict:
        raise ProtocolError(f"{where}: {key!r} must be an object")
    return value


def field_str(obj: dict[str, Any], key: str, where: str) -> str:
    """A required string field."""
    value = field(obj, key, where)
    if type(value) is not str:
        raise ProtocolError(f"{where}: {key!r} must be a string")
    return value


def field_uint(obj: dict[str, Any], key: str, where: str) -> int:
    """A required non-negative integer, sent by Twilio as a decimal string (a JSON int is accepted)."""
    value = _uint(field(obj, key, where))
    if value is None:
        raise ProtocolError(f"{where}: {key!r} must be a non-negative integer string, got {_short(obj[key])}")
    return value


def _uint(value: object) -> int | None:
    """``value`` as a non-negative integer if it is one (a decimal string or a JSON int), else None."""
    if type(value) is str:
        # isascii() rules out Unicode digits, which int() would accept.
        if 0 < len(value) <= _MAX_UINT_DIGITS and value.isascii() and value.isdigit():
            return int(value)
    elif type(value) is int and 0 <= value:
        return value
    return None


def field_base64(obj: dict[str, Any], key: str, where: str, max_chars: int) -> bytes:
    """A required base64 string field, decoded strictly; longer than ``max_chars`` is rejected unread."""
    value = field_str(obj, key, where)
    if len(value) > max_chars:
        raise ProtocolError(f"{where}: {key!r} of {len(value)} base64 characters exceeds {max_chars}")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ProtocolError(f"{where}: {key!r} is not valid base64") from None


def _short(value: object) -> str:
    """repr() for error messages, cut so a hostile peer cannot make them huge."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
