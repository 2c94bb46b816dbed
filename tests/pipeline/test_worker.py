"""The worker keeps I/O off the hop; flush drops queued items and cancels the one in progress."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from aybiza.pipeline import Worker


@pytest.mark.anyio
async def test_items_are_handled_in_order_in_the_background() -> None:
    handled: list[int] = []

    async def handle(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        handled.append(item)

    worker: Worker[int] = Worker(handle, maxsize=8)
    async with anyio.create_task_group() as tg:
        worker.start(tg)
        for item in range(5):
            await worker.put(item)
        await worker.close()
    assert handled == [0, 1, 2, 3, 4]


@pytest.mark.anyio
async def test_flush_cancels_work_in_progress_and_drops_the_queue() -> None:
    started: list[str] = []
    finished: list[str] = []
    release = anyio.Event()

    async def handle(item: str) -> None:
        started.append(item)
        await release.wait()
        finished.append(item)

    worker: Worker[str] = Worker(handle)
    async with anyio.create_task_group() as tg:
        worker.start(tg)
        for item in ("a", "b", "c"):
            await worker.put(item)
        await anyio.wait_all_tasks_blocked()
        assert started == ["a"] and worker.pending == 2
        assert worker.flush() == 2
        await anyio.wait_all_tasks_blocked()
        await worker.put("d")
        release.set()
        await worker.close()
    assert started == ["a", "d"]
    assert finished == ["d"]


@pytest.mark.anyio
async def test_an_item_already_handed_to_the_task_is_dropped_by_flush() -> None:
    handled: list[int] = []

    async def handle(item: int) -> None:
        handled.append(item)

    worker: Worker[int] = Worker(handle)
    async with anyio.create_task_group() as tg:
        worker.start(tg)
        await anyio.wait_all_tasks_blocked()  # the task waits in receive
        worker.put_nowait(1)  # handed straight to the waiting task...
        worker.flush()  # ...and flushed before it ran
        await worker.close()
    assert handled == []


@pytest.mark.anyio
async def test_a_full_queue_applies_backpressure() -> None:
    gate = anyio.Event()

    async def handle(item: int) -> None:
        await gate.wait()

    worker: Worker[int] = Worker(handle, maxsize=1)
    async with anyio.create_task_group() as tg:
        worker.start(tg)
        await worker.put(1)
        await anyio.wait_all_tasks_blocked()
        await worker.put(2)
        with pytest.raises(anyio.WouldBlock):
            worker.put_nowait(3)
        gate.set()
        await worker.close()
