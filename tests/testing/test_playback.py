"""Twilio's playback buffer as our callers model it."""

from __future__ import annotations

from aybiza.testing.playback import PlaybackBuffer


def test_audio_plays_at_8000_bytes_a_second_and_marks_wait_for_it() -> None:
    buffer = PlaybackBuffer(keep_audio=True)
    buffer.media(b"a" * 8000, now=10.0)
    assert buffer.mark("m1", now=10.2) == []
    assert buffer.due(10.5) == [] and len(buffer.heard) == 4000  # half a second has played
    assert buffer.due(11.0) == ["m1"] and bytes(buffer.heard) == b"a" * 8000
    assert buffer.idle(11.0)


def test_a_mark_with_nothing_queued_comes_back_at_once() -> None:
    buffer = PlaybackBuffer()
    assert buffer.mark("m1", now=5.0) == ["m1"]


def test_clear_drops_what_has_not_played_and_returns_every_pending_mark() -> None:
    buffer = PlaybackBuffer(keep_audio=True)
    buffer.media(b"a" * 8000, now=0.0)
    buffer.mark("m1", now=0.0)
    buffer.media(b"b" * 8000, now=0.0)
    buffer.mark("m2", now=0.0)
    assert buffer.clear(now=0.25) == ["m1", "m2"]
    assert bytes(buffer.heard) == b"a" * 2000 and buffer.idle(0.25)
    buffer.media(1600, now=1.0)  # sizes only, as the load generator queues them
    assert buffer.played_until == 1.2 and not buffer.idle(1.1)
