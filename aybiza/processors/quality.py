"""Non-intrusive audio quality: a score in [0, 1] per window and per call, and the call's tier.

No clean reference exists on a live call, so the score is estimated from
what the audio itself shows, measured cheaply on every frame and combined
once per window (1 s of audio by default):

* **SNR**: speech level (frames clearly above the floor) against the noise
  floor (minimum statistics over the last few seconds), bounded by the
  window's own contrast between loud and quiet speech frames (noise that
  comes with the speech fills the dips between syllables, and the floor
  measured in the pauses never saw it);
* **clipping**: share of speech samples at full scale;
* **dropouts**: frames of digital silence in the middle of live audio
  (packet loss, a broken line);
* **bandwidth**: where the speech spectrum's energy ends (a muffled line);
* **level**: very quiet speech (far from the microphone).

Each gives a factor in (0, 1]; the window score is their product, and the
call score is the mean over windows that held speech. The call's tier
follows the design: score > 0.8 ``high``, > 0.5 ``medium``, else ``low``.
Low quality never fails a call: it is a hint (ask the caller to move
somewhere quieter, pick a sturdier model).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from anyio.abc import TaskGroup

from ..pipeline.context import CallContext
from ..pipeline.frames import Frame, InputAudio, QualityReport
from ..pipeline.processor import Processor
from .levels import mean_square

__all__ = ["QualityMeter", "QualityProcessor", "WindowQuality", "tier_for"]

_FULL_SCALE_DB = 20 * math.log10(32768)
_CLIP_LEVEL = 32000  # μ-law's largest code decodes to 32124: anything this high is at the rail
_SILENT_DB = 12.0  # below this a frame is digital (or near-digital) silence
_MAX_DROPOUT_FRAMES = 4  # a longer hole of digital silence is a pause or muting, not packet loss
_FFT_EVERY = 3  # spectrum of every third speech frame is enough for a bandwidth estimate
_CONTRAST_SLOPE = 4.0
_CONTRAST_OFFSET_DB = 24.0
_CONTRAST_FRAMES = 25  # speech frames a window needs for its contrast to mean anything


def tier_for(score: float) -> str:
    """The design's tiers: > 0.8 high, > 0.5 medium, else low."""
    if score > 0.8:
        return "high"
    if score > 0.5:
        return "medium"
    return "low"


def _logistic(x: float, midpoint: float, width: float) -> float:
    return 1.0 / (1.0 + math.exp(-(x - midpoint) / width))


def _score(snr_db: float, clipping: float, dropouts: float, bandwidth_hz: float, speech_dbfs: float | None) -> float:
    """Combine the measurements: one factor in (0, 1] per impairment, multiplied.

    Shapes were set so that each impairment costs about what it costs in
    narrowband PESQ (benchmarks/accuracy/quality_accuracy.py): 30 dB SNR ~0.95,
    20 dB ~0.85, 10 dB ~0.6; 2 % clipped samples halve the score; 10 % lost
    frames take 40 %; a 1 kHz line loses ~28 %; speech under -52 dBFS half. The contrast bound
    on the SNR (``_contrast_snr``) was set on human speech (benchmarks/accuracy/quality_human.py).
    """
    noise = _logistic(snr_db, 14.0, 6.0) / _logistic(50.0, 14.0, 6.0)
    clipped = 1.0 - min(0.9, 0.5 * math.pow(clipping / 0.02, 0.7))
    lost = 1.0 - min(0.9, 4.0 * dropouts)
    muffled = 0.65 + 0.35 * min(1.0, max(0.0, (bandwidth_hz - 500.0) / 2500.0))
    quiet = 1.0 if speech_dbfs is None else _logistic(speech_dbfs, -52.0, 3.0)
    return noise * clipped * lost * muffled * quiet


@dataclass(frozen=True, slots=True)
class WindowQuality:
    """One window's measurements and score."""

    score: float
    speech: bool
    snr_db: float
    speech_dbfs: float
    clipping: float
    dropouts: float
    bandwidth_hz: float

    def details(self) -> dict[str, float]:
        """The measurements as a flat dict (for QualityReport.details)."""
        return {
            "snr_db": round(self.snr_db, 1),
            "speech_dbfs": round(self.speech_dbfs, 1),
            "clipping": round(self.clipping, 4),
            "dropouts": round(self.dropouts, 4),
            "bandwidth_hz": round(self.bandwidth_hz),
            "speech": 1.0 if self.speech else 0.0,
        }


