"""A recording through the edge chain and the end-of-turn detector, offline: what a call would make of it.

:func:`listen` cuts PCM16 audio into 20 ms frames stamped with their time in
the recording, runs them through the call's own :class:`~aybiza.processors.vad.VADProcessor`
and replays the :class:`~aybiza.processors.endpoint.EndOfTurnStage` decision
on what the VAD forwarded (the same audio, the same :class:`~aybiza.processors.endpoint.EndOfTurnPolicy`),
so every time is a time in the recording. A turn end is dated when the call
would act on it: when the VAD's silence window closes, plus the model's
measured inference time. It also scores quality per second
(:class:`~aybiza.processors.quality.QualityMeter`). ``aybiza listen`` prints
it; ``benchmarks/endpoint.py`` measures turn ends with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from .pipeline import InputAudio, SpeechStarted, SpeechStopped
from .processors.endpoint import EndOfTurnPolicy, EndOfTurnProfile
from .processors.quality import QualityMeter, tier_for
from .processors.vad import VADProcessor
from .testing.kit import run_stage

__all__ = ["Listening", "TurnEnd", "listen", "speech_segments"]

FRAME_S = 0.02


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """Where the call would end the caller's turn (seconds into the recording)."""

    at: float
    speech_ended_at: float
    probability: float | None  # None: fixed silence, no model
    by: str  # "model", "silence" or "end of recording"


@dataclass
class Listening:
    """What the call made of a recording."""

    segments: list[tuple[float, float]] = field(default_factory=list)  # VAD speech segments
    turn_ends: list[TurnEnd] = field(default_factory=list)
    quality: list[tuple[float, float, str]] = field(default_factory=list)  # (second, score, tier)
    inference_ms: list[float] = field(default_factory=list)
    checks: list[tuple[float, float, float]] = field(default_factory=list)  # (speech end, probability, speech s)
    words: list[tuple[float, str, float]] = field(default_factory=list)  # (speech end, words so far, decode ms)


def _frames(pcm: bytes, rate: int) -> list[InputAudio]:
    step = int(rate * FRAME_S) * 2
    return [InputAudio(pcm[i : i + step], rate, i / 2 / rate) for i in range(0, len(pcm) - step + 1, step)]


def speech_segments(pcm: bytes, rate: int, *, stop_ms: int) -> list[InputAudio | SpeechStarted | SpeechStopped]:
    """The VAD stage's output for the recording (forwarded audio and speech events, in order)."""
    vad = VADProcessor(stop_ms=stop_ms)
    recorder = anyio.run(lambda: run_stage(vad, _frames(pcm, rate)))
    return [f for f in recorder.frames if isinstance(f, InputAudio | SpeechStarted | SpeechStopped)]


def listen(
    pcm: bytes,
    rate: int,
    *,
    profile: EndOfTurnProfile | None = None,
    score: Callable[[bytes, int], float] | None = None,
    silence_ms: int = 400,
    words: Callable[[bytes, int, float], str] | None = None,
    language: str = "en",
) -> Listening:
    """Run ``pcm`` (PCM16 mono at 8 or 16 kHz) through the VAD and the end-of-turn decision.

    With ``profile`` and ``score`` the turn ends as the endpoint stage decides;
    without, after ``silence_ms`` of silence (the VAD alone). With ``words`` (the
    turn's audio so far, its rate and where its speech ended in the recording →
    a recogniser's text of it) the decision also reads the words at each pause,
    taken as in hand at the decision, as a streaming recogniser's interims are
    (their decode time is reported in ``Listening.words``, not added).
    """
    result = Listening()
    meter = QualityMeter()
    step = int(rate * FRAME_S) * 2
    for index, offset in enumerate(range(0, len(pcm) - step + 1, step)):
        window = meter.feed(pcm[offset : offset + step], rate)
        if window is not None:
            result.quality.append((round((index + 1) * FRAME_S), round(window.score, 3), tier_for(window.score)))
    modelled = profile is not None and score is not None
    events = speech_segments(pcm, rate, stop_ms=profile.stop_ms if modelled and profile else silence_ms)
    policy = EndOfTurnPolicy(profile) if modelled and profile is not None else None
    clock = 0.0  # the end of the latest frame the VAD forwarded or held: "now" in the recording
    turn: list[bytes] = []
    turn_s = 0.0
    held: tuple[SpeechStopped, float] | None = None  # a stop the model did not believe, and its deadline
    started_at = 0.0
    for event in events:
        if isinstance(event, InputAudio):
            clock = max(clock, event.captured_at + event.duration)
            turn.append(event.pcm)
            turn_s += event.duration
            continue
        if isinstance(event, SpeechStarted):
            # The VAD confirms speech after a short voiced run: that is when the call learns of it.
            if held is not None:
                stopped, deadline = held
                held = None
                if deadline <= event.at + 0.06:
                    result.turn_ends.append(TurnEnd(deadline, stopped.at, None, "silence"))
                    result.segments.append((started_at, stopped.at))
                    turn, turn_s, started_at = [], 0.0, event.at
                continue  # the pause ended within the limit: the same turn goes on
            turn, turn_s, started_at = [], 0.0, event.at
            continue
        # SpeechStopped: the VAD's silence window just closed (at the latest forwarded frame's end).
        decided_at = max(clock, event.at)
        if policy is None or score is None:
            result.turn_ends.append(TurnEnd(decided_at, event.at, None, "silence"))
            result.segments.append((started_at, event.at))
            continue
        begun = time.perf_counter()
        probability = score(b"".join(turn), rate)
        seconds = time.perf_counter() - begun
        result.inference_ms.append(seconds * 1000)
        result.checks.append((event.at, probability, turn_s))
        decided_at += seconds
        text = ""
        if words is not None:
            begun = time.perf_counter()
            text = words(b"".join(turn), rate, event.at)
            decode_s = time.perf_counter() - begun
            result.words.append((event.at, text, decode_s * 1000))
        if policy.complete(probability, turn_s, text, language):
            result.turn_ends.append(TurnEnd(decided_at, event.at, probability, "model"))
            result.segments.append((started_at, event.at))
        else:
            held = (event, event.at + policy.max_silence_s)
    if held is not None:
        stopped, deadline = held
        result.turn_ends.append(TurnEnd(deadline, stopped.at, None, "silence"))
        result.segments.append((started_at, stopped.at))
    return result
