"""smart-turn v3: a semantic end-of-turn model (Whisper-tiny encoder, 8 MB ONNX) run with onnxruntime.

The model file ships inside the ``pipecat-ai`` wheel
(``pipecat/audio/turn/smart_turn/data/``, BSD-2) and is checked against its
pinned SHA-256 before it loads; nothing of pipecat is imported (install the
wheel with ``--no-deps``: only the file is used). The model reads the last
8 s of a turn at 16 kHz as Whisper log-mel features (80 bands, 10 ms hop,
computed here with numpy) and returns the probability that the speaker has
finished. On a phone call the audio is 8 kHz μ-law: it is upsampled first,
and the thresholds that turn a probability into a decision are calibrated on
telephone-band human speech (:mod:`aybiza.processors.endpoint`,
``benchmarks/endpoint.py``). One inference costs ~46 ms of one core; the
endpoint stage runs it in a worker thread, one at a time per process, once
per pause. Batching concurrent calls' inferences does not pay on CPU
(~67 ms per item in batches of 2-8 against ~48 ms alone, measured), so each
runs alone.
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..codecs import resample_samples
from .packaged import PackagedModel, verified_dir

__all__ = ["SMART_TURN_V3", "SmartTurnModel", "log_mel_features"]

# Pinned to the file in the pipecat-ai 1.14.0 wheel (smart-turn v3.2, CPU export).
SMART_TURN_V3 = PackagedModel(
    name="smart-turn v3.2 CPU ONNX (pipecat-ai/smart-turn)",
    package="pipecat",
    subdir="audio/turn/smart_turn/data",
    files=(("smart-turn-v3.2-cpu.onnx", "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"),),
)

MODEL_RATE = 16000
WINDOW_S = 8
_N_FFT = 400
_HOP = 160
_N_MELS = 80


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear to 1 kHz, logarithmic above (Whisper's filterbank uses it)."""
    mel = 3.0 * hz / 200.0
    above = hz >= 1000.0
    mel[above] = 15.0 + np.log(hz[above] / 1000.0) * 27.0 / np.log(6.4)
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = 200.0 * mel / 3.0
    above = mel >= 15.0
    hz[above] = 1000.0 * np.exp((mel[above] - 15.0) * np.log(6.4) / 27.0)
    return hz


@cache
def _filterbank() -> npt.NDArray[np.float64]:
    """(201 FFT bins, 80 mel bands) triangular filters, area-normalised (Slaney)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([MODEL_RATE / 2]))[0],
                                   _N_MELS + 2))
    bins = np.linspace(0, MODEL_RATE / 2, _N_FFT // 2 + 1)
    rising = (bins[:, None] - edges[None, :-2]) / np.diff(edges)[None, :-1]
    falling = (edges[None, 2:] - bins[:, None]) / np.diff(edges)[None, 1:]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.asarray(weights * (2.0 / (edges[2:] - edges[:-2]))[None, :], dtype=np.float64)


def log_mel_features(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Whisper's log-mel features of exactly ``WINDOW_S`` seconds of 16 kHz audio: shape (80, 800).

    The waveform is normalised to zero mean and unit variance first (as the
    model was trained), then: periodic Hann window of 400, hop 160, centred
    with reflection, power spectrum, mel, log10, floor at 8 below the peak,
    scaled by ``(x + 4) / 4``.
    """
    samples = WINDOW_S * MODEL_RATE
    x = np.zeros(samples, dtype=np.float32)
    x[: min(samples, audio.size)] = audio[:samples]
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), _N_FFT // 2, mode="reflect")
    window = np.hanning(_N_FFT + 1)[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    mel = np.log10(np.maximum(power @ _filterbank(), 1e-10)).T[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    features: npt.NDArray[np.float32] = ((mel + 4.0) / 4.0).astype(np.float32)
    return features


class SmartTurnModel:
    """The smart-turn ONNX session (loaded once, on first use) and its input preparation.

    ``probability(pcm16, rate)`` is blocking: call it from a thread. Inferences
    are serialised by a lock (one session, one intra-op thread).
    """

    __slots__ = ("_path", "_session", "_lock")

    def __init__(self, model_path: Path | None = None) -> None:
        self._path = model_path
        self._session: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Verify and load the model (blocking, once)."""
        with self._lock:
            self._load()

    def _load(self) -> Any:
        if self._session is None:
            import onnxruntime

            path = self._path or verified_dir(SMART_TURN_V3) / SMART_TURN_V3.files[0][0]
            options = onnxruntime.SessionOptions()
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            self._session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                                         providers=["CPUExecutionProvider"])
        return self._session

    @staticmethod
    def prepare(pcm16: bytes, sample_rate: int) -> npt.NDArray[np.float32]:
        """The model's input for a turn's audio: its last 8 s at 16 kHz, zero-padded at the start."""
        samples = resample_samples(pcm16, sample_rate, MODEL_RATE).astype(np.float32) / 32768.0
        window = WINDOW_S * MODEL_RATE
        if samples.size >= window:
            return samples[-window:]
        return np.concatenate((np.zeros(window - samples.size, dtype=np.float32), samples))

    def probability(self, pcm16: bytes, sample_rate: int) -> float:
        """Probability in [0, 1] that the turn in ``pcm16`` is complete (blocking)."""
        features = log_mel_features(self.prepare(pcm16, sample_rate))[None, :, :]
        with self._lock:
            session = self._load()
            outputs = session.run(None, {"input_features": features})
        return float(np.asarray(outputs[0]).reshape(-1)[0])

    def calibrated_probability(self, pcm16: bytes, sample_rate: int) -> float:
        """:meth:`probability` combined with the end's prosody for telephone audio (see ``endpoint.calibrated``)."""
        from .endpoint import calibrated, end_level_db

        return calibrated(self.probability(pcm16, sample_rate), end_level_db(pcm16, sample_rate))