class QualityMeter:
    """The measuring core, without I/O: ``feed`` PCM16 frames, get a WindowQuality per window."""

    __slots__ = (
        "_window_s",
        "_filled_s",
        "_levels",
        "_powers",
        "_clipped",
        "_speech_samples",
        "_dropouts",
        "_live_frames",
        "_previous_live",
        "_gap_frames",
        "_spectrum",
        "_spectrum_rate",
        "_fft_countdown",
        "_floor_blocks",
        "_block_min",
        "_block_filled_s",
        "_block_silent_s",
        "_floor_db",
        "_scores",
        "_last_snr",
        "_active_levels",
    )

    def __init__(self, window_s: float = 1.0, floor_window_s: float = 3.0) -> None:
        self._window_s = window_s
        self._floor_blocks: deque[float] = deque(maxlen=max(1, round(floor_window_s / 0.25)))
        self._block_min = math.inf
        self._block_filled_s = 0.0
        self._block_silent_s = 0.0
        self._floor_db = math.inf
        self._scores: list[float] = []
        self._last_snr = 50.0
        self._active_levels: deque[float] = deque(maxlen=75)  # speech frame levels, the last 1.5 s of them
        self._spectrum: np.ndarray | None = None
        self._spectrum_rate = 0
        self._reset_window()

    def _reset_window(self) -> None:
        self._filled_s = 0.0
        self._levels: list[float] = []
        self._powers: list[float] = []
        self._clipped = 0
        self._speech_samples = 0
        self._dropouts = 0
        self._live_frames = 0
        self._previous_live = False
        self._gap_frames = 0
        self._fft_countdown = 0
        if self._spectrum is not None:
            # The bandwidth needs more phonemes than one window holds: keep a decaying history.
            self._spectrum *= 0.7

    @property
    def call_score(self) -> float:
        """Mean score of the windows that held speech so far (1.0 before any)."""
        return sum(self._scores) / len(self._scores) if self._scores else 1.0

    @property
    def noise_floor_db(self) -> float:
        """Current noise floor, dB re one PCM16 step: the mean of the lowest third of recent block minima.

        Averaging the low minima (not taking the lowest) follows noise that
        swells and fades (traffic) instead of sticking to its quietest moment,
        while blocks filled by speech stay out.
        """
        return min(self._floor_db, self._block_min + 3.0) if self._floor_blocks else self._block_min

    def feed(self, pcm: bytes, sample_rate: int) -> WindowQuality | None:
        """Measure one frame; returns the window's quality when this frame completes a window."""
        if not pcm:
            return None
        power = mean_square(pcm)  # shared with the VAD's gate, which measures the same frame next
        count = len(pcm) // 2
        level = 10.0 * math.log10(power + 1.0)
        duration = count / sample_rate
        self._track_floor(level, duration)
        if level < _SILENT_DB:
            if self._previous_live or self._gap_frames:
                self._gap_frames += 1
            self._previous_live = False
        else:
            if 0 < self._gap_frames <= _MAX_DROPOUT_FRAMES:
                # A short hole of digital silence inside live audio: lost packets, not a pause.
                self._dropouts += self._gap_frames
            self._gap_frames = 0
            self._live_frames += 1
            self._previous_live = True
            self._levels.append(level)
            self._powers.append(power)
            if level > self.noise_floor_db + 6.0:
                floats = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
                self._active_levels.append(level)
                self._speech_samples += count
                self._clipped += int(np.count_nonzero(np.abs(floats) >= _CLIP_LEVEL))
                self._fft_countdown -= 1
                if self._fft_countdown <= 0:
                    self._fft_countdown = _FFT_EVERY
                    self._add_spectrum(floats, sample_rate)
        self._filled_s += duration
        if self._filled_s < self._window_s - 1e-9:
            return None
        window = self._close_window()
        self._reset_window()
        return window

    def _track_floor(self, level: float, duration: float) -> None:
        """Minimum statistics over blocks of 0.25 s.

        A block that is mostly digital silence is a quiet line (floor 0 dB); a
        few silent frames among live ones are lost packets and do not count.
        """
        if level >= _SILENT_DB:
            if level < self._block_min:
                self._block_min = level
        else:
            self._block_silent_s += duration
        self._block_filled_s += duration
        if self._block_filled_s >= 0.25 - 1e-9:
            if self._block_silent_s * 2 >= self._block_filled_s:
                self._floor_blocks.append(0.0)
            elif self._block_min < math.inf:
                self._floor_blocks.append(self._block_min)
            if self._floor_blocks:
                low = sorted(self._floor_blocks)[: max(1, len(self._floor_blocks) // 3)]
                self._floor_db = sum(low) / len(low)
            self._block_min = math.inf
            self._block_filled_s = 0.0
            self._block_silent_s = 0.0

    def _add_spectrum(self, floats: np.ndarray, sample_rate: int) -> None:
        size = floats.size
        if self._spectrum is None or self._spectrum_rate != sample_rate or self._spectrum.size != size // 2 + 1:
            self._spectrum = np.zeros(size // 2 + 1, dtype=np.float64)
            self._spectrum_rate = sample_rate
        spectrum = np.fft.rfft(floats)
        self._spectrum += spectrum.real * spectrum.real + spectrum.imag * spectrum.imag

    def _bandwidth_hz(self) -> float:
        """Frequency under which 99 % of the speech energy lies (nyquist when unknown)."""
        nyquist = self._spectrum_rate / 2 if self._spectrum_rate else 4000.0
        spectrum = self._spectrum
        if spectrum is None:
            return nyquist
        cumulative = np.cumsum(spectrum)
        if cumulative[-1] <= 0.0:
            return nyquist
        index = int(np.searchsorted(cumulative, 0.99 * cumulative[-1]))
        return nyquist * index / (spectrum.size - 1)

    def _contrast_snr(self) -> float:
        """SNR bound from the window's own contrast: speech dips between syllables, noise fills the dips.

        The floor is the quietest audio of the last seconds; noise that comes
        with the speech (a truck passing, a crowd at the caller's end) is not in
        it. Clean speech spans 25 dB and more between its loud and quiet 20 ms
        frames; at 0 dB SNR the dips are full of noise and the span shrinks to
        a few dB. The bound is 4 x (span - 6 dB), the span between the 90th and
        10th percentile levels of the last 1.5 s of speech frames: a 14 dB span
        (flat synthetic speech) still allows 32 dB. It needs 0.5 s of speech
        frames, or 0.25 s of a start flat enough that no clean speech begins so.
        """
        active = self._active_levels
        if len(active) < _CONTRAST_FRAMES // 2:
            return 50.0
        low, high = np.percentile(np.fromiter(active, dtype=np.float64), (10.0, 90.0))
        if len(active) < _CONTRAST_FRAMES and high - low >= 10.0:
            return 50.0  # the first syllables of clean speech can be flat too: only a very flat start counts
        return max(0.0, float(high - low) * _CONTRAST_SLOPE - _CONTRAST_OFFSET_DB)

    def _close_window(self) -> WindowQuality:
        floor = self.noise_floor_db
        if floor == math.inf:
            floor = 0.0
        floor_power = 10 ** (floor / 10)
        speech_powers = [p for p, lv in zip(self._powers, self._levels, strict=True) if lv > floor + 6.0]
        speech = len(speech_powers) >= 5
        if speech:
            speech_power = sum(speech_powers) / len(speech_powers)
            # The speech frames carry the noise too: subtract it before the ratio.
            snr = 10 * math.log10(max(speech_power - floor_power, 1e-3) / max(floor_power, 1.0))
            snr = max(0.0, min(50.0, snr, self._contrast_snr()))
            self._last_snr = snr
            speech_dbfs = 10 * math.log10(speech_power + 1.0) - _FULL_SCALE_DB
        else:
            snr = self._last_snr
            speech_dbfs = -90.0
        clipping = self._clipped / self._speech_samples if self._speech_samples else 0.0
        attempts = self._live_frames + self._dropouts
        dropouts = self._dropouts / attempts if attempts else 0.0
        bandwidth = self._bandwidth_hz()
        score = _score(snr, clipping, dropouts, bandwidth, speech_dbfs if speech else None)
        score = max(0.0, min(1.0, score))
        if speech:
            self._scores.append(score)
        return WindowQuality(score, speech, snr, speech_dbfs, clipping, dropouts, bandwidth)


class QualityProcessor(Processor):
    """Scores caller audio per window, pushes QualityReport frames and keeps ``ctx.quality_tier``."""

    consumes = frozenset({InputAudio})
    produces = frozenset({QualityReport})

    __slots__ = ("meter", "_window_s")

    name = "quality"

    def __init__(self, *, window_s: float = 1.0) -> None:
        super().__init__()
        self._window_s = window_s
        self.meter = QualityMeter(window_s)

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """A fresh meter per call."""
        await super().start(ctx, tg)
        self.meter = QualityMeter(self._window_s)

    async def process(self, frame: Frame) -> None:
        """Forward the frame first (audio must not wait), then measure it."""
        await self.push(frame)
        if type(frame) is not InputAudio:
            return
        window = self.meter.feed(frame.pcm, frame.sample_rate)
        if window is None:
            return
        score = self.meter.call_score
        tier = tier_for(score)
        ctx = self.ctx
        if ctx is not None:
            ctx.quality_score = score
            if ctx.quality_tier != tier:
                ctx.quality_tier = tier
                ctx.log.info("audio quality tier %s (score %.2f)", tier, score)
        await self.push(QualityReport(score=round(window.score, 3), tier=tier, details=window.details()))
