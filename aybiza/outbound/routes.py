"""The outbound routes: ``POST /api/calls`` dials, ``POST /twilio/amd`` takes Twilio's AMD verdict,
``POST /twilio/status`` the call's final status (:mod:`aybiza.outbound.status`).

``POST /api/calls`` needs the API's bearer token like every ``/api`` route
(a dial costs money and rings a stranger's phone), takes a bounded flat JSON
body (:class:`~aybiza.outbound.dialing.DialRequest`) and answers JSON:
``201`` with the call's SID; ``400`` a bad request, ``404`` an unknown agent,
``409`` the agent's outbound calls at their limit, ``429`` its dial rate
spent (with ``Retry-After``), ``503`` no Twilio account or no room for another
call, ``502`` Twilio refused or could not be reached.

``POST /twilio/amd`` is Twilio's: refused unsigned before its body is read,
at most 16 kB of urlencoded form, ``X-Twilio-Signature`` checked like
``/twiml``'s; the verdict of a call we did not dial is a 404.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import ProviderError
from ..guard import Guard
from ..logs import Throttled
from .amd import ANSWERED_BY
from .callbacks import ReadForm, signed_callback
from .dialing import MAX_DIAL_BODY_BYTES, DialRequest, TwilioDialer
from .registry import OutboundLimits
from .status import status_callback

if TYPE_CHECKING:
    from ..agents import AgentConfig
    from ..runtime import Runtime

__all__ = ["outbound_routes"]

log = logging.getLogger("aybiza.outbound")
_refusals = Throttled(log)

ReadBody = Callable[[Request, int], Awaitable[bytes]]


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


def limits_for(agent: AgentConfig, runtime: Runtime) -> OutboundLimits:
    """The agent's outbound limits: its own fields, else the server's settings."""
    settings = runtime.settings
    return OutboundLimits(
        max_calls=agent.outbound_max_calls if agent.outbound_max_calls is not None else settings.outbound_max_calls,
        dials_per_minute=agent.outbound_dials_per_minute or settings.outbound_dials_per_minute,
        dial_burst=agent.outbound_dial_burst or settings.outbound_dial_burst)


def outbound_routes(runtime: Runtime, guard: Guard, *, read_body: ReadBody, read_form: ReadForm,
                    refused: type[Exception], webhook_limit: int) -> list[Route]:
    """The two routes, over the server's bounded body readers (``refused`` carries their error response)."""
    settings, metrics = runtime.settings, runtime.metrics
    dialer = TwilioDialer(account_sid=settings.twilio_account_sid, auth_token=settings.twilio_auth_token,
                          api_url=settings.twilio_api_url)

    async def dial(request: Request) -> Response:
        if (refusal := guard.api_refusal(request)) is not None:
            metrics.refused("api", "unauthorized")
            return refusal
        try:
            body = await read_body(request, MAX_DIAL_BODY_BYTES)
            dial_request = DialRequest.parse(json.loads(body))
        except refused as error:
            response: Response = error.response  # type: ignore[attr-defined]
            return response
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                                 for e in error.errors()[:5])
            return _error(400, "bad_request", problems[:500])
        except (ValueError, RecursionError) as error:  # not JSON (UnicodeDecodeError is a ValueError), too deep
            return _error(400, "bad_request", str(error)[:200] if isinstance(error, ValueError) else "nested")
        if not runtime.agents.exists(dial_request.agent):
            return _error(404, "unknown_agent", f"no agent {dial_request.agent!r}")
        if not dialer.available:
            return _error(503, "no_twilio_account", "outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        from_ = dial_request.from_ or settings.outbound_from
        if not from_:
            return _error(400, "no_caller_id", "say which number calls: \"from\", or AYBIZA_OUTBOUND_FROM")
        agent = await runtime.agents.get(dial_request.agent)
        if (why := runtime.outbound.admit(agent.id, limits_for(agent, runtime))) is not None:
            metrics.refused("api_dial", why.error)
            _refusals.warning(why.error, "refused a dial: %s", why.message)
            headers = {"Retry-After": str(max(1, math.ceil(why.retry_after_s)))} if why.status == 429 else None
            return _error(why.status, why.error, why.message, headers)
        if not runtime.admission.has_room("twilio"):
            metrics.refused("api_dial", "at_capacity")
            return _error(503, "at_capacity", "no room for another call now", {"Retry-After": "10"})
        held = f"dialling-{secrets.token_hex(8)}"  # the slot is taken while Twilio is asked
        runtime.outbound.dialled(held, agent.id, dial_request.to, ring_s=settings.outbound_ring_s)
        try:
            call_sid = await dialer.dial(dial_request, from_=from_, public_url=settings.base_url,
                                         ring_s=settings.outbound_ring_s, amd_timeout_s=settings.amd_timeout_s)
        except ProviderError as error:
            runtime.outbound.ended(held)
            log.warning("dial failed: %s", error)
            return _error(502, "twilio_failed", str(error)[:300])
        except BaseException:  # cancelled (the client left): the slot is not kept
            runtime.outbound.ended(held)
            raise
        runtime.outbound.placed(held, call_sid)
        log.info("dialled %s for agent %s", call_sid, agent.id)
        return JSONResponse({"call_id": call_sid, "agent": agent.id, "to": dial_request.to, "from": from_,
                             "status": "queued"}, status_code=201)

    async def amd(request: Request) -> Response:
        params = await signed_callback(request, endpoint="twilio_amd", settings=settings, guard=guard,
                                       metrics=metrics, read_form=read_form, refused=refused, limit=webhook_limit)
        if isinstance(params, Response):
            return params
        call_sid, answered_by = params["CallSid"], params.get("AnsweredBy", "")
        if answered_by not in ANSWERED_BY:
            metrics.refused("twilio_amd", "bad_request")
            return PlainTextResponse("400 Bad Request: a known AnsweredBy is required\n", status_code=400)
        call = runtime.outbound.get(call_sid)
        if call is None:
            _refusals.warning("amd_unknown", "AMD verdict for a call not dialled here (or over)")
            return PlainTextResponse("404 Not Found: no outbound call with this CallSid here\n", status_code=404)
        call.answer(answered_by)
        log.info("AMD verdict for %s: %s", call_sid, answered_by)
        return Response(status_code=204)

    routes: list[Any] = [Route("/api/calls", dial, methods=["POST"]), Route("/twilio/amd", amd, methods=["POST"]),
                         Route("/twilio/status", status_callback(runtime, guard, read_form=read_form, refused=refused,
                                                                 webhook_limit=webhook_limit), methods=["POST"])]
    return routes
