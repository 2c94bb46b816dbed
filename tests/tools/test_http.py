"""HTTP tools: the request the agent file declares, made with the model's arguments, trimmed for the model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from aybiza.testing.tool_server import ToolAnswer, ToolServer
from aybiza.tools.http import ToolFailed, ToolTimedOut, call_http_tool, kept_fields
from aybiza.tools.specs import HttpToolSpec

pytestmark = pytest.mark.anyio


def spec(server: ToolServer, path: str, **changes: Any) -> HttpToolSpec:
    fields: dict[str, Any] = {
        "name": "lookup", "description": "Look something up.", "url": server.url + path, "method": "GET",
        "parameters": {"type": "object", "required": ["order_id"], "properties": {
            "order_id": {"type": "string"}, "fields": {"type": "array", "items": {"type": "string"}}}}}
    return HttpToolSpec.model_validate({**fields, **changes})


@pytest.fixture
def server() -> Iterator[ToolServer]:
    with ToolServer() as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


async def test_placeholders_are_encoded_and_the_rest_is_the_query(server: ToolServer,
                                                                  client: httpx.AsyncClient) -> None:
    server.script["/orders/a%2Fb%20c"] = ToolAnswer({"status": "shipped"})
    tool = spec(server, "/orders/{order_id}")
    result = await call_http_tool(tool, {"order_id": "a/b c", "fields": ["status", "eta"]}, client)
    assert result == {"status": "shipped"}
    [request] = server.requests
    assert request.path == "/orders/a%2Fb%20c", "an argument can never change the path"
    assert request.query == [("fields", "status"), ("fields", "eta")]
    assert request.headers["Accept"] == "application/json"


async def test_a_post_sends_json_with_the_secret_auth_header(server: ToolServer, client: httpx.AsyncClient) -> None:
    server.script["/bookings"] = ToolAnswer({"booking": {"id": "B-7", "slot": "9:30"}, "internal": [1, 2]})
    tool = spec(server, "/bookings", method="post", keep=["booking.id", "booking.slot", "missing.field"],
                auth={"secret": "CLINIC_TOKEN", "header": "X-Api-Key", "scheme": ""})
    result = await call_http_tool(tool, {"order_id": "1"}, client, secret="s3cr3t")
    assert result == {"booking.id": "B-7", "booking.slot": "9:30"}, "only the kept fields, missing ones left out"
    [request] = server.requests
    assert (request.method, request.body, request.headers["X-Api-Key"]) == ("POST", {"order_id": "1"}, "s3cr3t")


async def test_failures_are_tool_errors_the_model_can_read(server: ToolServer, client: httpx.AsyncClient) -> None:
    server.script["/slow"] = ToolAnswer({}, delay_s=1.0)
    server.script["/broken"] = ToolAnswer({"error": "db down"}, status=503)
    with pytest.raises(ToolTimedOut, match="within 0.3 s"):
        await call_http_tool(spec(server, "/slow", timeout_s=0.3), {"order_id": "1"}, client)
    with pytest.raises(ToolFailed, match="HTTP 503"):
        await call_http_tool(spec(server, "/broken"), {"order_id": "1"}, client)
    with pytest.raises(ToolFailed, match="secret is missing"):
        await call_http_tool(spec(server, "/broken", auth={"secret": "NOPE"}), {"order_id": "1"}, client)
    server.script["/text"] = ToolAnswer(text="OK, done")
    assert await call_http_tool(spec(server, "/text"), {"order_id": "1"}, client) == {"text": "OK, done"}


def test_kept_fields_walk_objects_and_lists() -> None:
    data = {"items": [{"name": "Floss"}], "total": 3}
    assert kept_fields(data, ("items.0.name", "items.5.name", "total")) == {"items.0.name": "Floss", "total": 3}
    assert kept_fields([1, 2], ()) == {"result": [1, 2]}


def test_a_url_placeholder_must_be_a_required_argument() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        HttpToolSpec(name="x", description="x", url="https://h/{who}", parameters={"type": "object", "properties": {}})
