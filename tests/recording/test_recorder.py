"""The recorder lays both sides on the call's clock, silences pauses and barge-ins, and streams a valid WAV."""

from __future__ import annotations

import stat
import wave
from pathlib import Path

import numpy as np
import pytest

from aybiza.codecs import lin2ulaw, resample
from aybiza.recording.recorder import CallRecorder

RATE = 8000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tone(seconds: float, level: int = 8000, rate: int = RATE) -> bytes:
    samples = np.arange(int(seconds * rate))
    return (np.sin(2 * np.pi * 440 * samples / rate) * level).astype(np.int16).tobytes()


def silence(seconds: float, rate: int = RATE) -> bytes:
    return bytes(int(seconds * rate) * 2)


def read(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getsampwidth() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
        return frames, wav.getframerate()


def loud(channel: np.ndarray, start_s: float, end_s: float, rate: int = RATE) -> float:
    """Share of 20 ms windows in [start, end) louder than -40 dBFS."""
    part = channel[int(start_s * rate):int(end_s * rate)].astype(np.float32)
    windows = part[: len(part) // 160 * 160].reshape(-1, 160)
    return float((np.sqrt((windows ** 2).mean(axis=1)) > 327).mean()) if len(windows) else 0.0


def talk(recorder: CallRecorder, clock: Clock, seconds: float, pcm_for: bytes | None = None,
         *, paused: bool | None = None) -> None:
    """Caller frames of 20 ms for ``seconds`` (speech from ``pcm_for`` or silence), the clock moving with them."""
    frame = 320
    audio = pcm_for if pcm_for is not None else silence(seconds)
    for offset in range(0, len(audio), frame):
        clock.now += 0.02
        if paused is not None and paused != recorder.paused:
            recorder.pause(paused)
        recorder.caller(audio[offset:offset + frame], RATE, clock.now)


def test_caller_left_agent_right_at_the_time_each_was_heard(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path / "call.wav", clock=clock)
    recorder.agent(tone(1.0), RATE, clock.now)  # the greeting, sent at once
    talk(recorder, clock, 2.0)  # the caller listens
    talk(recorder, clock, 1.5, tone(1.5))  # then speaks
    recorder.agent(b"", RATE, clock.now, ulaw=lin2ulaw(tone(1.0)))  # the reply, as phone μ-law
    talk(recorder, clock, 1.5)
    assert recorder.close(clock.now) == pytest.approx(5.0, abs=0.05)
    frames, rate = read(tmp_path / "call.wav")
    caller, agent = frames[:, 0], frames[:, 1]
    assert rate == RATE and len(frames) == pytest.approx(5 * RATE, abs=400)
    assert loud(agent, 0.0, 0.95) > 0.9 and loud(caller, 0.0, 1.95) == 0.0
    assert loud(caller, 2.05, 3.45) > 0.9 and loud(agent, 1.05, 3.45) == 0.0
    assert loud(agent, 3.55, 4.45) > 0.9 and loud(caller, 3.55, 5.0) == 0.0


def test_a_reply_sent_faster_than_real_time_plays_in_order_and_a_barge_in_cuts_it(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path / "call.wav", clock=clock)
    for _ in range(5):  # five seconds of reply handed over at once
        recorder.agent(tone(1.0), RATE, clock.now)
    talk(recorder, clock, 2.0)
    recorder.interrupted(clock.now)  # the caller talks over it at 2 s
    talk(recorder, clock, 2.0)
    recorder.close(clock.now)
    frames, _ = read(tmp_path / "call.wav")
    assert loud(frames[:, 1], 0.0, 1.95) > 0.9
    assert loud(frames[:, 1], 2.05, 4.0) == 0.0  # what was queued after the barge-in was never heard


def test_a_pause_silences_both_channels_and_is_kept_in_seconds(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path / "call.wav", clock=clock)
    talk(recorder, clock, 1.0, tone(1.0), paused=False)
    recorder.agent(tone(3.0), RATE, clock.now)
    talk(recorder, clock, 2.0, tone(2.0), paused=True)  # card digits: must not be on the recording
    talk(recorder, clock, 1.0, tone(1.0), paused=False)
    recorder.close(clock.now)
    [(start, end)] = recorder.pause_spans_s()
    assert start == pytest.approx(1.0, abs=0.05) and end == pytest.approx(3.0, abs=0.05)
    frames, _ = read(tmp_path / "call.wav")
    assert loud(frames[:, 0], 0.0, 0.95) > 0.9 and loud(frames[:, 0], 3.05, 4.0) > 0.9
    assert loud(frames[:, 0], 1.02, 2.98) == 0.0 and loud(frames[:, 1], 1.02, 2.98) == 0.0
    assert loud(frames[:, 1], 3.02, 3.98) > 0.9  # the agent's line goes on after the pause


def test_a_gap_in_caller_media_becomes_silence_so_the_channels_stay_aligned(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path / "call.wav", clock=clock)
    talk(recorder, clock, 1.0)
    clock.now += 5.0  # nothing arrived for five seconds
    talk(recorder, clock, 1.0, tone(1.0))
    recorder.close(clock.now)
    frames, _ = read(tmp_path / "call.wav")
    assert len(frames) == pytest.approx(7 * RATE, abs=400)
    assert loud(frames[:, 0], 0.0, 5.9) == 0.0 and loud(frames[:, 0], 6.1, 7.0) > 0.9


def test_caller_frames_that_were_held_up_and_arrive_in_a_burst_keep_their_place(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path / "call.wav", clock=clock)
    talk(recorder, clock, 1.0)
    clock.now += 1.5  # the server was busy; 1.5 s of speech waited in the socket
    speech = tone(1.5)
    for offset in range(0, len(speech), 320):
        recorder.caller(speech[offset:offset + 320], RATE, clock.now)  # all "arriving" now
    talk(recorder, clock, 1.0)
    recorder.close(clock.now)
    frames, _ = read(tmp_path / "call.wav")
    assert len(frames) == pytest.approx(3.5 * RATE, abs=400)  # the call's length: nothing pushed past it
    assert loud(frames[:, 0], 1.05, 2.45) > 0.9 and loud(frames[:, 0], 2.55, 3.5) == 0.0


def test_the_file_grows_during_the_call_and_memory_stays_bounded(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "call.wav"
    path.touch(mode=0o600)
    recorder = CallRecorder(path, clock=clock)
    talk(recorder, clock, 30.0, tone(30.0))
    assert path.stat().st_size > 28 * RATE * 4  # written as it went, not at the end
    assert len(recorder._caller) < 2 * RATE * 2  # about a second buffered
    recorder.close(clock.now)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    frames, _ = read(path)
    assert len(frames) == pytest.approx(30 * RATE, abs=400)


def test_browser_audio_keeps_its_rate_and_agent_audio_is_resampled_to_it(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path / "call.wav", clock=clock)
    for offset in range(0, 16000 * 2 * 2, 640):  # two seconds of 20 ms frames
        clock.now += 0.02
        recorder.caller(silence(0.02, 16000), 16000, clock.now)
        if offset == 0:
            recorder.agent(tone(1.0, rate=48000), 48000, clock.now)
    recorder.close(clock.now)
    frames, rate = read(tmp_path / "call.wav")
    assert rate == 16000 and len(frames) == pytest.approx(2 * 16000, abs=800)
    assert loud(frames[:, 1], 0.05, 0.95, rate=16000) > 0.9 and loud(frames[:, 1], 1.1, 2.0, rate=16000) == 0.0


def test_a_full_disk_stops_the_recording_not_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path / "call.wav", clock=clock)
    talk(recorder, clock, 2.0, tone(2.0))
    assert recorder._file is not None

    def full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder._file, "writeframesraw", full)
    talk(recorder, clock, 3.0, tone(3.0))  # nothing raised into the transport's pump
    assert recorder.closed and "No space left" in recorder.failed
    assert recorder.close(clock.now) == pytest.approx(recorder.duration_s)
    frames, _ = read(tmp_path / "call.wav")
    assert len(frames) == recorder._written  # what was written before stays a valid WAV


def test_the_transports_rate_holds_even_when_the_agent_speaks_first(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path / "call.wav", rate=16000, clock=clock)
    recorder.agent(tone(1.0, rate=24000), 24000, clock.now)  # a greeting from a 24 kHz voice, before any caller audio
    for _ in range(100):
        clock.now += 0.02
        recorder.caller(silence(0.02, 16000), 16000, clock.now)
    recorder.close(clock.now)
    frames, rate = read(tmp_path / "call.wav")
    assert rate == 16000 and len(frames) == pytest.approx(2 * 16000, abs=800)
    assert loud(frames[:, 1], 0.05, 0.95, rate=16000) > 0.9 and loud(frames[:, 1], 1.1, 2.0, rate=16000) == 0.0


def test_each_transport_is_recorded_at_the_rate_it_delivers_the_caller() -> None:
    from aybiza.recording.call import caller_rate

    assert (caller_rate("twilio"), caller_rate("webrtc"), caller_rate("sip")) == (8000, 16000, 0)


def test_a_call_without_audio_is_a_silent_recording_of_its_length(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path / "call.wav", rate=8000, clock=clock)
    clock.now += 1.5
    assert recorder.close(clock.now) == pytest.approx(1.5, abs=0.01)
    frames, rate = read(tmp_path / "call.wav")
    assert rate == 8000 and not frames.any()


def test_a_voice_at_another_rate_sent_in_chunks_is_recorded_as_one_stream_without_clicks(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path / "call.wav", rate=8000, clock=clock)
    voice = tone(1.0, rate=22050)  # piper's rate, in the 20 ms chunks a voice streams
    for offset in range(0, len(voice), 882):
        recorder.agent(voice[offset:offset + 882], 22050, clock.now)
    talk(recorder, clock, 1.5)
    recorder.close(clock.now)
    frames, _ = read(tmp_path / "call.wav")
    whole = np.frombuffer(resample(voice, 22050, 8000), dtype=np.int16).astype(np.int32)
    recorded = frames[: len(whole), 1].astype(np.int32)
    # the same samples as the voice resampled in one piece (chunks resampled alone were off by up to 2,758 at the edges)
    assert np.abs(recorded[40:-40] - whole[40:-40]).max() < 40
