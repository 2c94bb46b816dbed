"""A fake Bedrock Runtime that speaks ConverseStream's wire protocol.

``POST /model/{modelId}/converse-stream`` answers with
``application/vnd.amazon.eventstream`` frames (correct CRCs) exactly as
boto3 expects them, so the real client can be pointed at it with
``endpoint_url``; ``POST /model/{modelId}/converse`` (not streamed) answers
the same script's text as one JSON message. What each request gets is scripted with :class:`BedrockReply`
(text, thinking, tool calls, HTTP errors such as 429, an exception frame
mid-stream, delays before the first token, a stall, a dropped connection).
Requests are recorded, and the fake rejects what Bedrock rejects (blank text
blocks, roles that do not alternate, temperature with thinking, a ``toolUse``
not answered by a ``toolResult`` in the next message or a ``toolResult`` no
``toolUse`` asked for, tool blocks without ``toolConfig``, thinking in a tool
loop without the thinking block) with a ``ValidationException``.

A tool call streams as Bedrock streams it: ``contentBlockStart`` with the
``toolUse`` id and name, the input JSON in ``contentBlockDelta`` pieces
(``delta.toolUse.input``), ``contentBlockStop``; the message then stops with
``stopReason: tool_use``. ``exception_after``/``abort`` count these frames
too, so a region can be made to fail halfway through a tool call.

    with FakeBedrock(script=[BedrockReply(text="Hi there.")]) as fb:
        client = boto3.client("bedrock-runtime", endpoint_url=fb.url, ...)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from ._server import LoopbackServer
from .eventstream import event_frame, exception_frame

__all__ = ["BedrockReply", "BedrockRequest", "FakeBedrock", "ToolUseReply"]

DEFAULT_THINKING = "The caller wants help. Answer briefly and warmly."


@dataclass(frozen=True, slots=True)
class ToolUseReply:
    """A tool call the scripted reply makes (after its text)."""

    name: str
    input: dict[str, Any] = field(default_factory=dict)
    tool_use_id: str = ""  # empty: a fresh ``tooluse_…`` id


@dataclass(frozen=True, slots=True)
class BedrockReply:
    """What the fake does with one request."""

    text: str = "Hello! How can I help you today?"
    tool_uses: tuple[ToolUseReply, ...] = ()  # stopReason becomes tool_use
    thinking: str | None = None  # None: reason only when the request asks for thinking
    chunk_chars: int = 8
    status: int = 200  # != 200: an HTTP error carrying ``error_type``
    error_type: str = "ThrottlingException"
    error_message: str = "Too many requests, please wait before trying again."
    exception: str | None = None  # e.g. "modelStreamErrorException": an exception frame mid-stream
    exception_after: int = 2  # frames sent before the exception frame (or before ``abort``)
    abort: bool = False  # drop the TCP connection after ``exception_after`` frames
    headers_delay: float = 0.0  # before the HTTP response starts
    first_token_delay: float = 0.0  # after messageStart, before the first delta
    chunk_delay: float = 0.0  # between deltas
    stall_after: int | None = None  # deltas sent before a stall of ``stall_s``
    stall_s: float = 0.0
    input_tokens: int | None = None  # None: a count derived from the request
    output_tokens: int | None = None
    latency_ms: int = 42
    stop_reason: str = "end_turn"


@dataclass(slots=True)
class BedrockRequest:
    """One request as the fake received it."""

    model_id: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = 0.0
    finished: bool = False  # the whole scripted reply was sent

    def tool_results(self) -> list[dict[str, Any]]:
        """The ``toolResult`` blocks of the request's last message (what the tools returned)."""
        messages = self.body.get("messages") or [{}]
        return [block["toolResult"] for block in messages[-1].get("content", []) if "toolResult" in block]

    def texts(self) -> list[str]:
        """Every text block of every message, in order."""
        return [block["text"] for message in self.body.get("messages", []) for block in message.get("content", [])
                if "text" in block]

    @property
    def thinking(self) -> dict[str, Any] | None:
        """The ``thinking`` request field, if any."""
        extra = self.body.get("additionalModelRequestFields") or {}
        value = extra.get("thinking")
        return value if isinstance(value, dict) else None


