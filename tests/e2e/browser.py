"""Headless Chromium for end-to-end tests: Debian's ``/usr/bin/chromium`` driven by Playwright.

No browser is downloaded: Playwright's bundled driver launches the system
Chromium with a fake microphone that plays a WAV file (looped by Chromium).
"""

from __future__ import annotations

import shutil
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["CHROMIUM", "chromium_missing", "chromium_page", "speech_wav"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAV_RATE = 48000


def chromium_missing() -> str | None:
    """Why a browser test cannot run here, or ``None`` if it can."""
    if not Path(CHROMIUM).exists():
        return "Debian chromium is not installed (apt-get install chromium, or AYBIZA_TEST_SYSTEM=1 make install)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright; no browser download needed)"
    return None


def speech_wav(path: Path, text: str, *, lead_s: float, tail_s: float) -> Path:
    """Write ``text`` spoken by espeak-ng between ``lead_s`` and ``tail_s`` of silence (48 kHz mono PCM16)."""
    from aybiza.codecs import resample
    from aybiza.processors.tts.espeak import EspeakSynthesizer

    speech = bytearray()
    for pcm, rate in EspeakSynthesizer().synthesize(text, "en"):
        speech += resample(pcm, rate, WAV_RATE)
    samples = np.frombuffer(bytes(speech), dtype=np.int16).astype(np.float32)
    peak = float(np.abs(samples).max()) or 1.0
    speech = bytearray((samples * (0.5 * 32767 / peak)).astype(np.int16).tobytes())  # -6 dBFS peak
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WAV_RATE)
        out.writeframes(bytes(int(lead_s * WAV_RATE) * 2) + bytes(speech) + bytes(int(tail_s * WAV_RATE) * 2))
    return path


@contextmanager
def chromium_page(profile_dir: Path, microphone_wav: Path | None = None) -> Iterator[object]:
    """A page in a fresh headless Chromium whose microphone plays ``microphone_wav``.

    Yields a ``playwright.sync_api.Page`` (typed ``object`` so this module imports without Playwright).
    """
    from playwright.sync_api import sync_playwright

    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if microphone_wav is not None:
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={microphone_wav}"]
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir), executable_path=CHROMIUM, headless=True, args=args,
            viewport={"width": 900, "height": 900},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
