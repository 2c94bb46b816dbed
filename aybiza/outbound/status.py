"""``POST /twilio/status``: Twilio's StatusCallback for the calls we dial, and what it means for their records.

An outbound call nobody answers never opens a Media Stream, so no session
ever runs for it: without this callback it would leave no record at all,
and hold a place in its agent's ``outbound_max_calls`` until its ring time
(and a minute's grace) ran out. Every call :class:`~aybiza.outbound.dialing.TwilioDialer`
creates asks Twilio for the ``completed`` event, whose ``CallStatus`` is the
call's final state:

==============  ===========================================================
``no-answer``   archived with the typed end reason ``no_answer``
``canceled``    ``no_answer`` (it was hung up before anyone answered)
``busy``        ``busy``
``failed``      ``dial_failed`` (Twilio's ``SipResponseCode`` in the detail)
``completed``   the session's own record when the stream ran (nothing to
                do); else, answered but never streamed, ``hangup``
==============  ===========================================================

The route is held to ``/twiml``'s rules: refused unsigned before its body is
read, a bounded urlencoded form, ``X-Twilio-Signature`` checked over this
server's public URL, Twilio ids only, this account's only; it takes the
status of calls this process dialled (a 404 otherwise, as ``/twilio/amd``),
and each address may post :data:`STATUS_PER_MINUTE` a minute (429 beyond).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..edge.state import CallStateError
from ..errors import EndReason
from ..guard import Guard
from ..logs import Throttled
from ..pipeline import CallContext
from ..session.admission import RateLimit
from ..transports.ids import clean_text
from .callbacks import ReadForm, signed_callback

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["FINAL_STATUSES", "STATUS_PER_MINUTE", "end_reason", "status_callback"]

log = logging.getLogger("aybiza.outbound")
_refusals = Throttled(log)

FINAL_STATUSES: dict[str, EndReason] = {
    "no-answer": EndReason.NO_ANSWER,
    "canceled": EndReason.NO_ANSWER,
    "busy": EndReason.BUSY,
    "failed": EndReason.DIAL_FAILED,
    "completed": EndReason.HANGUP,
}
"""Twilio's final ``CallStatus`` values and the end reason each is recorded with."""

_PROGRESS = frozenset({"queued", "initiated", "ringing", "in-progress"})

STATUS_PER_MINUTE = 600.0
"""Status callbacks one address may post a minute (Twilio posts one per call we dial; a burst of 100 at once)."""

def end_reason(call_status: str) -> EndReason | None:
    """The end reason a final ``CallStatus`` stands for; None for a call still in progress."""
    return FINAL_STATUSES.get(call_status)


def status_callback(runtime: Runtime, guard: Guard, *, read_form: ReadForm, refused: type[Exception],
                    webhook_limit: int) -> Callable[[Request], Awaitable[Response]]:
    """The ``POST /twilio/status`` endpoint over the server's bounded form reader."""
    settings, metrics = runtime.settings, runtime.metrics
    rate = RateLimit(STATUS_PER_MINUTE, 100)

    def refuse(status: int, why: str, message: str) -> Response:
        metrics.refused("twilio_status", why)
        _refusals.warning(f"status_{why}", "refused /twilio/status: %s", message)
        headers = {"Retry-After": str(max(1, int(rate.retry_after(why) + 1)))} if status == 429 else None
        return PlainTextResponse(f"{status} {message}\n", status_code=status, headers=headers)

    async def status(request: Request) -> Response:
        client = request.client.host if request.client else ""
        if not rate.allow(client):
            return refuse(429, "rate_limited", "Too Many Requests: status callbacks from this address")
        params = await signed_callback(request, endpoint="twilio_status", settings=settings, guard=guard,
                                       metrics=metrics, read_form=read_form, refused=refused, limit=webhook_limit)
        if isinstance(params, Response):
            return params
        call_sid, call_status = params["CallSid"], params.get("CallStatus", "")
        if call_status not in FINAL_STATUSES and call_status not in _PROGRESS:
            return refuse(400, "bad_request", "Bad Request: a known CallStatus is required")
        reason = end_reason(call_status)
        if reason is None:
            return Response(status_code=204)  # progress: the final status comes later
        call = runtime.outbound.get(call_sid)
        if call is None:
            store = runtime.store
            if store is not None and await store.archive.get(call_sid) is not None:
                return Response(status_code=204)  # its session ended and archived it; Twilio confirms
            return refuse(404, "unknown_call", "Not Found: no outbound call with this CallSid here")
        if call.started:
            return Response(status_code=204)  # the stream ran: its session ends and records the call
        runtime.outbound.ended(call_sid)  # its agent's place is free now, not after the ring time
        detail = f"Twilio: {call_status}"
        if code := clean_text(params.get("SipResponseCode", ""))[:8]:
            detail += f" (SIP {code})"
        if reason is EndReason.HANGUP:
            detail += ", answered but its stream never started"
        ctx = CallContext(call_id=call_sid, transport="twilio", caller=call.to, agent_id=call.agent_id)
        ctx.custom.update(direction="outbound", twilio_status=call_status, answered_by=call.answered_by)
        ctx.ledger.pii = settings.redact_pii
        if runtime.store is not None:
            try:
                await runtime.store.end_call(ctx, reason.value, detail=detail)
            except CallStateError as error:
                log.error("outbound call %s not recorded (%s): %s", call_sid, call_status, error)
                return PlainTextResponse("503 Service Unavailable: the call store is down\n", status_code=503)
        log.info("outbound call %s of agent %s ended before its stream: %s", call_sid, call.agent_id, call_status)
        return Response(status_code=204)

    return status
