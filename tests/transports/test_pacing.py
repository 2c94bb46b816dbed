"""The pace guard of a call's inbound media: real time passes, a flood is dropped, then closed."""

from __future__ import annotations

from aybiza.transports.pacing import MediaPacer, Pace

FRAME_S = 0.02


def test_a_phone_at_real_time_never_loses_a_frame() -> None:
    pacer = MediaPacer(rate=2.0, burst_s=5.0, close_after_s=5.0)
    paces = [pacer.admit(FRAME_S, n * FRAME_S) for n in range(50 * 600)]  # ten minutes
    assert set(paces) == {Pace.ACCEPT} and pacer.dropped_frames == 0


def test_a_burst_after_a_stall_is_accepted() -> None:
    pacer = MediaPacer(rate=2.0, burst_s=5.0, close_after_s=5.0)
    for n in range(50):
        assert pacer.admit(FRAME_S, n * FRAME_S) is Pace.ACCEPT
    # three seconds of audio held up by the network arrive at once
    assert all(pacer.admit(FRAME_S, 4.0) is Pace.ACCEPT for _ in range(150))


def test_five_hundred_times_real_time_is_dropped_then_closed() -> None:
    pacer = MediaPacer(rate=2.0, burst_s=5.0, close_after_s=5.0)
    paces = [pacer.admit(FRAME_S, n * FRAME_S / 500) for n in range(1000)]
    accepted = paces.count(Pace.ACCEPT)
    assert 250 <= accepted <= 260  # the five-second burst allowance, and a little refill
    assert Pace.DROP in paces and paces[-1] is Pace.CLOSE
    first_close = paces.index(Pace.CLOSE)
    assert first_close < accepted + 260  # closed after about five seconds of audio dropped


def test_a_stream_just_above_twice_real_time_is_held_to_twice() -> None:
    pacer = MediaPacer(rate=2.0, burst_s=1.0, close_after_s=1000.0)
    seconds = 60.0
    sent = int(seconds / FRAME_S * 2.5)
    paces = [pacer.admit(FRAME_S, n * seconds / sent) for n in range(sent)]
    accepted_s = paces.count(Pace.ACCEPT) * FRAME_S
    assert 2.0 * seconds <= accepted_s <= 2.0 * seconds + 1.5  # refill plus the burst


def test_tiny_messages_count_as_whole_frames() -> None:
    pacer = MediaPacer(rate=2.0, burst_s=1.0, close_after_s=1.0)
    paces = [pacer.admit(0.000125, 0.0) for _ in range(200)]  # one-byte payloads, all at once
    assert paces.count(Pace.ACCEPT) == 50 and paces[-1] is Pace.CLOSE
