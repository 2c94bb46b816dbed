"""Frames move by direct await; a failing call ends alone; processors start and stop once."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from aybiza.pipeline import DTMF, CallContext, Frame, InputAudio, Pipeline, Processor


class Recorder(Processor):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.started = 0
        self.stopped = 0

    async def start(self, ctx: CallContext, tg: Any) -> None:
        await super().start(ctx, tg)
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)
        await self.push(frame)


class Doubler(Processor):
    async def process(self, frame: Frame) -> None:
        await self.push(frame)
        await self.push(frame)


class Exploding(Processor):
    async def process(self, frame: Frame) -> None:
        if isinstance(frame, DTMF):
            raise ValueError("boom")
        await self.push(frame)


def test_a_pipeline_needs_a_processor() -> None:
    with pytest.raises(ValueError):
        Pipeline([])


@pytest.mark.anyio
async def test_frames_reach_the_end_in_order_without_tasks_or_queues() -> None:
    first, last = Recorder(), Recorder()
    pipeline = Pipeline([first, Doubler(), last])
    frames = [InputAudio(bytes(320), 8000, time.monotonic()) for _ in range(3)]

    async def feed(pipe: Pipeline, tg: Any) -> None:
        for frame in frames:
            await pipe.push(frame)
        # delivered synchronously: nothing was queued for later
        assert len(last.frames) == 6

    await pipeline.run(CallContext(call_id="c1"), feed)
    assert first.frames == frames
    assert last.frames == [f for f in frames for _ in range(2)]
    assert (first.started, first.stopped, last.started, last.stopped) == (1, 1, 1, 1)


@pytest.mark.anyio
async def test_an_exception_ends_its_own_call_and_stops_every_processor() -> None:
    recorder = Recorder()
    pipeline = Pipeline([Exploding(), recorder])

    async def feed(pipe: Pipeline, tg: Any) -> None:
        await pipe.push(DTMF("1"))

    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="boom")):
        await pipeline.run(CallContext(call_id="bad"), feed)
    assert recorder.stopped == 1


@pytest.mark.anyio
async def test_a_failing_call_does_not_touch_a_concurrent_one() -> None:
    good = Recorder()
    outcomes: dict[str, str] = {}

    async def good_call() -> None:
        async def feed(pipe: Pipeline, tg: Any) -> None:
            for _ in range(20):
                await pipe.push(InputAudio(bytes(320), 8000, 0.0))
                await anyio.sleep(0.005)

        await Pipeline([good]).run(CallContext(call_id="good"), feed)
        outcomes["good"] = "completed"

    async def bad_call() -> None:
        async def feed(pipe: Pipeline, tg: Any) -> None:
            await anyio.sleep(0.02)
            await pipe.push(DTMF("9"))

        try:
            await Pipeline([Exploding(), Recorder()]).run(CallContext(call_id="bad"), feed)
        except* ValueError as group:
            outcomes["bad"] = str(group.exceptions[0])

    async with anyio.create_task_group() as tg:
        tg.start_soon(good_call)
        tg.start_soon(bad_call)
    assert outcomes == {"good": "completed", "bad": "boom"}
    assert len(good.frames) == 20
