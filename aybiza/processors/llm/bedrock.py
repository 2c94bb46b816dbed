"""Claude on Amazon Bedrock through ConverseStream (boto3), for the voice hot path.

* One boto3 client per (Region, endpoint) for the process, built by
  :func:`bedrock_client` and kept by the process's engines, configured for
  voice rather than batch: standard retry mode with at most 2 attempts, 1 s
  connect timeout, read timeout sized to the first-token deadline, TCP
  keepalive, 64 pooled connections.
* The blocking event stream is read in a worker thread and handed to the event
  loop event by event; the loop enforces a first-token deadline and a stream-
  stall timeout (:class:`~aybiza.errors.ProviderTimeout`), and closing the
  reply (barge-in) closes the HTTP stream.
* Errors are mapped onto :mod:`aybiza.errors` (:func:`classify_error`):
  throttling, overload, 5xx, timeouts, dropped connections and mid-stream
  exception frames are retryable in another Region; validation and
  credential errors are not.
* Extended thinking (``additionalModelRequestFields.thinking``) when a budget is
  given (the premium tier); reasoning is streamed as ``ThinkingDelta`` and never
  spoken. Blank text blocks are never sent.
* Tools (docs/protocols.md §3.2): the agent's tools go in ``toolConfig``; a
  ``toolUse`` block streams as ``contentBlockStart`` (id, name), then its input
  JSON in ``contentBlockDelta`` pieces, and becomes one
  :class:`~aybiza.processors.llm.tooling.ToolCall` at its ``contentBlockStop``
  (the message then stops with ``tool_use``). Results go back as ``toolResult``
  blocks (``status: error`` for a failed tool). A request that answers tool
  calls is sent without extended thinking: Claude requires the thinking block
  of the turn that called the tools back with the results, and it is not kept.

:class:`BedrockStreamer` is a :class:`~aybiza.processors.llm.sentences.ReplyStreamer`
on one model in one Region; :class:`~aybiza.processors.llm.routed.RoutedBedrock`
drives one per Region of the call's route.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import AsyncGenerator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream

from ...errors import (
    BadRequestError,
    CredentialsError,
    OverloadedError,
    ProviderError,
    ProviderTimeout,
    ThrottledError,
)
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
from .tooling import ToolCall, ToolCallAssembler, ToolSchema

__all__ = [
    "BedrockStreamer",
    "MAX_CONCURRENT_STREAMS",
    "bedrock_client",
    "classify_error",
    "client_config",
    "converse_message",
    "converse_request",
]

MAX_CONCURRENT_STREAMS = 64
"""Streams read at once (threads and pooled connections per client)."""

def client_config(read_timeout: float = 2.5, connect_timeout: float = 1.0) -> Any:
    """botocore ``Config`` for the hot path (docs/routing.md §7.4)."""
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "total_max_attempts": 2},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        tcp_keepalive=True,
        max_pool_connections=MAX_CONCURRENT_STREAMS,
    )


def bedrock_client(
    region: str,
    endpoint_url: str | None = None,
    *,
    read_timeout: float = 2.5,
    connect_timeout: float = 1.0,
    api_key: str = "",
) -> Any:
    """A new ``bedrock-runtime`` client for ``(region, endpoint_url)`` (the process's engines keep one per pair).

    Raises :class:`CredentialsError` when the AWS credential chain finds nothing
    and no Bedrock API key (``api_key``, a bearer token) is given. Blocking (it
    loads the service model): build clients at startup.
    """
    import boto3

    session = boto3.session.Session(region_name=region)
    try:
        credentials = session.get_credentials()
    except Exception as exc:  # a broken profile, SSO token expired ...
        raise CredentialsError(
            f"AWS credentials could not be loaded: {exc}", provider="bedrock", region=region
        ) from exc
    if credentials is None and not api_key:
        raise CredentialsError(
            "no AWS credentials found (environment, shared config/credentials files, SSO, container "
            "or instance role); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
            provider="bedrock",
            region=region,
        )
    return session.client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=endpoint_url or None,
        config=client_config(read_timeout, connect_timeout),
    )


def converse_request(
    request: ReplyRequest,
    *,
    model_id: str,
    max_tokens: int = 400,
    temperature: float | None = None,
    thinking_budget: int | None = None,
) -> dict[str, Any]:
    """The ``converse_stream`` keyword arguments for ``request`` (blank text never sent).

    With a thinking budget, ``maxTokens`` is ``max_tokens + budget`` and ``temperature`` is left out
    (Bedrock rejects a modified temperature with extended thinking); a request answering tool calls
    is sent without thinking.
    """
    messages = normalise_messages(request.messages)
    if not messages:
        raise BadRequestError("nothing to send: the conversation has no text", provider="bedrock")
    inference: dict[str, Any] = {"maxTokens": max_tokens}
    kwargs: dict[str, Any] = {
        "modelId": model_id,
        "messages": [converse_message(m) for m in messages],
        "inferenceConfig": inference,
    }
    if request.system.strip():
        kwargs["system"] = [{"text": request.system.strip()}]
    if request.tools:
        kwargs["toolConfig"] = {"tools": [_tool_spec(tool) for tool in request.tools]}
    if thinking_budget and not _in_tool_loop(messages):
        inference["maxTokens"] = max_tokens + thinking_budget
        kwargs["additionalModelRequestFields"] = {
            "thinking": {"type": "enabled", "budget_tokens": thinking_budget}
        }
    elif temperature is not None:
        inference["temperature"] = temperature
    return kwargs


def _in_tool_loop(messages: list[ChatMessage]) -> bool:
    """Whether the caller's latest words were followed by tool calls (the request answers them)."""
    for message in reversed(messages):
        if message.role == "user" and not message.tool_results:
            return False
        if message.tool_calls:
            return True
    return False


def converse_message(message: ChatMessage) -> dict[str, Any]:
    """One Converse message: tool results first (Claude requires it), then text, then tool calls."""
    content: list[dict[str, Any]] = [
        {"toolResult": {"toolUseId": result.call_id, "content": [{"json": dict(result.content)}],
                        "status": "error" if result.error else "success"}}
        for result in message.tool_results
    ]
    if message.text.strip():
        content.append({"text": message.text.strip()})
    content.extend({"toolUse": {"toolUseId": call.call_id, "name": call.name, "input": dict(call.arguments)}}
                   for call in message.tool_calls)
    return {"role": message.role, "content": content}


def _tool_spec(tool: ToolSchema) -> dict[str, Any]:
    return {"toolSpec": {"name": tool.name, "description": tool.description,
                         "inputSchema": {"json": dict(tool.parameters)}}}


_THROTTLED = frozenset(
    {
        "throttlingexception",
        "toomanyrequestsexception",
        "servicequotaexceededexception",
        "limitexceededexception",
        "requestlimitexceeded",
    }
)
_OVERLOADED = frozenset(
    {
        "serviceunavailableexception",
        "internalserverexception",
        "internalfailure",
        "modelstreamerrorexception",
        "modelnotreadyexception",
        "modelerrorexception",
        "serviceunavailable",
        "internalservererror",
        "serviceexception",
    }
)
_TIMEOUTS = frozenset({"modeltimeoutexception", "requesttimeout", "requesttimeoutexception"})
_CREDENTIALS = frozenset(
    {
        "accessdeniedexception",
        "unrecognizedclientexception",
        "expiredtokenexception",
        "invalidsignatureexception",
        "incompletesignature",
        "signaturedoesnotmatch",
        "missingauthenticationtokenexception",
        "unauthorizedexception",
        "invalidclienttokenid",
    }
)


def classify_error(
    exc: BaseException, *, region: str = "", provider: str = "bedrock"
) -> ProviderError | None:
    """The :mod:`aybiza.errors` error for a boto3/botocore failure, or None if it is not one."""
    from botocore import exceptions as bx

    if isinstance(exc, ProviderError):
        return exc
    where = {"provider": provider, "region": region}
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {}) if isinstance(exc.response, Mapping) else {}
        code = str(error.get("Code", ""))
        message = f"{code}: {error.get('Message', '')}".strip(": ")
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        key = code.lower()
        if key in _THROTTLED or status == 429:
            return ThrottledError(message, **where)
        if key in _TIMEOUTS or status == 408:
            return ProviderTimeout(message, **where)
        if key in _OVERLOADED or (isinstance(status, int) and status >= 500):
            return OverloadedError(message, **where)
        if key in _CREDENTIALS or status in (401, 403):
            return CredentialsError(message, **where)
        if isinstance(exc, bx.EventStreamError) and status is None:
            return OverloadedError(message, **where)  # an unmodelled exception frame mid-stream
        return BadRequestError(message, **where)
    if isinstance(exc, bx.ReadTimeoutError | bx.ConnectTimeoutError):
        return ProviderTimeout(f"{type(exc).__name__}: {exc}", **where)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError | bx.CredentialRetrievalError):
        return CredentialsError(f"{type(exc).__name__}: {exc}", **where)
    if isinstance(exc, bx.ParamValidationError):
        return BadRequestError(f"{type(exc).__name__}: {exc}", **where)
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError):
        return OverloadedError(f"{type(exc).__name__}: {exc}", **where)
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(f"{type(exc).__name__}: {exc}", **where)
    if isinstance(exc, OSError):
        return OverloadedError(f"{type(exc).__name__}: {exc}", **where)
    if type(exc).__module__.startswith("urllib3"):
        return OverloadedError(f"{type(exc).__name__}: {exc}", **where)  # a connection dropped mid-read
    return None


