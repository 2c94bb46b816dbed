"""An OpenAI-compatible chat model (Ollama, llama.cpp ``llama-server``, vLLM) over httpx.

``POST {base_url}/chat/completions`` with ``stream: true`` and
``stream_options.include_usage``; the server-sent events are parsed as they
arrive. ``delta.reasoning_content`` (reasoning models) is thinking and never
spoken. Tools go in ``tools`` (``type: function``); a call streams in
``delta.tool_calls[]`` pieces (id and name first, then ``function.arguments``
text) and is complete at ``finish_reason: tool_calls``. The calls go back as
the assistant message's ``tool_calls`` and each result as a ``role: tool``
message. Deadlines and errors follow the same tree as Bedrock: connect
failures, 429, 5xx and missed deadlines are retryable; 400/404 are bad
requests; 401/403 are credentials.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import anyio
import httpx

from ...errors import (
    BadRequestError,
    CredentialsError,
    OverloadedError,
    ProviderError,
    ProviderTimeout,
    ThrottledError,
)
from .reply import ReplyProcessor
from .sentences import (
    ChatMessage,
    ReplyEvent,
    ReplyRequest,
    ReplyStop,
    ReplyUsage,
    TextDelta,
    ThinkingDelta,
    normalise_messages,
)
from .tooling import ToolCall, ToolCallAssembler, ToolRunner

__all__ = ["OpenAICompatLLM", "OpenAICompatStreamer", "DEFAULT_BASE_URL", "chat_request"]

DEFAULT_BASE_URL = "http://127.0.0.1:11434/v1"
"""Ollama's OpenAI-compatible endpoint."""


def chat_request(
    request: ReplyRequest, *, model: str, max_tokens: int, temperature: float | None
) -> dict[str, Any]:
    """The JSON body of a streaming chat completion for ``request``."""
    messages: list[dict[str, Any]] = []
    if request.system.strip():
        messages.append({"role": "system", "content": request.system.strip()})
    for message in normalise_messages(request.messages):
        messages.extend(_chat_messages(message))
    if len(messages) == (1 if request.system.strip() else 0):
        raise BadRequestError("nothing to send: the conversation has no text", provider="openai-compat")
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
    }
    if request.tools:
        body["tools"] = [{"type": "function", "function": {"name": tool.name, "description": tool.description,
                                                           "parameters": dict(tool.parameters)}}
                         for tool in request.tools]
    if temperature is not None:
        body["temperature"] = temperature
    return body


def _chat_messages(message: ChatMessage) -> list[dict[str, Any]]:
    """One conversation message as chat messages: tool results are ``tool`` messages of their own."""
    out: list[dict[str, Any]] = [{"role": "tool", "tool_call_id": result.call_id, "content": result.text()}
                                 for result in message.tool_results]
    if message.tool_calls:
        out.append({"role": "assistant", "content": message.text or None,
                    "tool_calls": [{"id": call.call_id, "type": "function",
                                    "function": {"name": call.name,
                                                 "arguments": json.dumps(dict(call.arguments))}}
                                   for call in message.tool_calls]})
    elif message.text:
        out.append({"role": message.role, "content": message.text})
    return out


def _status_error(status: int, detail: str, provider: str) -> ProviderError:
    message = f"HTTP {status}: {detail}".strip()
    if status == 429:
        return ThrottledError(message, provider=provider)
    if status == 408:
        return ProviderTimeout(message, provider=provider)
    if status >= 500:
        return OverloadedError(message, provider=provider)
    if status in (401, 403):
        return CredentialsError(message, provider=provider)
    return BadRequestError(message, provider=provider)


