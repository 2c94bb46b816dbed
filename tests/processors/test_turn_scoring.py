"""A pause whose silence limit passed while its inference waited for the worker is not scored."""

from __future__ import annotations

import time

import anyio
import pytest

from aybiza.pipeline import InputAudio, SpeechStarted, SpeechStopped
from aybiza.processors.endpoint import EndOfTurnProfile, EndOfTurnStage
from aybiza.processors.turn_scoring import score_unless_decided
from aybiza.testing.kit import run_stage

_PROFILE = EndOfTurnProfile("test", stop_ms=100, threshold=0.6, max_silence_ms=300, short_speech_ms=0)


def test_a_job_taken_before_the_deadline_is_scored_and_one_taken_after_is_not() -> None:
    calls: list[int] = []

    def score(pcm: bytes, rate: int) -> float:
        calls.append(rate)
        return 0.9

    assert score_unless_decided(score, b"\0\0", 8000, time.monotonic() + 1) == 0.9
    assert score_unless_decided(score, b"\0\0", 8000, time.monotonic() - 0.01) is None
    assert calls == [8000]


async def _stage_run(hold_worker_s: float) -> tuple[list[type], int, float]:
    """A confident scorer behind a one-job worker that another call holds for ``hold_worker_s``."""
    scored = 0

    def score(pcm: bytes, rate: int) -> float:
        nonlocal scored
        scored += 1
        return 0.9

    limiter = anyio.CapacityLimiter(1)
    stage = EndOfTurnStage(score, _PROFILE, limiter=limiter)
    now = anyio.current_time()
    stopped = SpeechStopped(now + 0.4)
    frames = [SpeechStarted(now), *[InputAudio(bytes(320), 8000, now + i * 0.02, True) for i in range(20)], stopped]
    holder = object()  # another call's inference
    async with anyio.create_task_group() as tg:
        await limiter.acquire_on_behalf_of(holder)

        async def free_later() -> None:
            await anyio.sleep(hold_worker_s)
            limiter.release_on_behalf_of(holder)

        tg.start_soon(free_later)
        recorder = await run_stage(stage, frames, settle_s=hold_worker_s + 0.3)
    events = [type(f) for f in recorder.frames if not isinstance(f, InputAudio)]
    released = next(t for f, t in zip(recorder.frames, recorder.times, strict=True) if f is stopped)
    return events, scored, released - now  # the frames are fed at once, at `now`


@pytest.mark.anyio
async def test_a_pause_the_silence_limit_decided_while_waiting_for_the_worker_is_not_scored() -> None:
    events, scored, released_after = await _stage_run(hold_worker_s=0.9)
    assert events == [SpeechStarted, SpeechStopped]
    assert scored == 0, "the model ran for a pause the silence had already ended"
    assert released_after == pytest.approx(0.9, abs=0.15)  # released as soon as the worker was free, not later


@pytest.mark.anyio
async def test_a_pause_the_worker_reaches_in_time_is_scored() -> None:
    events, scored, released_after = await _stage_run(hold_worker_s=0.05)
    assert events == [SpeechStarted, SpeechStopped] and scored == 1
    assert released_after < 0.25  # the confident model ended the turn before the limit
