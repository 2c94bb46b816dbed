"""The OpenAI-compatible provider (Ollama, llama.cpp, vLLM) against a fake SSE chat server."""

from __future__ import annotations

import pytest
from anyio.abc import TaskGroup

from aybiza.errors import (
    BadRequestError,
    CredentialsError,
    OverloadedError,
    ProviderError,
    ProviderTimeout,
    ThrottledError,
)
from aybiza.pipeline import AgentText, AgentTurnDone, CallContext, Frame, Pipeline, Processor, UserTurn
from aybiza.pipeline.ledger import TokenUse
from aybiza.processors.llm.openai_compat import OpenAICompatLLM, OpenAICompatStreamer
from aybiza.processors.llm.sentences import ChatMessage, ReplyRequest
from aybiza.testing import ChatReply, FakeOpenAI, wait_until
from aybiza.testing.processes import free_port


class Sink(Processor):
    """The end of the test pipeline: keeps every frame."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)

    def said(self) -> list[str]:
        return [f.text for f in self.frames if isinstance(f, AgentText)]

    def done(self) -> list[int]:
        return [f.turn_id for f in self.frames if isinstance(f, AgentTurnDone)]


@pytest.mark.anyio
async def test_a_local_model_answers_sentence_by_sentence_without_its_reasoning() -> None:
    reply = ChatReply(
        text="We open at nine. We close at ten.", reasoning="They ask about hours, keep it short."
    )
    with FakeOpenAI(script=[reply]) as fo:
        stage = OpenAICompatLLM(
            model="llama3.2:3b",
            system_prompt="You answer briefly.",
            base_url=fo.url + "/v1",
            api_key="local-key",
        )
        sink = Sink()
        ctx = CallContext(call_id="local")

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(UserTurn("When are you open?", 1))
            await wait_until(lambda: sink.done() == [1])

        await Pipeline([stage, sink]).run(ctx, feed)

    assert sink.said() == ["We open at nine.", "We close at ten."]
    body = fo.requests[0]
    assert body["model"] == "llama3.2:3b" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "When are you open?"},
    ]
    assert fo.headers[0]["Authorization"] == "Bearer local-key"
    assert ctx.ledger.usage().tokens == {"llama3.2:3b": TokenUse(input=7, output=8)}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (ChatReply(status=429), ThrottledError),
        (ChatReply(status=500), OverloadedError),
        (ChatReply(status=400), BadRequestError),
        (ChatReply(status=401), CredentialsError),
        (ChatReply(first_token_delay=1.0), ProviderTimeout),
    ],
    ids=["429", "500", "400", "401", "first-token-deadline"],
)
async def test_failures_map_onto_the_error_tree(reply: ChatReply, error: type[ProviderError]) -> None:
    with FakeOpenAI(script=[reply]) as fo:
        streamer = OpenAICompatStreamer(model="m", base_url=fo.url + "/v1", first_token_timeout=0.3)
        with pytest.raises(error):
            async for _ in streamer.stream_reply(ReplyRequest("", (ChatMessage("user", "Hi"),))):
                pass
        await streamer.aclose()


@pytest.mark.anyio
async def test_a_server_that_is_not_running_is_retryable() -> None:
    streamer = OpenAICompatStreamer(model="m", base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(OverloadedError) as caught:
        async for _ in streamer.stream_reply(ReplyRequest("", (ChatMessage("user", "Hi"),))):
            pass
    assert caught.value.retryable
    await streamer.aclose()


@pytest.mark.anyio
async def test_tools_are_offered_called_in_pieces_and_answered_with_tool_messages() -> None:
    from aybiza.processors.llm.tooling import ToolCall, ToolResult, ToolSchema

    schema = ToolSchema("order_status", "Where an order is.",
                        {"type": "object", "properties": {"order_id": {"type": "string"}}})
    reply = ChatReply(text="Let me look.", tool_calls=(("order_status", {"order_id": "4321"}),), chunk_chars=5)
    with FakeOpenAI(script=[reply, ChatReply(text="It is shipped.")]) as fo:
        model = OpenAICompatStreamer(model="llama3.2", base_url=fo.url + "/v1")
        question = ChatMessage("user", "Where is order 4321?")
        events = [e async for e in model.stream_reply(ReplyRequest("Be brief.", (question,), tools=(schema,)))]
        [call] = [e for e in events if isinstance(e, ToolCall)]
        assert (call.name, call.arguments) == ("order_status", {"order_id": "4321"})
        result = ToolResult(call.call_id, call.name, {"status": "shipped"})
        answered = ReplyRequest("Be brief.", (question, ChatMessage("assistant", "Let me look.", (call,)),
                                              ChatMessage("user", "", tool_results=(result,))), tools=(schema,))
        [_ async for _ in model.stream_reply(answered)]
        await model.aclose()
    first, second = fo.requests
    assert first["tools"] == [{"type": "function", "function": {"name": "order_status",
                                                                "description": "Where an order is.",
                                                                "parameters": dict(schema.parameters)}}]
    assert second["messages"][2:] == [
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": call.call_id, "type": "function",
             "function": {"name": "order_status", "arguments": '{"order_id": "4321"}'}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": '{"status":"shipped"}'},
    ]