class OpenAICompatStreamer:
    """Streaming chat completions from one OpenAI-compatible server."""

    provider = "openai-compat"

    def __init__(
        self,
        *,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str = "not-needed",
        max_tokens: int = 400,
        temperature: float | None = None,
        first_token_timeout: float = 15.0,
        stall_timeout: float = 5.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or "not-needed"
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.first_token_timeout = first_token_timeout
        self.stall_timeout = stall_timeout
        self.timeout = httpx.Timeout(
            connect=connect_timeout,
            read=max(first_token_timeout, stall_timeout),
            write=5.0,
            pool=connect_timeout,
        )
        self._client: httpx.AsyncClient | None = None

    @property
    def model_id(self) -> str:
        """The model asked (what its usage is counted under)."""
        return self.model

    def stream_reply(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        """Stream the reply; raises :mod:`aybiza.errors` types."""
        return self._events(request)

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, headers={"Authorization": f"Bearer {self.api_key}"}
            )
        return self._client

    async def _events(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        body = chat_request(
            request, model=self.model, max_tokens=self.max_tokens, temperature=self.temperature
        )
        started = time.monotonic()
        try:
            async with self._http().stream(
                "POST", f"{self.base_url}/chat/completions", json=body
            ) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode("utf-8", "replace")[:500]
                    raise _status_error(response.status_code, detail, self.provider)
                lines = response.aiter_lines()
                got_token = False
                tools = ToolCallAssembler()
                while True:
                    timeout = (
                        self.stall_timeout
                        if got_token
                        else (self.first_token_timeout - (time.monotonic() - started))
                    )
                    line: str | None = None
                    done = False
                    with anyio.move_on_after(max(timeout, 0.0)):
                        try:
                            line = await lines.__anext__()
                        except StopAsyncIteration:
                            done = True
                    if done:
                        return
                    if line is None:
                        what = "stream stalled for" if got_token else "no first token within"
                        limit = self.stall_timeout if got_token else self.first_token_timeout
                        raise ProviderTimeout(f"{self.model}: {what} {limit:.2f} s", provider=self.provider)
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    for event in self._translate(data, tools):
                        if isinstance(event, TextDelta | ThinkingDelta | ToolCall):
                            got_token = True
                        yield event
        except ProviderError:
            raise
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"{type(exc).__name__}: {exc}", provider=self.provider) from exc
        except httpx.TransportError as exc:
            raise OverloadedError(f"{type(exc).__name__}: {exc}", provider=self.provider) from exc

    def _translate(self, data: str, tools: ToolCallAssembler) -> list[ReplyEvent]:
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise OverloadedError(f"malformed stream chunk: {data[:80]!r}", provider=self.provider) from exc
        if "error" in chunk:
            raise OverloadedError(f"error in stream: {chunk['error']}", provider=self.provider)
        events: list[ReplyEvent] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                events.append(ThinkingDelta(str(reasoning)))
            content = delta.get("content")
            if content:
                events.append(TextDelta(str(content)))
            for piece in delta.get("tool_calls") or []:
                index = int(piece.get("index", 0))
                function = piece.get("function") or {}
                if piece.get("id") or function.get("name"):
                    tools.start(index, str(piece.get("id") or ""), str(function.get("name") or ""))
                tools.add(index, str(function.get("arguments") or ""))
                events.append(TextDelta(""))  # the model is answering, with a tool call
            if choice.get("finish_reason"):
                events.extend(tools.finish_all())  # a call is complete when its message ends
                events.append(ReplyStop(str(choice["finish_reason"])))
        usage = chunk.get("usage")
        if usage:
            events.append(
                ReplyUsage(
                    self.model,
                    int(usage.get("prompt_tokens", 0)),
                    int(usage.get("completion_tokens", 0)),
                )
            )
        return events


class OpenAICompatLLM(ReplyProcessor):
    """The model stage on a local OpenAI-compatible server."""

    name = "llm-openai-compat"

    def __init__(
        self,
        *,
        model: str,
        system_prompt: str,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str = "not-needed",
        max_tokens: int = 400,
        temperature: float | None = None,
        first_token_timeout: float = 15.0,
        stall_timeout: float = 5.0,
        history: Sequence[ChatMessage] = (),
        tools: ToolRunner | None = None,
    ) -> None:
        streamer = OpenAICompatStreamer(
            model=model,
            base_url=base_url,
            api_key=api_key,
            max_tokens=max_tokens,
            temperature=temperature,
            first_token_timeout=first_token_timeout,
            stall_timeout=stall_timeout,
        )
        super().__init__(streamer, system_prompt=system_prompt, history=history, tools=tools)
