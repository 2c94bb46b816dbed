"""A process serving calls through a CallStore, for the crash and hand-off tests.

``python _call_process.py serve DATA_DIR [REDIS_URL]``: finishes two calls
(``done-1``, ``done-2``), starts ``open-1`` with two turns, prints ``READY``
and waits to be killed.

``python _call_process.py resume DATA_DIR REDIS_URL CALL_ID``: takes the
live call over, prints its conversation as JSON, answers one more turn
using it and ends the call; prints the final record as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from aybiza.edge.calls import open_call_store
from aybiza.edge.records import CallRecord, TurnRecord
from aybiza.pipeline import Usage

TURNS = [
    ("Hi, I'd like to book a cleaning.", "Sure. Which day suits you?"),
    ("Tuesday morning, please.", "Tuesday at ten is free. Shall I book it?"),
]


async def serve(data_dir: Path, redis_url: str | None) -> None:
    store = await open_call_store(data_dir, redis_url=redis_url, lease_s=0.6)
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.keepalive)
        for call_id in ("done-1", "done-2"):
            await store.start(CallRecord(call_id=call_id, caller="+15550001"))
            for number, (user, agent) in enumerate(TURNS, 1):
                await store.update(call_id, turn=TurnRecord(turn_id=number, user=user, agent=agent))
            await store.end(call_id, outcome="hangup", usage=Usage(stt_seconds={"nova-3": 5.0}))
        await store.start(CallRecord(call_id="open-1", caller="+15550002"))
        for number, (user, agent) in enumerate(TURNS, 1):
            await store.update("open-1", turn=TurnRecord(turn_id=number, user=user, agent=agent),
                               usage=Usage(stt_seconds={"nova-3": float(number)}))
        print("READY", flush=True)
        await anyio.sleep_forever()


async def resume(data_dir: Path, redis_url: str, call_id: str) -> None:
    store = await open_call_store(data_dir, redis_url=redis_url, lease_s=0.6)
    try:
        record = await store.resume(call_id)
        if record is None:
            print(json.dumps({"error": f"{call_id} is not live"}), flush=True)
            return
        context = record.context()
        print(json.dumps(context), flush=True)
        # "Continue the conversation": the answer depends on what was said in the other process.
        asked = next(m["text"] for m in reversed(context) if m["role"] == "assistant")
        turn = TurnRecord(turn_id=len(record.turns) + 1, user="Yes, please.",
                          agent=f"Done. You said yes to: {asked}")
        ended = await store.end(call_id, outcome="hangup", turn=turn)
        print(ended.to_json(), flush=True)
    finally:
        await store.aclose()


def main() -> None:
    mode, data_dir = sys.argv[1], Path(sys.argv[2])
    if mode == "serve":
        anyio.run(serve, data_dir, sys.argv[3] if len(sys.argv) > 3 else None)
    elif mode == "resume":
        anyio.run(resume, data_dir, sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