Script = Sequence[BedrockReply] | Callable[[BedrockRequest], BedrockReply] | None


@dataclass(slots=True)
class _State:
    requests: list[BedrockRequest] = field(default_factory=list)
    served: int = 0


class FakeBedrock(LoopbackServer):
    """Bedrock Runtime ConverseStream on a free loopback port (``.url`` is its endpoint_url)."""

    def __init__(self, script: Script = None, *, validate: bool = True, access_key_id: str | None = None) -> None:
        super().__init__()
        self.script = script
        self.validate = validate
        self.access_key_id = access_key_id  # when set, other keys are refused like AWS does
        self._state = _State()

    @property
    def requests(self) -> list[BedrockRequest]:
        """Every request received so far, in order."""
        return self._state.requests

    def turns(self) -> list[BedrockRequest]:
        """The requests that were caller turns (not the startup credentials check)."""
        return [r for r in self._state.requests if r.model_id != "aybiza-credentials-check"]

    def rescript(self, script: Script) -> None:
        """Answer the next requests from ``script`` (from its first reply)."""
        self.script = script
        self._state.served = 0

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/model/{model}/converse-stream", self._converse_stream)
        app.router.add_post("/model/{model}/converse", self._converse)  # non-streamed (post-call summaries)
        return app

    def _reply_for(self, request: BedrockRequest) -> BedrockReply:
        script = self.script
        index = self._state.served
        self._state.served += 1
        if script is None:
            return BedrockReply()
        if callable(script):
            return script(request)
        if not script:
            return BedrockReply()
        return script[min(index, len(script) - 1)]

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._answer(request)
        except ConnectionResetError:  # the client went away (barge-in, its own deadline)
            return web.Response(status=499)

    async def _converse(self, request: web.Request) -> web.Response:
        """``Converse`` (not streamed): the scripted reply's text as one message, or its error."""
        body = await request.json()
        record = BedrockRequest(model_id=unquote(request.match_info["model"]), path=request.path,
                                headers=dict(request.headers), body=body,
                                received_at=asyncio.get_running_loop().time(), finished=True)
        self._state.requests.append(record)
        reply = self._reply_for(record)
        problem = _validation_problem(body) if self.validate else None
        if problem is not None:
            return _error_response(400, "ValidationException", problem)
        if reply.status != 200:
            return _error_response(reply.status, reply.error_type, reply.error_message)
        words = _count_words(body)
        return web.json_response({
            "output": {"message": {"role": "assistant", "content": [{"text": reply.text}]}},
            "stopReason": reply.stop_reason,
            "usage": {"inputTokens": reply.input_tokens or words, "outputTokens": reply.output_tokens
                      or len(reply.text.split()), "totalTokens": words + len(reply.text.split())},
            "metrics": {"latencyMs": reply.latency_ms},
        }, headers={"x-amzn-RequestId": str(uuid.uuid4())})

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if self.access_key_id is not None and f"Credential={self.access_key_id}/" not in request.headers.get(
                "Authorization", ""):
            return _error_response(403, "UnrecognizedClientException",
                                   "The security token included in the request is invalid.")
        loop = asyncio.get_running_loop()
        body = await request.json()
        record = BedrockRequest(
            model_id=unquote(request.match_info["model"]),
            path=request.path,
            headers=dict(request.headers),
            body=body,
            received_at=loop.time(),
        )
        self._state.requests.append(record)
        reply = self._reply_for(record)
        if reply.headers_delay:
            await asyncio.sleep(reply.headers_delay)
        problem = _validation_problem(body) if self.validate else None
        messages = body.get("messages") or [{}]
        if problem is None and messages[-1].get("role") == "assistant" and _refuses_prefill(record.model_id):
            problem = ("This model does not support assistant message prefill. "
                       "The conversation must end with a user message.")
        if problem is not None:
            return _error_response(400, "ValidationException", problem)
        if reply.status != 200:
            return _error_response(reply.status, reply.error_type, reply.error_message)

        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "application/vnd.amazon.eventstream",
                "x-amzn-RequestId": str(uuid.uuid4()),
            },
        )
        await response.prepare(request)
        await self._stream(request, response, record, reply)
        return response

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, record: BedrockRequest, reply: BedrockReply
    ) -> None:
        thinking = (
            reply.thinking if reply.thinking is not None else (DEFAULT_THINKING if record.thinking else None)
        )
        deltas = 0
        for index, (kind, frame) in enumerate(_frames(reply, record.body, thinking)):
            if index == reply.exception_after:
                if reply.abort:
                    if request.transport is not None:
                        request.transport.abort()
                    return
                if reply.exception is not None:
                    await response.write(
                        exception_frame(
                            reply.exception, "The model stream failed mid-way.", originalStatusCode=500
                        )
                    )
                    await response.write_eof()
                    return
            if kind == "delta":
                if deltas == 0 and reply.first_token_delay:
                    await asyncio.sleep(reply.first_token_delay)
                elif deltas and reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                if reply.stall_after is not None and deltas == reply.stall_after and reply.stall_s:
                    await asyncio.sleep(reply.stall_s)
                deltas += 1
            await response.write(frame)
        await response.write_eof()
        record.finished = True


