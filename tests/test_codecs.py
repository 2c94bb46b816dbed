"""μ-law bit-exactness, resampler delay and fidelity, framing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soxr

from aybiza.codecs import Framer, Resampler, frame_bytes, lin2ulaw, resample, ulaw2lin

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # reference implementation on 3.11, tests only


def test_ulaw_decode_matches_reference_for_all_256_codes() -> None:
    codes = bytes(range(256))
    assert ulaw2lin(codes) == audioop.ulaw2lin(codes, 2)


def test_ulaw_encode_matches_reference_for_all_65536_samples() -> None:
    samples = np.arange(-32768, 32768, dtype=np.int16).tobytes()
    assert lin2ulaw(samples) == audioop.lin2ulaw(samples, 2)


def test_ulaw_golden_bytes() -> None:
    assert lin2ulaw(b"\x00\x00" * 160) == b"\xff" * 160  # silence
    assert ulaw2lin(b"\xff\x7f") == b"\x00\x00\x00\x00"
    assert lin2ulaw(np.array([32767, -32768], dtype=np.int16).tobytes()) == b"\x80\x00"


def test_ulaw_round_trip_is_stable() -> None:
    codes = bytes(range(256))
    # 0x7F and 0xFF both decode to 0; every other code survives decode + encode
    assert lin2ulaw(ulaw2lin(codes)) == codes.replace(b"\x7f", b"\xff")


def _tone(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.asarray(6000 * np.sin(2 * np.pi * 440 * t) + 2000 * np.sin(2 * np.pi * 1500 * t), dtype=np.int16)


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (48000, 16000), (16000, 48000), (22050, 8000), (24000, 48000)])
def test_resampler_releases_each_20ms_chunk_within_5ms(src: int, dst: int) -> None:
    resampler = Resampler(src, dst)
    assert resampler.delay_ms <= 5.0
    chunk = src // 50
    x = _tone(src, 1.0)
    produced = 0
    for i in range(len(x) // chunk):
        out = resampler.process(x[i * chunk : (i + 1) * chunk].tobytes())
        produced += len(out) // 2
        fed_seconds = (i + 1) * chunk / src
        # everything but the lookahead is out after every chunk: no bursts
        assert fed_seconds - produced / dst <= 0.005 + 1 / dst


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (48000, 16000), (22050, 8000)])
def test_resampler_matches_one_shot_soxr(src: int, dst: int) -> None:
    x = _tone(src, 1.0)
    chunk = src // 50
    resampler = Resampler(src, dst)
    streamed = b"".join(resampler.process(x[i : i + chunk].tobytes()) for i in range(0, len(x), chunk))
    streamed += resampler.flush()
    ours = np.frombuffer(streamed, dtype=np.int16).astype(np.float64)
    reference = soxr.resample(x.astype(np.float32), src, dst, quality="HQ")
    assert abs(len(ours) - len(reference)) <= 1
    n = min(len(ours), len(reference))
    middle = slice(dst // 20, n - dst // 20)
    error = np.abs(ours[middle] - reference[middle]).max()
    assert error < 0.01 * 8000  # within 1 % of full scale of the signal


def test_one_shot_resample_keeps_duration() -> None:
    x = _tone(22050, 0.5).tobytes()
    assert len(resample(x, 22050, 8000)) // 2 == 4000
    assert resample(x, 8000, 8000) is x


def test_framer_cuts_20ms_frames_and_keeps_remainder() -> None:
    size = frame_bytes(8000, 20, 1)
    assert size == 160
    framer = Framer(size)
    assert framer.push(b"a" * 100) == []
    frames = framer.push(b"b" * 300)
    assert [len(f) for f in frames] == [160, 160]
    assert framer.flush(pad=0xFF) == b"b" * 80 + b"\xff" * 80
    assert framer.flush() == b""
