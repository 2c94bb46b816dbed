"""``GET /api/calls/{id}/recording``: a call's recording as a WAV, from the data directory or the bucket.

The route (in :mod:`aybiza.server`) checks the API token first; this module
only finds the recording the record links and serves it, with byte ranges
(an audio player seeks with them; the operator console's does): a file by
Starlette's ``FileResponse``, an object by S3's own ``Range`` on
``GetObject``, streamed in chunks read in a worker thread — a long call's
recording is never held in memory.
"""

from __future__ import annotations

import re

import anyio
from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse

from ..edge.calls import CallStore
from .storage import RecordingStore

__all__ = ["recording_response"]

MAX_CALL_ID_CHARS = 128
_ONE_RANGE = re.compile(r"^bytes=\d{0,15}-\d{0,15}$")  # one range (what players send); others get the whole file


async def recording_response(request: Request, store: CallStore, recordings: RecordingStore) -> Response:
    """The WAV of the call in the path; 404 when the call or its recording is unknown, 502 when storage fails."""
    call_id = request.path_params["call_id"]
    record = await store.get(call_id) if len(call_id) <= MAX_CALL_ID_CHARS else None
    if record is None:
        return PlainTextResponse("404 Not Found: no such call\n", status_code=404)
    info = record.recording
    if info is None:
        return PlainTextResponse("404 Not Found: this call was not recorded (or is still in progress)\n",
                                 status_code=404)
    name = info.key.rsplit("/", 1)[-1]
    headers = {"Cache-Control": "no-store", "Content-Disposition": f'attachment; filename="{name}"'}
    if info.storage == "file":
        path = recordings.local_path(info)
        if path is None:
            return PlainTextResponse("404 Not Found: the recording is gone from the data directory\n",
                                     status_code=404)
        return FileResponse(path, media_type="audio/wav", headers=headers)
    wanted = request.headers.get("range", "")
    byte_range = wanted if _ONE_RANGE.match(wanted) and wanted != "bytes=-" else None
    found = await anyio.to_thread.run_sync(recordings.open_object, info, byte_range)
    if found is None:
        return PlainTextResponse("502 Bad Gateway: the recording could not be read from its storage\n",
                                 status_code=502)
    headers |= {"Content-Length": str(found.size), "Accept-Ranges": "bytes"}
    if found.content_range:
        headers["Content-Range"] = found.content_range
    return StreamingResponse(iterate_in_threadpool(found.chunks), status_code=206 if found.content_range else 200,
                             media_type="audio/wav", headers=headers)
