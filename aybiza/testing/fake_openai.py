"""A fake OpenAI-compatible chat server (what Ollama, llama.cpp and vLLM expose).

``POST /v1/chat/completions`` with ``"stream": true`` answers with
server-sent events (``data: {chunk}`` lines, ``data: [DONE]`` last), including
``delta.reasoning_content`` when scripted and a usage chunk when the request
asks for ``stream_options.include_usage``. Scripted tool calls stream as
OpenAI streams them: a ``delta.tool_calls[]`` entry with the call's ``index``,
``id``, ``type`` and ``function.name``, then ``function.arguments`` in
pieces, and ``finish_reason: tool_calls``. Errors are scripted as HTTP statuses.

    with FakeOpenAI(script=[ChatReply(text="Hi there.")]) as fo:
        llm = OpenAICompatLLM(base_url=fo.url + "/v1", model="llama3.2", ...)
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._server import LoopbackServer

__all__ = ["ChatReply", "FakeOpenAI"]


@dataclass(frozen=True, slots=True)
class ChatReply:
    """What the fake does with one chat request."""

    text: str = "Hello! How can I help you today?"
    reasoning: str | None = None
    chunk_chars: int = 8
    status: int = 200
    error_message: str = "rate limited"
    first_token_delay: float = 0.0
    chunk_delay: float = 0.0
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()  # (name, arguments) after the text


Script = Sequence[ChatReply] | Callable[[dict[str, Any]], ChatReply] | None


class FakeOpenAI(LoopbackServer):
    """OpenAI-compatible ``/v1/chat/completions`` on a free loopback port."""

    def __init__(self, script: Script = None) -> None:
        super().__init__()
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    def _reply_for(self, body: dict[str, Any]) -> ChatReply:
        index = len(self.requests) - 1
        if self.script is None:
            return ChatReply()
        if callable(self.script):
            return self.script(body)
        if not self.script:
            return ChatReply()
        return self.script[min(index, len(self.script) - 1)]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        reply = self._reply_for(body)
        if reply.status != 200:
            return web.json_response(
                {"error": {"message": reply.error_message, "type": "error"}}, status=reply.status
            )
        if body.get("stream") is False:  # one JSON completion (post-call summaries)
            return web.json_response({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": str(body.get("model", "local")),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply.text}}]})
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        model = str(body.get("model", "local"))
        created = int(time.time())

        async def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            obj = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await response.write(f"data: {json.dumps(obj)}\n\n".encode())

        await chunk({"role": "assistant", "content": ""})
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        size = max(1, reply.chunk_chars)
        for field_name, text in (("reasoning_content", reply.reasoning or ""), ("content", reply.text)):
            for start in range(0, len(text), size):
                await chunk({field_name: text[start : start + size]})
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
        for index, (name, arguments) in enumerate(reply.tool_calls):
            call_id = f"call_{uuid.uuid4().hex[:24]}"
            await chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                         "function": {"name": name, "arguments": ""}}]})
            encoded = json.dumps(arguments)
            for start in range(0, len(encoded), size):
                await chunk({"tool_calls": [{"index": index, "function": {"arguments": encoded[start:start + size]}}]})
        await chunk({}, "tool_calls" if reply.tool_calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            completion = len(reply.text.split())
            usage = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
            await response.write(f"data: {json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
