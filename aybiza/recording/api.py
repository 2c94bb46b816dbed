"""``GET /api/calls/{id}/recording``: a call's recording as a WAV, from the data directory or the bucket.

The route (in :mod:`aybiza.server`) checks the API token first; this module
only finds the recording the record links and streams it (in chunks, read in
a worker thread: a long call's file is never held in memory).
"""

from __future__ import annotations

import anyio
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from ..edge.calls import CallStore
from .storage import RecordingStore

__all__ = ["recording_response"]

MAX_CALL_ID_CHARS = 128


async def recording_response(store: CallStore, recordings: RecordingStore, call_id: str) -> Response:
    """The WAV of ``call_id``; 404 when the call or its recording is unknown, 502 when storage fails."""
    record = await store.get(call_id) if len(call_id) <= MAX_CALL_ID_CHARS else None
    if record is None:
        return PlainTextResponse("404 Not Found: no such call\n", status_code=404)
    if record.recording is None:
        return PlainTextResponse("404 Not Found: this call was not recorded (or is still in progress)\n",
                                 status_code=404)
    opened = await anyio.to_thread.run_sync(recordings.open_stream, record.recording)
    if opened is None:
        return PlainTextResponse("502 Bad Gateway: the recording could not be read from its storage\n",
                                 status_code=502)
    chunks, size = opened
    name = record.recording.key.rsplit("/", 1)[-1]
    return StreamingResponse(iterate_in_threadpool(chunks), media_type="audio/wav",
                             headers={"Content-Length": str(size), "Cache-Control": "no-store",
                                      "Content-Disposition": f'attachment; filename="{name}"'})
