"""The event-stream encoder against botocore's own decoder and the documented worked example."""

from __future__ import annotations

import json

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

from aybiza.testing.eventstream import encode_message, error_frame, event_frame, exception_frame

# docs/protocols.md §3.4: a messageStart frame accepted by botocore.
WORKED_EXAMPLE = bytes.fromhex(
    "0000007700000052abb5d36e0b3a6576656e742d7479706507000c6d65737361676553746172740d3a636f6e74656e742d74"
    "7970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970650700056576656e747b22726f6c65"
    "223a2022617373697374616e74227d5be0d2f5"
)


def decode(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(message.headers, message.payload) for message in buffer]


def test_matches_the_worked_example_byte_for_byte() -> None:
    frame = encode_message(
        {":event-type": "messageStart", ":content-type": "application/json", ":message-type": "event"},
        b'{"role": "assistant"}',
    )
    assert frame == WORKED_EXAMPLE


def test_event_exception_and_error_frames_decode_with_botocore() -> None:
    stream = (
        event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
        + exception_frame("throttlingException", "slow down")
        + error_frame("InternalFailure", "boom")
    )
    (h1, p1), (h2, p2), (h3, p3) = decode(stream)
    assert h1[":event-type"] == "contentBlockDelta" and json.loads(p1)["delta"] == {"text": "Hi"}
    assert (h2[":message-type"], h2[":exception-type"]) == ("exception", "throttlingException")
    assert json.loads(p2)["message"] == "slow down"
    assert (h3[":message-type"], h3[":error-code"], h3[":error-message"], p3) == (
        "error",
        "InternalFailure",
        "boom",
        b"",
    )


def test_a_corrupted_frame_fails_its_crc() -> None:
    frame = bytearray(event_frame("messageStop", {"stopReason": "end_turn"}))
    frame[-6] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        decode(bytes(frame))


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) < 256),
        st.one_of(
            st.text(max_size=50), st.binary(max_size=50), st.booleans(), st.integers(-(2**63), 2**63 - 1)
        ),
        max_size=5,
    ),
    st.binary(max_size=300),
    st.integers(1, 64),
)
def test_any_headers_and_payload_round_trip_in_any_chunking(
    headers: dict[str, object], payload: bytes, piece: int
) -> None:
    frame = encode_message(headers, payload) * 2  # type: ignore[arg-type]
    buffer = EventStreamBuffer()
    messages = []
    for start in range(0, len(frame), piece):
        buffer.add_data(frame[start : start + piece])
        messages.extend(buffer)
    assert len(messages) == 2
    for message in messages:
        assert message.payload == payload
        assert message.headers == headers
