"""Calling an HTTP tool: the request an agent file declares, made with the model's arguments.

The URL's ``{placeholders}`` take their arguments (percent-encoded, so an
argument can never change the path); the other arguments go in the query
string for ``GET`` and ``DELETE``, as a JSON body otherwise. The auth header
carries the secret the agent names (its value read through Settings). The
answer is trimmed to what the model needs: the ``keep`` fields (dotted paths
into the JSON, ``items.0.name``) or, without them, the whole JSON up to
:data:`MAX_RESULT_CHARS`. Every failure — a timeout, a refused connection,
an HTTP error status, a missing secret — is a :class:`ToolFailed` whose
message the model reads as the tool's error result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from .specs import HttpToolSpec

__all__ = ["MAX_RESULT_CHARS", "ToolFailed", "ToolTimedOut", "call_http_tool", "kept_fields"]

MAX_RESULT_CHARS = 4000
"""A tool's result as the model gets it is at most this long (JSON text)."""


class ToolFailed(Exception):
    """A tool could not do its job; the message is what the model is told."""


class ToolTimedOut(ToolFailed):
    """The tool's deadline passed."""


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def kept_fields(data: Any, keep: tuple[str, ...]) -> dict[str, Any]:
    """The ``keep`` paths of ``data`` (missing ones left out); without ``keep``, ``data`` as an object."""
    if not keep:
        return dict(data) if isinstance(data, Mapping) else {"result": data}
    out: dict[str, Any] = {}
    for path in keep:
        value: Any = data
        for part in path.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                break
        else:
            out[path] = value
    return out


async def call_http_tool(
    spec: HttpToolSpec, arguments: Mapping[str, Any], client: httpx.AsyncClient, *, secret: str | None = None
) -> dict[str, Any]:
    """Make the request; the result for the model. Raises :class:`ToolFailed`."""
    if spec.auth is not None and not secret:
        raise ToolFailed("the tool is not configured (its secret is missing on the server)")
    url = spec.url
    rest = dict(arguments)
    for name in spec.placeholders:
        url = url.replace("{" + name + "}", quote(_text(rest.pop(name)), safe=""))
    headers = {"Accept": "application/json", "User-Agent": "aybiza-tools"}
    if spec.auth is not None and secret:
        headers[spec.auth.header] = f"{spec.auth.scheme} {secret}".strip()
    request: dict[str, Any] = {"headers": headers, "timeout": spec.timeout_s}
    if spec.method in ("GET", "DELETE"):
        request["params"] = [(key, _text(item)) for key, value in rest.items()
                             for item in (value if isinstance(value, list) else [value])]
    else:
        request["json"] = rest
    try:
        response = await client.request(spec.method, url, **request)
    except httpx.TimeoutException:
        raise ToolTimedOut(f"the service did not answer within {spec.timeout_s:g} s") from None
    except httpx.HTTPError as error:
        raise ToolFailed(f"the service could not be reached ({type(error).__name__})") from None
    if response.status_code >= 400:
        raise ToolFailed(f"the service answered HTTP {response.status_code}: {response.text.strip()[:200]}")
    if not response.content:
        return {"ok": True}
    try:
        data = response.json()
    except ValueError:
        return {"text": response.text.strip()[:MAX_RESULT_CHARS]}
    result = kept_fields(data, spec.keep)
    encoded = json.dumps(result, ensure_ascii=False, default=str)
    if len(encoded) > MAX_RESULT_CHARS:
        return {"truncated": True, "json": encoded[:MAX_RESULT_CHARS]}
    return result