@dataclass(slots=True)
class _Failed:
    error: BaseException


_DONE = object()


class _StreamJob:
    """One ConverseStream read in a worker thread, handed to the loop event by event.

    The reader never waits for the loop: each event is scheduled onto it
    (in order) and the thread goes back to the socket, so a busy loop delays
    a reply by one pass, not one pass per event, and no thread sleeps on a
    round trip. Events the loop takes in one pass reach the stream together.
    """

    __slots__ = ("_send", "_token", "_stream", "_cancelled", "_lock")

    def __init__(self, send: MemoryObjectSendStream[object]) -> None:
        self._send = send
        self._token = anyio.lowlevel.current_token()
        self._stream: Any = None
        self._cancelled = False
        self._lock = threading.Lock()

    def run(self, client: Any, kwargs: dict[str, Any]) -> None:
        stream: Any = None
        try:
            response = client.converse_stream(**kwargs)
            stream = response["stream"]
            with self._lock:
                self._stream = stream
                cancelled = self._cancelled
            if cancelled:
                return
            for event in stream:
                if self._cancelled or not self._emit(event):
                    return
            self._emit(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which raises it
            if not self._cancelled:
                self._emit(_Failed(exc))
        finally:
            if stream is not None:
                _close_quietly(stream)

    def _emit(self, item: object) -> bool:
        """Schedule ``item`` onto the loop (from the reader thread); False once nobody will take it."""
        if self._cancelled:
            return False
        try:
            self._token.backend_class.run_sync_soon(self._deliver, (item,), self._token.native_token)
            return True
        except Exception:  # the loop is closing
            self._cancelled = True
            return False

    def _deliver(self, item: object) -> None:
        """On the loop: hand ``item`` to the stream (the reader hears at its next event if it went away)."""
        try:
            self._send.send_nowait(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._cancelled = True

    def cancel(self) -> None:
        """Stop reading (from the loop thread) without waiting on the reader.

        Closing the stream here would block the event loop: the close takes
        the lock of a reader stuck in ``recv`` on a silent socket (blackholed
        or hung region) until the read timeout. Shutting the socket down
        wakes that reader at once; the worker thread then closes the stream.
        """
        with self._lock:
            self._cancelled = True
            stream = self._stream
        if stream is not None:
            _shutdown_socket(stream)


def _shutdown_socket(stream: Any) -> None:
    """Shut down the TCP socket under a botocore event stream, if it can be found."""
    raw = getattr(stream, "_raw_stream", None)
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        # No socket to shut: close from a helper thread so the loop never waits.
        threading.Thread(target=_close_quietly, args=(stream,), daemon=True, name="bedrock-close").start()
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the peer or the reader
        pass


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - closing a dead socket
        pass


class BedrockStreamer:
    """ConverseStream on one model in one Region; ``stream_reply`` raises :mod:`aybiza.errors` types."""

    provider = "bedrock"

    def __init__(
        self,
        *,
        region: str,
        model_id: str,
        client: Any,
        pool: Executor,
        max_tokens: int = 400,
        temperature: float | None = None,
        thinking_budget: int | None = None,
        first_token_timeout: float = 2.5,
        stall_timeout: float = 0.5,
    ) -> None:
        if thinking_budget is not None and thinking_budget < 1024:
            raise BadRequestError(
                f"thinking budget must be at least 1024 tokens, not {thinking_budget}",
                provider=self.provider,
                region=region,
            )
        self.region = region
        self.model_id = model_id
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.thinking_budget = thinking_budget
        self.first_token_timeout = first_token_timeout
        self.stall_timeout = stall_timeout
        self.client = client
        self.pool = pool

    def request_kwargs(self, request: ReplyRequest) -> dict[str, Any]:
        """The ``converse_stream`` arguments for ``request``."""
        return converse_request(
            request,
            model_id=self.model_id,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            thinking_budget=self.thinking_budget,
        )

    def stream_reply(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        """Stream the reply; raises ``ProviderTimeout`` on a missed first token or a stall."""
        return self._events(request)

    async def aclose(self) -> None:
        """Nothing to release: the client and the pool are the process's."""
        return None

    async def _events(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        kwargs = self.request_kwargs(request)
        send, receive = anyio.create_memory_object_stream[object](math.inf)
        job = _StreamJob(send)
        started = time.monotonic()
        self.pool.submit(job.run, self.client, kwargs)
        got_token = False
        reader_done = False  # the reader sent its last item and closes the stream itself
        tools = ToolCallAssembler()
        try:
            with receive:
                while True:
                    if got_token:
                        timeout = self.stall_timeout
                    else:
                        timeout = self.first_token_timeout - (time.monotonic() - started)
                    item: object = None
                    with anyio.move_on_after(max(timeout, 0.0)):
                        item = await receive.receive()
                    if item is None:
                        what = "stream stalled for" if got_token else "no first token within"
                        limit = self.stall_timeout if got_token else self.first_token_timeout
                        raise ProviderTimeout(
                            f"{self.model_id}: {what} {limit:.2f} s",
                            provider=self.provider,
                            region=self.region,
                        )
                    if item is _DONE:
                        reader_done = True
                        return
                    if isinstance(item, _Failed):
                        reader_done = True
                        mapped = classify_error(item.error, region=self.region, provider=self.provider)
                        if mapped is None:
                            raise item.error
                        raise mapped from item.error
                    for event in _translate(item, self.model_id, tools):
                        if isinstance(event, TextDelta | ThinkingDelta | ToolCall):
                            got_token = True
                        yield event
        finally:
            if not reader_done:  # abandoned mid-stream (barge-in, a deadline): stop the reader
                job.cancel()
            send.close()


def _translate(item: object, model_id: str, tools: ToolCallAssembler) -> list[ReplyEvent]:
    if not isinstance(item, Mapping):
        return []
    start_event = item.get("contentBlockStart")
    if start_event is not None:
        tool_use = (start_event.get("start") or {}).get("toolUse")
        if tool_use:
            tools.start(int(start_event.get("contentBlockIndex", 0)), str(tool_use.get("toolUseId", "")),
                        str(tool_use.get("name", "")))
            return [TextDelta("")]  # the model is answering, with a tool call
        return []
    delta_event = item.get("contentBlockDelta")
    if delta_event is not None:
        delta = delta_event.get("delta", {})
        text = delta.get("text")
        if text:
            return [TextDelta(text)]
        tool_use = delta.get("toolUse")
        if tool_use is not None:
            tools.add(int(delta_event.get("contentBlockIndex", 0)), str(tool_use.get("input", "")))
            return [TextDelta("")]
        reasoning = delta.get("reasoningContent") or {}
        if reasoning.get("text"):
            return [ThinkingDelta(reasoning["text"])]
        return []
    stop_event = item.get("contentBlockStop")
    if stop_event is not None:
        call = tools.finish(int(stop_event.get("contentBlockIndex", 0)))
        return [call] if call is not None else []
    stop = item.get("messageStop")
    if stop is not None:
        return [ReplyStop(str(stop.get("stopReason", "")))]
    metadata = item.get("metadata")
    if metadata is not None:
        usage = metadata.get("usage") or {}
        metrics = metadata.get("metrics") or {}
        latency = metrics.get("latencyMs")
        return [
            ReplyUsage(
                model_id,
                int(usage.get("inputTokens", 0)),
                int(usage.get("outputTokens", 0)),
                float(latency) if latency is not None else None,
            )
        ]
    return []
