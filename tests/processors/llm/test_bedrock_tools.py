"""Tool use on Bedrock through real boto3 against the fake (ConverseStream ``toolUse`` and ``toolResult``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from aybiza.processors.llm.bedrock import converse_request
from aybiza.processors.llm.sentences import ChatMessage, ReplyRequest, ReplyStop, TextDelta
from aybiza.processors.llm.tooling import ToolCall, ToolResult, ToolSchema
from aybiza.testing import BedrockReply, BedrockRequest, FakeBedrock
from aybiza.testing.fake_bedrock import ToolUseReply

from .test_bedrock import MODEL, SYSTEM, aws_env, pool, streamer  # noqa: F401 - fixtures

ORDER = ToolSchema("order_status", "Where an order is.",
                   {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]})
QUESTION = ChatMessage("user", "Where is order 4321?")


def shop(request: BedrockRequest) -> BedrockReply:
    """Calls the tool first; answers from its result once it has one."""
    results = request.tool_results()
    if not results:
        return BedrockReply(text="Let me look.", tool_uses=(ToolUseReply("order_status", {"order_id": "4321"},
                                                                         "tooluse_A"),), chunk_chars=5)
    return BedrockReply(text=f"It is {results[0]['content'][0]['json']['status']}.")


@pytest.mark.anyio
async def test_a_streamed_tool_use_becomes_one_tool_call_and_its_result_goes_back_as_a_tool_result(
    pool: ThreadPoolExecutor,  # noqa: F811
) -> None:
    with FakeBedrock(script=shop) as fb:
        model = streamer(fb, pool)
        asked = ReplyRequest(SYSTEM, (QUESTION,), tools=(ORDER,))
        events = [e async for e in model.stream_reply(asked)]
        calls = [e for e in events if isinstance(e, ToolCall)]
        assert calls == [ToolCall("tooluse_A", "order_status", {"order_id": "4321"})]
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Let me look."
        assert ReplyStop("tool_use") in events
        answered = ReplyRequest(SYSTEM, (QUESTION, ChatMessage("assistant", "Let me look.", tuple(calls)),
                                         ChatMessage("user", "", tool_results=(ToolResult(
                                             "tooluse_A", "order_status", {"status": "shipped"}),))),
                                tools=(ORDER,))
        second = [e async for e in model.stream_reply(answered)]
    assert "".join(e.text for e in second if isinstance(e, TextDelta)) == "It is shipped."
    body = fb.requests[1].body
    assert body["toolConfig"] == {"tools": [{"toolSpec": {"name": "order_status", "description": "Where an order is.",
                                                          "inputSchema": {"json": dict(ORDER.parameters)}}}]}
    assert body["messages"][1:] == [
        {"role": "assistant", "content": [{"text": "Let me look."}, {"toolUse": {
            "toolUseId": "tooluse_A", "name": "order_status", "input": {"order_id": "4321"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_A", "content": [{"json": {
            "status": "shipped"}}], "status": "success"}}]},
    ]


@pytest.mark.exclusive  # a 1 s first-token deadline: run alone, not beside a loaded core
@pytest.mark.anyio
async def test_a_tool_call_alone_meets_the_first_token_deadline(pool: ThreadPoolExecutor) -> None:  # noqa: F811
    # No text at all, arguments streamed slowly: the model is answering, so no ProviderTimeout.
    reply = BedrockReply(text="", tool_uses=(ToolUseReply("order_status", {"order_id": "4321" * 10}),),
                         chunk_chars=4, chunk_delay=0.05)
    with FakeBedrock(script=[reply]) as fb:
        model = streamer(fb, pool, first_token_timeout=1.0, stall_timeout=0.3)
        events = [e async for e in model.stream_reply(ReplyRequest(SYSTEM, (QUESTION,), tools=(ORDER,)))]
    [call] = [e for e in events if isinstance(e, ToolCall)]
    assert call.arguments == {"order_id": "4321" * 10}


def test_a_request_answering_tool_calls_goes_without_thinking_and_with_results_first() -> None:
    call = ToolCall("t1", "order_status", {"order_id": "1"})
    messages = (QUESTION, ChatMessage("assistant", "", (call,)),
                ChatMessage("user", "Oh, and is it insured?", tool_results=(ToolResult("t1", "order_status",
                                                                                       {"error": "down"}, True),)))
    kwargs = converse_request(ReplyRequest(SYSTEM, messages, tools=(ORDER,)), model_id=MODEL, thinking_budget=1024)
    assert "additionalModelRequestFields" not in kwargs, "Claude wants the calling turn's thinking block back"
    assert kwargs["messages"][-1]["content"] == [
        {"toolResult": {"toolUseId": "t1", "content": [{"json": {"error": "down"}}], "status": "error"}},
        {"text": "Oh, and is it insured?"},
    ]
    plain = converse_request(ReplyRequest(SYSTEM, (QUESTION,), tools=(ORDER,)), model_id=MODEL, thinking_budget=1024)
    assert plain["additionalModelRequestFields"]["thinking"]["budget_tokens"] == 1024


def test_a_call_the_history_never_answered_is_left_out() -> None:
    # The call ended (or the history was cut) between a tool call and its result: Bedrock would refuse both halves.
    dangling = (QUESTION, ChatMessage("assistant", "Let me look.", (ToolCall("t1", "order_status", {}),)),
                ChatMessage("user", "Hello?"))
    kwargs = converse_request(ReplyRequest(SYSTEM, dangling, tools=(ORDER,)), model_id=MODEL)
    assert kwargs["messages"][1] == {"role": "assistant", "content": [{"text": "Let me look."}]}
    orphan = (ChatMessage("user", "Hi", tool_results=(ToolResult("t0", "order_status", {}),)),)
    assert converse_request(ReplyRequest(SYSTEM, orphan), model_id=MODEL)["messages"] == [
        {"role": "user", "content": [{"text": "Hi"}]}]