def _frames(reply: BedrockReply, body: dict[str, Any], thinking: str | None) -> list[tuple[str, bytes]]:
    frames: list[tuple[str, bytes]] = [("start", event_frame("messageStart", {"role": "assistant"}))]
    block = 0
    if thinking:
        for piece in _chunks(thinking, reply.chunk_chars):
            frames.append(
                (
                    "delta",
                    event_frame(
                        "contentBlockDelta",
                        {"contentBlockIndex": block, "delta": {"reasoningContent": {"text": piece}}},
                    ),
                )
            )
        frames.append(
            (
                "delta",
                event_frame(
                    "contentBlockDelta",
                    {
                        "contentBlockIndex": block,
                        "delta": {"reasoningContent": {"signature": "fake-signature"}},
                    },
                ),
            )
        )
        frames.append(("stop", event_frame("contentBlockStop", {"contentBlockIndex": block})))
        block += 1
    if reply.text or not reply.tool_uses:
        for piece in _chunks(reply.text, reply.chunk_chars):
            frames.append(
                (
                    "delta",
                    event_frame("contentBlockDelta", {"contentBlockIndex": block, "delta": {"text": piece}}),
                )
            )
        frames.append(("stop", event_frame("contentBlockStop", {"contentBlockIndex": block})))
        block += 1
    for tool in reply.tool_uses:
        tool_id = tool.tool_use_id or f"tooluse_{uuid.uuid4().hex[:22]}"
        start = {"toolUse": {"toolUseId": tool_id, "name": tool.name}}
        frames.append(("start", event_frame("contentBlockStart", {"contentBlockIndex": block, "start": start})))
        for piece in _chunks(json.dumps(tool.input), reply.chunk_chars):
            delta = {"contentBlockIndex": block, "delta": {"toolUse": {"input": piece}}}
            frames.append(("delta", event_frame("contentBlockDelta", delta)))
        frames.append(("stop", event_frame("contentBlockStop", {"contentBlockIndex": block})))
        block += 1
    stop_reason = "tool_use" if reply.tool_uses and reply.stop_reason == "end_turn" else reply.stop_reason
    frames.append(("stop", event_frame("messageStop", {"stopReason": stop_reason})))
    tokens_in = reply.input_tokens if reply.input_tokens is not None else _count_words(body)
    tokens_out = (
        reply.output_tokens
        if reply.output_tokens is not None
        else (len(reply.text.split()) + len((thinking or "").split()) + 20 * len(reply.tool_uses))
    )
    frames.append(
        (
            "meta",
            event_frame(
                "metadata",
                {
                    "usage": {
                        "inputTokens": tokens_in,
                        "outputTokens": tokens_out,
                        "totalTokens": tokens_in + tokens_out,
                    },
                    "metrics": {"latencyMs": reply.latency_ms},
                },
            ),
        )
    )
    return frames


