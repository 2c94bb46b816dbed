"""Collecting digits: a terminator, a full count, words instead of keys, and a timeout that restarts at each key."""

from __future__ import annotations

import anyio
import pytest

from aybiza.tools.digits import DigitCollection

pytestmark = pytest.mark.anyio


async def test_keys_until_the_terminator() -> None:
    collection = DigitCollection(max_digits=8)
    for key in "1234#5":
        collection.key(key)
    assert await collection.wait(0.1)
    assert (collection.digits, collection.terminated) == ("1234", True)


async def test_a_full_count_ends_without_a_terminator() -> None:
    collection = DigitCollection(max_digits=4, terminator="")
    for key in "98765":
        collection.key(key)
    assert collection.done and collection.digits == "9876"


async def test_words_end_the_collection() -> None:
    collection = DigitCollection(max_digits=4)
    collection.speech("I don't have it with me")
    assert await collection.wait(0.1) and collection.spoken == "I don't have it with me"


async def test_the_timeout_restarts_at_each_key() -> None:
    collection = DigitCollection(max_digits=4)

    async def slow_typist() -> None:
        for key in "12":
            await anyio.sleep(0.15)
            collection.key(key)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_typist)
        done = await collection.wait(0.25)  # 0.3 s in all: longer than one timeout, never between two keys
    assert not done and collection.digits == "12" and collection.got_something
    assert not await DigitCollection(max_digits=4).wait(0.05)
