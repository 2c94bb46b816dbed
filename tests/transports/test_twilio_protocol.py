"""The Twilio Media Streams protocol, both ends, without sockets or an event loop.

Golden inputs are the exact messages of docs/protocols.md §1.3 (Twilio's docs),
kept verbatim in ``golden/twilio_inbound.jsonl``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aybiza.errors import AuthError, ProtocolError
from aybiza.testing.twilio_caller import (
    ServerClear,
    ServerMark,
    ServerMedia,
    TwilioCallerProtocol,
)
from aybiza.transports.twilio import (
    Connected,
    Dtmf,
    MarkDone,
    Media,
    Started,
    Stopped,
    TwilioProtocol,
)

GOLDEN = Path(__file__).parent / "golden" / "twilio_inbound.jsonl"
CONNECTED, START, MEDIA_AS_DOCUMENTED, DTMF, MARK, STOP = GOLDEN.read_text().splitlines()
# The docs elide the payload with "..."; cut there it is valid base64.
MEDIA = MEDIA_AS_DOCUMENTED.replace("no+JhoaJjpzS...", "no+JhoaJjpzS")
# The docs' placeholder SIDs ("MZXXX…") are 32 characters, not 34: taken as they are.
STREAM_SID = json.loads(START)["streamSid"]
CALL_SID = json.loads(START)["start"]["callSid"]
ACCOUNT_SID = json.loads(START)["start"]["accountSid"]
CUSTOM = {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}


def started(**options: Any) -> TwilioProtocol:
    """A server protocol that has accepted the golden ``connected`` and ``start``."""
    protocol = TwilioProtocol(**options)
    protocol.receive(CONNECTED)
    protocol.receive(START)
    return protocol


def with_changes(message: str, change: Callable[[dict[str, Any]], None]) -> str:
    """``message`` re-serialised after ``change`` edits its parsed form in place."""
    data = json.loads(message)
    change(data)
    return json.dumps(data)


def echo(protocol: TwilioProtocol, name: str, sequence: int) -> list[Any]:
    mark = {"event": "mark", "sequenceNumber": str(sequence), "streamSid": STREAM_SID, "mark": {"name": name}}
    return protocol.receive(json.dumps(mark))


# -- golden messages, Twilio -> server -----------------------------------------


def test_connected_golden() -> None:
    assert TwilioProtocol().receive(CONNECTED) == [Connected(protocol="Call", version="1.0.0")]


def test_start_golden_exposes_stream_call_and_custom_parameters() -> None:
    protocol = TwilioProtocol()
    protocol.receive(CONNECTED)
    assert not protocol.started
    assert protocol.receive(START) == [
        Started(
            stream_sid=STREAM_SID,
            call_sid=CALL_SID,
            account_sid=ACCOUNT_SID,
            tracks=("inbound",),
            custom_parameters=CUSTOM,
            encoding="audio/x-mulaw",
            sample_rate=8000,
            channels=1,
        )
    ]
    assert (protocol.started, protocol.stopped) == (True, False)
    assert (protocol.stream_sid, protocol.call_sid) == (STREAM_SID, CALL_SID)


def test_start_without_connected_is_accepted() -> None:
    assert isinstance(TwilioProtocol().receive(START)[0], Started)


def test_media_golden_decodes_payload_and_counters() -> None:
    assert started().receive(MEDIA) == [
        Media(payload=base64.b64decode("no+JhoaJjpzS"), timestamp_ms=5, chunk=2, sequence=4)
    ]


def test_media_as_documented_with_elided_payload_is_bad_base64() -> None:
    with pytest.raises(ProtocolError, match="'payload' is not valid base64"):
        started().receive(MEDIA_AS_DOCUMENTED)


def test_dtmf_golden() -> None:
    assert started().receive(DTMF) == [Dtmf("1")]


def test_mark_golden_echo_of_a_sent_mark_was_played() -> None:
    protocol = started()
    protocol.send_mark("my label")
    assert protocol.receive(MARK) == [MarkDone("my label", played=True)]


def test_stop_golden_ends_the_stream() -> None:
    protocol = started()
    assert protocol.receive(STOP) == [Stopped(CALL_SID)]
    assert protocol.stopped and protocol.started


def test_bytes_messages_are_accepted() -> None:
    protocol = TwilioProtocol()
    protocol.receive(CONNECTED.encode())
    assert isinstance(protocol.receive(START.encode())[0], Started)


def test_a_whole_call_in_order() -> None:
    protocol = started()
    events = [protocol.receive(message)[0] for message in (MEDIA, DTMF)]
    protocol.send_mark("my label")
    events += echo(protocol, "my label", 6)
    events += protocol.receive(with_changes(STOP, lambda m: m.update(sequenceNumber="7")))
    assert [type(event) for event in events] == [Media, Dtmf, MarkDone, Stopped]


# -- golden messages, server -> Twilio (§1.4) ----------------------------------


def test_send_media_is_the_documented_shape() -> None:
    audio = b"\xff" * 160
    text = started().send_media(audio)
    payload = base64.b64encode(audio).decode()
    assert text == f'{{"event":"media","streamSid":"{STREAM_SID}","media":{{"payload":"{payload}"}}}}'


def test_send_mark_and_clear_are_the_documented_shape() -> None:
    protocol = started()
    assert protocol.send_mark("turn-7/seg-3") == (
        f'{{"event":"mark","streamSid":"{STREAM_SID}","mark":{{"name":"turn-7/seg-3"}}}}'
    )
    assert protocol.send_clear() == f'{{"event":"clear","streamSid":"{STREAM_SID}"}}'


def test_mark_names_are_json_escaped() -> None:
    text = started().send_mark('say "hi"\n')
    assert json.loads(text)["mark"]["name"] == 'say "hi"\n'


@pytest.mark.parametrize(
    "send", [lambda p: p.send_media(b"\xff"), lambda p: p.send_mark(), lambda p: p.send_clear()]
)
def test_nothing_can_be_sent_before_start(send: Callable[[TwilioProtocol], str]) -> None:
    protocol = TwilioProtocol()
    protocol.receive(CONNECTED)
    with pytest.raises(ProtocolError, match="before start"):
        send(protocol)


def test_sending_after_stop_still_builds_text() -> None:
    protocol = started()
    protocol.receive(STOP)
    assert json.loads(protocol.send_media(b"\x7f"))["streamSid"] == STREAM_SID


def test_empty_audio_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one byte"):
        started().send_media(b"")


# -- the caller side reproduces Twilio's messages byte for byte ----------------


def golden_caller() -> TwilioCallerProtocol:
    return TwilioCallerProtocol(
        custom_parameters=CUSTOM, stream_sid=STREAM_SID, call_sid=CALL_SID, account_sid=ACCOUNT_SID
    )


def test_caller_builds_connected_start_media_dtmf_exactly() -> None:
    caller = golden_caller()
    assert caller.connected() == CONNECTED
    assert caller.start() == START
    caller.media(b"\xff" * 160)  # sequence 2, chunk 1
    caller.mark("m-1")  # sequence 3
    assert caller.media(base64.b64decode("no+JhoaJjpzS"), timestamp_ms=5) == MEDIA
    assert caller.dtmf("1") == DTMF


def test_caller_builds_mark_and_stop_exactly() -> None:
    caller = golden_caller()
    caller.connected()
    caller.start()
    caller.media(b"\xff")
    caller.media(b"\xff")
    assert caller.mark("my label") == MARK
    assert caller.stop() == STOP


def test_caller_generates_twilio_style_sids() -> None:
    caller = TwilioCallerProtocol()
    for sid, prefix in ((caller.stream_sid, "MZ"), (caller.call_sid, "CA"), (caller.account_sid, "AC")):
        assert len(sid) == 34 and sid.startswith(prefix)
        int(sid[2:], 16)
    assert TwilioCallerProtocol().stream_sid != caller.stream_sid


# -- sequence rules -------------------------------------------------------------


def test_caller_counts_sequence_across_all_messages_and_chunks_per_media() -> None:
    caller = golden_caller()
    messages = [json.loads(caller.connected()), json.loads(caller.start())]
    messages.append(json.loads(caller.media(b"\xff" * 160)))
    messages.append(json.loads(caller.dtmf("#")))
    messages.append(json.loads(caller.media(b"\xff" * 160)))
    messages.append(json.loads(caller.mark("m-1")))
    messages.append(json.loads(caller.media(b"\xff" * 80)))
    messages.append(json.loads(caller.media(b"\xff" * 160)))
    messages.append(json.loads(caller.stop()))
    assert "sequenceNumber" not in messages[0]
    assert [m["sequenceNumber"] for m in messages[1:]] == [str(n) for n in range(1, 9)]
    media = [m["media"] for m in messages if m["event"] == "media"]
    assert [m["chunk"] for m in media] == ["1", "2", "3", "4"]
    # Timestamps are milliseconds of audio before each chunk: 160 bytes = 20 ms.
    assert [m["timestamp"] for m in media] == ["0", "20", "40", "50"]


def test_caller_refuses_messages_out_of_order() -> None:
    caller = TwilioCallerProtocol()
    with pytest.raises(ProtocolError, match="cannot send media"):
        caller.media(b"\xff")
    caller.connected()
    with pytest.raises(ProtocolError, match="cannot send connected"):
        caller.connected()
    caller.start()
    caller.stop()
    with pytest.raises(ProtocolError, match="cannot send dtmf"):
        caller.dtmf("1")


def test_server_accepts_gaps_in_sequence_numbers() -> None:
    protocol = started()
    jump = with_changes(MEDIA, lambda m: m.update(sequenceNumber="40"))
    assert protocol.receive(jump)[0] == Media(base64.b64decode("no+JhoaJjpzS"), 5, 2, 40)


@pytest.mark.parametrize("sequence", ["1", "3", "4"])
def test_server_rejects_a_sequence_number_that_does_not_increase(sequence: str) -> None:
    protocol = started()
    protocol.receive(MEDIA)  # sequence 4
    repeat = with_changes(DTMF, lambda m: m.update(sequenceNumber=sequence))
    with pytest.raises(ProtocolError, match=f"sequenceNumber {sequence} is not after 4"):
        protocol.receive(repeat)


def test_a_caller_session_is_accepted_end_to_end() -> None:
    caller = TwilioCallerProtocol(custom_parameters={"call_token": "t0k"})
    server = TwilioProtocol(check_token=lambda params: params.get("call_token") == "t0k")
    events = server.receive(caller.connected()) + server.receive(caller.start())
    for _ in range(3):
        events += server.receive(caller.media(b"\xff" * 160))
    events += server.receive(caller.dtmf("9"))
    events += server.receive(caller.mark(_name_of(server.send_mark())))
    events += server.receive(caller.stop())
    assert [type(e) for e in events] == [Connected, Started, Media, Media, Media, Dtmf, MarkDone, Stopped]
    assert [e.timestamp_ms for e in events if isinstance(e, Media)] == [0, 20, 40]


def _name_of(mark_message: str) -> str:
    name = json.loads(mark_message)["mark"]["name"]
    assert isinstance(name, str)
    return name


# -- marks: played vs cleared ---------------------------------------------------


def test_marks_are_auto_named_and_tracked_until_echoed() -> None:
    protocol = started()
    assert not protocol.audio_pending
    assert [_name_of(protocol.send_mark()) for _ in range(2)] == ["m-1", "m-2"]
    assert protocol.pending_marks == ("m-1", "m-2")
    assert protocol.audio_pending
    assert echo(protocol, "m-1", 2) == [MarkDone("m-1", played=True)]
    assert protocol.pending_marks == ("m-2",)
    assert echo(protocol, "m-2", 3) == [MarkDone("m-2", played=True)]
    assert protocol.pending_marks == () and not protocol.audio_pending


def test_marks_pending_at_clear_echo_as_not_played() -> None:
    protocol = started()
    protocol.send_mark()
    protocol.send_mark()
    protocol.send_clear()
    assert protocol.audio_pending  # until Twilio confirms, the caller may still hear audio
    assert echo(protocol, "m-1", 2) + echo(protocol, "m-2", 3) == [
        MarkDone("m-1", played=False),
        MarkDone("m-2", played=False),
    ]
    assert not protocol.audio_pending


def test_a_mark_sent_after_clear_is_played() -> None:
    protocol = started()
    protocol.send_mark()
    protocol.send_clear()
    protocol.send_mark()
    assert echo(protocol, "m-1", 2) == [MarkDone("m-1", played=False)]
    assert echo(protocol, "m-2", 3) == [MarkDone("m-2", played=True)]


def test_a_mark_echoed_before_clear_stays_played() -> None:
    protocol = started()
    protocol.send_mark()
    protocol.send_mark()
    assert echo(protocol, "m-1", 2) == [MarkDone("m-1", played=True)]
    protocol.send_clear()
    protocol.send_mark()
    assert echo(protocol, "m-2", 3) == [MarkDone("m-2", played=False)]
    assert echo(protocol, "m-3", 4) == [MarkDone("m-3", played=True)]


def test_two_clears_and_duplicate_names() -> None:
    protocol = started()
    protocol.send_mark("seg")
    protocol.send_clear()
    protocol.send_mark("seg")
    protocol.send_clear()
    protocol.send_mark("seg")
    assert [echo(protocol, "seg", n)[0].played for n in (2, 3, 4)] == [False, False, True]


def test_echo_of_a_mark_never_sent_is_rejected() -> None:
    protocol = started()
    protocol.send_mark("a")
    with pytest.raises(ProtocolError, match="'b' was never sent"):
        echo(protocol, "b", 2)


@given(st.lists(st.sampled_from(["mark", "clear", "echo"]), max_size=40), st.data())
@settings(max_examples=300, deadline=None)
def test_mark_bookkeeping_matches_a_simple_model(ops: list[str], data: st.DataObject) -> None:
    """A mark echoes as played unless a clear was sent while it was pending, whatever the echo order."""
    protocol = started()
    model: list[list[Any]] = []  # [name, cleared]
    sequence = 1
    for op in ops:
        if op == "mark":
            model.append([_name_of(protocol.send_mark()), False])
        elif op == "clear":
            protocol.send_clear()
            for entry in model:
                entry[1] = True
        elif model:
            name, cleared = model.pop(data.draw(st.integers(0, len(model) - 1)))
            sequence += 1
            assert echo(protocol, name, sequence) == [MarkDone(name, played=not cleared)]
        assert protocol.pending_marks == tuple(entry[0] for entry in model)
        assert protocol.audio_pending == bool(model)


# -- bad input ----------------------------------------------------------------


def drop(*path: str) -> Callable[[dict[str, Any]], None]:
    def change(message: dict[str, Any]) -> None:
        for key in path[:-1]:
            message = message[key]
        del message[path[-1]]

    return change


def put(value: Any, *path: str) -> Callable[[dict[str, Any]], None]:
    def change(message: dict[str, Any]) -> None:
        for key in path[:-1]:
            message = message[key]
        message[path[-1]] = value

    return change


MISSING_START_FIELDS = [
    ("start",),
    ("streamSid",),
    ("sequenceNumber",),
    ("start", "streamSid"),
    ("start", "callSid"),
    ("start", "accountSid"),
    ("start", "tracks"),
    ("start", "mediaFormat"),
]


@pytest.mark.parametrize("path", MISSING_START_FIELDS, ids="/".join)
def test_start_missing_a_field_names_it(path: tuple[str, ...]) -> None:
    with pytest.raises(ProtocolError, match=f"missing field '{path[-1]}'"):
        TwilioProtocol().receive(with_changes(START, drop(*path)))


MISSING_FIELDS_AFTER_START = [
    (MEDIA, ("streamSid",)),
    (MEDIA, ("sequenceNumber",)),
    (MEDIA, ("media",)),
    (MEDIA, ("media", "payload")),
    (MEDIA, ("media", "chunk")),
    (MEDIA, ("media", "timestamp")),
    (DTMF, ("dtmf",)),
    (DTMF, ("dtmf", "digit")),
    (MARK, ("mark", "name")),
    (STOP, ("stop",)),
    (STOP, ("stop", "callSid")),
]


@pytest.mark.parametrize(
    ("message", "path"),
    MISSING_FIELDS_AFTER_START,
    ids=[f"{json.loads(m)['event']}:{'/'.join(p)}" for m, p in MISSING_FIELDS_AFTER_START],
)
def test_missing_field_names_it(message: str, path: tuple[str, ...]) -> None:
    protocol = started()
    protocol.send_mark("my label")
    with pytest.raises(ProtocolError, match=f"missing field '{path[-1]}'"):
        protocol.receive(with_changes(message, drop(*path)))


BAD_START = [
    (put("audio/l16", "start", "mediaFormat", "encoding"), "mediaFormat"),
    (put(16000, "start", "mediaFormat", "sampleRate"), "mediaFormat"),
    (put("8000", "start", "mediaFormat", "sampleRate"), "mediaFormat"),
    (put(2, "start", "mediaFormat", "channels"), "mediaFormat"),
    (put(True, "start", "mediaFormat", "channels"), "mediaFormat"),
    (put("MZother", "streamSid"), "differs from start.streamSid"),
    (put("inbound", "start", "tracks"), "'tracks' must be a list"),
    (put({"n": 1}, "start", "customParameters"), "'customParameters' must map names to strings"),
    (put("0", "sequenceNumber"), "at least 1"),
    (put(None, "start", "callSid"), "'callSid' must be a string"),
]


@pytest.mark.parametrize(("change", "problem"), BAD_START, ids=[p for _, p in BAD_START])
def test_bad_start_is_rejected(change: Callable[[dict[str, Any]], None], problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        TwilioProtocol().receive(with_changes(START, change))


def test_start_without_custom_parameters_has_none() -> None:
    event = TwilioProtocol().receive(with_changes(START, drop("start", "customParameters")))[0]
    assert isinstance(event, Started) and event.custom_parameters == {}


def b64(size: int) -> str:
    return base64.b64encode(b"\xff" * size).decode()


BAD_AFTER_START = [
    ("not json", "not valid JSON"),
    ('{"event":"media"', "not valid JSON"),
    ("[" * 50_000, "not valid JSON"),
    ("[1, 2]", "JSON list, not an object"),
    ('"media"', "JSON str, not an object"),
    ('{"streamSid":"x"}', "no 'event' field"),
    ('{"event":"hangup"}', "unknown Twilio event 'hangup'"),
    ('{"event":7}', "unknown Twilio event 7"),
    (with_changes(MEDIA, put("no+JhoaJjpz", "media", "payload")), "not valid base64"),
    (with_changes(MEDIA, put("no+Jho$aJjpz", "media", "payload")), "not valid base64"),
    (with_changes(MEDIA, put("¿¿¿¿", "media", "payload")), "not valid base64"),
    (with_changes(MEDIA, put(12, "media", "payload")), "'payload' must be a string"),
    (with_changes(MEDIA, put("", "media", "payload")), "payload of 0 bytes"),
    (with_changes(MEDIA, put(b64(8001), "media", "payload")), "payload of 8001 bytes"),
    (with_changes(MEDIA, put(b64(9000), "media", "payload")), "'payload' of 12000 base64 characters"),
    (with_changes(MEDIA, put("outbound", "media", "track")), "not the inbound track"),
    (with_changes(MEDIA, put("MZ" + "0" * 32, "streamSid")), "wrong streamSid"),
    (with_changes(MEDIA, put("-1", "media", "chunk")), "'chunk' must be a non-negative integer"),
    (with_changes(MEDIA, put("٣", "media", "timestamp")), "'timestamp' must be a non-negative integer"),
    (with_changes(MEDIA, put(" 5", "media", "timestamp")), "'timestamp' must be a non-negative integer"),
    (with_changes(MEDIA, put("9" * 400, "sequenceNumber")), "'sequenceNumber' must be a non-negative"),
    (with_changes(MEDIA, put(4.0, "sequenceNumber")), "'sequenceNumber' must be a non-negative"),
    (with_changes(MEDIA, put([], "media")), "'media' must be an object"),
    (with_changes(DTMF, put("x", "dtmf", "digit")), "'x' is not a DTMF digit"),
    (with_changes(DTMF, put("12", "dtmf", "digit")), "'12' is not a DTMF digit"),
    (with_changes(STOP, put("CA" + "0" * 32, "stop", "callSid")), "callSid 'CA0000"),
    (START, "second start"),
    (CONNECTED, "connected: allowed only once"),
]


@pytest.mark.parametrize(("message", "problem"), BAD_AFTER_START, ids=[p for _, p in BAD_AFTER_START])
def test_bad_message_after_start_is_rejected(message: str, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        started().receive(message)


def test_non_utf8_bytes_are_rejected() -> None:
    with pytest.raises(ProtocolError, match="not UTF-8"):
        started().receive(b'{"event":"\xff"}')


@pytest.mark.parametrize("size", [10_000, 20_000])
def test_oversized_message_is_rejected_before_parsing(size: int) -> None:
    protocol = started(max_message_bytes=8 * 1024)
    huge = with_changes(DTMF, put("x" * size, "padding"))
    with pytest.raises(ProtocolError, match="exceeds 8192 bytes"):
        protocol.receive(huge)


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    protocol = started(max_message_bytes=1000)
    wide = with_changes(DTMF, put("€" * 320, "note")).replace("\\u20ac", "€")  # 3 bytes each
    assert len(wide) < 1000 < len(wide.encode())
    with pytest.raises(ProtocolError, match="exceeds 1000 bytes"):
        protocol.receive(wide)


@pytest.mark.parametrize("message", [MEDIA, DTMF, MARK, STOP])
def test_events_before_start_are_rejected(message: str) -> None:
    protocol = TwilioProtocol()
    protocol.receive(CONNECTED)
    event = json.loads(message)["event"]
    with pytest.raises(ProtocolError, match=f"Twilio sent {event} before start"):
        protocol.receive(message)


@pytest.mark.parametrize("message", [MEDIA, DTMF, MARK, STOP, START, CONNECTED])
def test_messages_after_stop_are_rejected(message: str) -> None:
    protocol = started()
    protocol.receive(with_changes(STOP, put("3", "sequenceNumber")))
    with pytest.raises(ProtocolError, match="after stop"):
        protocol.receive(message)


def test_connected_after_start_is_rejected() -> None:
    protocol = TwilioProtocol()
    protocol.receive(START)
    with pytest.raises(ProtocolError, match="only once, as the first message"):
        protocol.receive(CONNECTED)


def test_call_token_is_checked_on_start() -> None:
    seen: list[dict[str, str]] = []

    def check(params: dict[str, str]) -> bool:
        seen.append(params)
        return params.get("FirstName") == "Jane"

    assert isinstance(started(check_token=check).receive(MEDIA)[0], Media)
    assert seen == [CUSTOM]


def test_rejected_call_token_raises_auth_error() -> None:
    protocol = TwilioProtocol(check_token=lambda params: False)
    protocol.receive(CONNECTED)
    with pytest.raises(AuthError, match="call token rejected"):
        protocol.receive(START)
    assert not protocol.started


def test_after_any_error_the_protocol_stays_failed() -> None:
    protocol = started()
    with pytest.raises(ProtocolError):
        protocol.receive("garbage")
    assert protocol.failed
    with pytest.raises(ProtocolError, match="already failed: Twilio message is not valid JSON"):
        protocol.receive(MEDIA)


def test_after_auth_error_the_protocol_stays_failed() -> None:
    protocol = TwilioProtocol(check_token=lambda params: False)
    with pytest.raises(AuthError):
        protocol.receive(START)
    with pytest.raises(ProtocolError, match="already failed"):
        protocol.receive(START)


def test_an_exception_from_check_token_also_fails_the_protocol() -> None:
    def broken(params: dict[str, str]) -> bool:
        raise KeyError("call_token")

    protocol = TwilioProtocol(check_token=broken)
    with pytest.raises(KeyError):
        protocol.receive(START)
    with pytest.raises(ProtocolError, match="already failed"):
        protocol.receive(MEDIA)


# -- round trips ----------------------------------------------------------------

EVERY_BYTE = bytes(range(256))


def test_every_byte_value_survives_caller_to_server() -> None:
    caller = TwilioCallerProtocol()
    server = TwilioProtocol()
    server.receive(caller.connected())
    server.receive(caller.start())
    event = server.receive(caller.media(EVERY_BYTE))[0]
    assert isinstance(event, Media) and event.payload == EVERY_BYTE


def test_every_byte_value_survives_server_to_caller() -> None:
    caller = TwilioCallerProtocol()
    server = TwilioProtocol()
    server.receive(caller.connected())
    server.receive(caller.start())
    assert caller.receive(server.send_media(EVERY_BYTE)) == ServerMedia(EVERY_BYTE)
    assert caller.receive(server.send_mark("turn-1")) == ServerMark("turn-1")
    assert caller.receive(server.send_clear()) == ServerClear()


@given(st.binary(min_size=1, max_size=8000))
@settings(max_examples=200, deadline=None)
def test_any_audio_round_trips_both_ways(audio: bytes) -> None:
    caller = TwilioCallerProtocol()
    server = TwilioProtocol()
    server.receive(caller.connected())
    server.receive(caller.start())
    assert server.receive(caller.media(audio))[0] == Media(audio, 0, 1, 2)
    assert caller.receive(server.send_media(audio)) == ServerMedia(audio)


# -- the caller rejects garbage from the server ---------------------------------


def started_caller() -> TwilioCallerProtocol:
    caller = golden_caller()
    caller.connected()
    caller.start()
    return caller


BAD_FROM_SERVER = [
    ("nope", "not valid JSON"),
    ("[]", "not an object"),
    (json.dumps({"streamSid": STREAM_SID}), "no 'event'"),
    (json.dumps({"event": "hangup", "streamSid": STREAM_SID}), "unknown server event"),
    (json.dumps({"event": "clear", "streamSid": "MZ1"}), "wrong streamSid"),
    (json.dumps({"event": "clear"}), "missing field 'streamSid'"),
    (json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": "a"}}), "not valid base64"),
    (json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {}}), "missing field 'payload'"),
    (json.dumps({"event": "mark", "streamSid": STREAM_SID, "mark": {"name": 3}}), "'name' must be a string"),
]


@pytest.mark.parametrize(("message", "problem"), BAD_FROM_SERVER, ids=[p for _, p in BAD_FROM_SERVER])
def test_caller_rejects_bad_server_messages(message: str, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        started_caller().receive(message)


def test_caller_rejects_server_messages_before_start() -> None:
    caller = golden_caller()
    caller.connected()
    with pytest.raises(ProtocolError, match="server clear before start"):
        caller.receive(json.dumps({"event": "clear", "streamSid": STREAM_SID}))


# -- fuzzing: nothing but ProtocolError, ever ------------------------------------

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def _server_at(scenario: str, token_ok: bool) -> TwilioProtocol:
    """A server ready for the golden message of ``scenario`` (a mark pending for ``mark``)."""
    if scenario == "start":
        protocol = TwilioProtocol(check_token=lambda params: token_ok)
        protocol.receive(CONNECTED)
    else:
        protocol = started()
        protocol.send_mark("my label")
    return protocol


SCENARIOS = {"start": START, "media": MEDIA, "dtmf": DTMF, "mark": MARK, "stop": STOP, "connected": CONNECTED}


def _containers(node: Any, found: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) pair in a JSON tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        found.append((node, key))
        _containers(child, found)
    return found


@st.composite
def mutated_messages(draw: st.DrawFn) -> tuple[str, str]:
    scenario = draw(st.sampled_from(sorted(SCENARIOS)))
    data = json.loads(SCENARIOS[scenario])
    for _ in range(draw(st.integers(1, 3))):
        places = _containers(data, [])
        kind = draw(st.sampled_from(["drop", "retype", "payload"] if places else ["payload"]))
        if kind == "payload":
            if isinstance(data.setdefault("media", {}), dict):
                data["media"]["payload"] = draw(st.text(alphabet="ABCab09+/=$ \n", max_size=40))
            continue
        container, key = draw(st.sampled_from(places))
        if kind == "drop":
            del container[key]
        else:
            container[key] = draw(json_values)
    text = json.dumps(data)
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return scenario, text


def _receive_only_protocol_errors(protocol: TwilioProtocol, message: str | bytes) -> None:
    try:
        events = protocol.receive(message)
    except ProtocolError:
        assert protocol.failed
        with pytest.raises(ProtocolError):
            protocol.receive(MEDIA)
    else:
        assert len(events) == 1
        assert isinstance(events[0], Connected | Started | Media | Dtmf | MarkDone | Stopped)


@given(mutated_messages(), st.booleans())
@FUZZ
def test_mutated_messages_raise_only_protocol_errors(case: tuple[str, str], token_ok: bool) -> None:
    scenario, message = case
    _receive_only_protocol_errors(_server_at(scenario, token_ok), message)


@given(st.sampled_from(["start", "media"]), st.text() | st.binary())
@FUZZ
def test_random_text_raises_only_protocol_errors(scenario: str, message: str | bytes) -> None:
    _receive_only_protocol_errors(_server_at(scenario, True), message)


@given(st.text(alphabet='{}[]":,0123456789eventmdiaplos tr', max_size=200))
@settings(max_examples=500, deadline=None)
def test_caller_raises_only_protocol_errors(message: str) -> None:
    try:
        event = started_caller().receive(message)
    except ProtocolError:
        return
    assert isinstance(event, ServerMedia | ServerMark | ServerClear)