def _refuses_prefill(model_id: str) -> bool:
    """Claude Sonnet and Opus 4.6 answer a trailing assistant message with a ValidationException."""
    return any(name in model_id for name in ("claude-sonnet-4-6", "claude-opus-4-6"))


def _chunks(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _count_words(body: dict[str, Any]) -> int:
    texts = [block.get("text", "") for block in body.get("system", []) if isinstance(block, dict)]
    for message in body.get("messages", []):
        texts.extend(block.get("text", "") for block in message.get("content", []) if isinstance(block, dict))
    return sum(len(str(text).split()) for text in texts)


def _validation_problem(body: dict[str, Any]) -> str | None:
    """What real Bedrock would reject in a ConverseStream body, or None."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "The messages field is required and must not be empty."
    if messages[0].get("role") != "user":
        return "A conversation must start with a user message."
    for first, second in itertools.pairwise(messages):
        if first.get("role") == second.get("role"):
            return "A conversation must alternate between user and assistant roles."
    for block in itertools.chain(body.get("system", []), *(m.get("content", []) for m in messages)):
        if "text" in block and not str(block["text"]).strip():
            return (
                "The text field in the ContentBlock object is blank. "
                "Add text to the text field, and try again."
            )
    problem = _tool_problem(body)
    if problem is not None:
        return problem
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    if thinking:
        config = body.get("inferenceConfig") or {}
        if "temperature" in config and config["temperature"] != 1:
            return "temperature may only be set to 1 when thinking is enabled."
        budget = int(thinking.get("budget_tokens", 0))
        if budget < 1024 or int(config.get("maxTokens", 0)) <= budget:
            return "max_tokens must be greater than thinking.budget_tokens (at least 1024)."
    return None


def _tool_problem(body: dict[str, Any]) -> str | None:
    """What Bedrock (Claude) rejects about the tool blocks of a request, or None."""
    messages = body.get("messages") or []
    blocks = [block for message in messages for block in message.get("content", [])]
    if any("toolUse" in b or "toolResult" in b for b in blocks) and not (body.get("toolConfig") or {}).get("tools"):
        return "The toolConfig field must be defined when using toolUse and toolResult content blocks."
    for index, message in enumerate(messages):
        content = message.get("content", [])
        results = [b["toolResult"]["toolUseId"] for b in content if "toolResult" in b]
        before = messages[index - 1].get("content", []) if index else []
        asked = {b["toolUse"]["toolUseId"] for b in before if "toolUse" in b}
        if any(result not in asked for result in results):
            return (f"The number of toolResult blocks at messages.{index}.content exceeds the number of toolUse "
                    "blocks of previous turn.")
        if content and results and "toolResult" not in content[0]:
            return "A toolResult block must come before any other content in its message."
        calls = [b["toolUse"]["toolUseId"] for b in content if "toolUse" in b]
        if calls and index + 1 < len(messages):
            answered = {b["toolResult"]["toolUseId"] for b in messages[index + 1].get("content", [])
                        if "toolResult" in b}
            if set(calls) - answered:
                return (f"Expected toolResult blocks at messages.{index + 1}.content for the toolUse ids "
                        f"{sorted(set(calls) - answered)}.")
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    last_assistant = next((m for m in reversed(messages) if m.get("role") == "assistant"), None)
    if thinking and last_assistant is not None and messages[-1].get("role") == "user":
        content = last_assistant.get("content", [])
        if any("toolUse" in b for b in content) and "reasoningContent" not in (content[0] if content else {}):
            return ("Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, "
                    "a final `assistant` message must start with a thinking block.")
    return None


def _error_response(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message},
        status=status,
        headers={
            "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": str(uuid.uuid4()),
        },
    )
