"""The checks every Twilio callback about a call we dialled goes through, in one place.

``/twilio/amd`` and ``/twilio/status`` are Twilio's, like ``/twiml``: a post
without ``X-Twilio-Signature`` is refused before a byte of its body is read,
the body is a bounded urlencoded form, the signature is checked over this
server's public URL and the form, ``CallSid`` and ``AccountSid`` must be
Twilio ids, and a post of another account (when ``TWILIO_ACCOUNT_SID`` is
set) is refused as unsigned. Each refusal is counted under the endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..config import Settings
from ..guard import Guard
from ..logs import Throttled
from ..observability.metrics import Metrics
from ..transports.ids import is_sid

__all__ = ["ReadForm", "signed_callback"]

log = logging.getLogger("aybiza.outbound")
_refusals = Throttled(log)

ReadForm = Callable[[Request, int], Awaitable[dict[str, str]]]


async def signed_callback(request: Request, *, endpoint: str, settings: Settings, guard: Guard, metrics: Metrics,
                          read_form: ReadForm, refused: type[Exception], limit: int) -> dict[str, str] | Response:
    """The callback's form once it passed every check; else the response that refuses it."""
    signature = request.headers.get("X-Twilio-Signature", "")
    if settings.twilio_validate and not signature:  # refused before a byte of the body is read
        return _forbidden(endpoint, metrics, "missing")
    try:
        params = await read_form(request, limit)
    except refused as error:
        metrics.refused(endpoint, "bad_request")
        response: Response = error.response  # type: ignore[attr-defined]
        return response
    if not guard.signature_ok(guard.public_url(request.url.path), params, signature):
        return _forbidden(endpoint, metrics, "bad")
    call_sid, account_sid = params.get("CallSid", ""), params.get("AccountSid", "")
    if not (is_sid(call_sid, "CA") and is_sid(account_sid, "AC")):
        metrics.refused(endpoint, "bad_request")
        return PlainTextResponse("400 Bad Request: CallSid and AccountSid must be Twilio ids\n", status_code=400)
    if settings.twilio_account_sid and account_sid != settings.twilio_account_sid:
        return _forbidden(endpoint, metrics, "another account's")
    return params


def _forbidden(endpoint: str, metrics: Metrics, how: str) -> Response:
    metrics.refused(endpoint, "signature")
    _refusals.warning(f"{endpoint}_signature", "refused /%s: %s X-Twilio-Signature", endpoint.replace("_", "/"), how)
    return PlainTextResponse("403 Forbidden: X-Twilio-Signature is missing or does not match\n", status_code=403)
