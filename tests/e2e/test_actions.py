"""Agents that act, through a real server: tools the model calls, transfers over Twilio's API, keypad digits.

One server runs as ``aybiza serve`` runs it, on the production providers
pointed at the shipped fakes (Deepgram, Bedrock, Twilio's REST API) and at an
HTTP service for the agent's tools. The fake model decides as a model would,
from what it is asked: it calls the order tool when asked about an order and
answers from the tool's result once it has one. A second server runs the
embedded offline stack, whose FAQ agent transfers a caller who asks for a
person.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aybiza.testing.caller import Press, Say, Wait, caller_speech, place_call
from aybiza.testing.fake_bedrock import BedrockReply, BedrockRequest, FakeBedrock, ToolUseReply
from aybiza.testing.fake_deepgram import FakeDeepgram
from aybiza.testing.fake_twilio import FakeTwilio
from aybiza.testing.tool_server import ToolAnswer, ToolServer

from .conftest import agents_dir
from .server import AUTH_TOKEN, Server, running_server

pytestmark = pytest.mark.slow

ACCOUNT_SID = "AC" + "1" * 32
DESK = "+14155550100"
AWS = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_EC2_METADATA_DISABLED": "true"}


def model(request: BedrockRequest) -> BedrockReply:
    """The fake Claude: calls a tool when it needs one, and answers from the tool's result."""
    results = request.tool_results()
    said = " ".join(request.texts()).lower()
    if results:
        content = results[0]["content"][0]["json"]
        if "digits" in content:
            spaced = " ".join(content["digits"])
            return BedrockReply(text=f"Thank you. Account {spaced} has a balance of forty two dollars.")
        if "status" in content:
            extra = " And yes, we deliver on Sundays." if "sundays" in said.split("let me check")[-1] else ""
            return BedrockReply(text=f"Your order is {content['status']}.{extra}")
        return BedrockReply(text="Sorry, I could not do that just now.")
    for order in ("4321", "5555", "7777", "8888"):
        if order in said and "order is" not in said:
            return BedrockReply(text="Let me check that order.", tool_uses=(
                ToolUseReply("order_status", {"order_id": order}),))
    if "balance" in said and "account" not in said:
        return BedrockReply(text="Sure.", tool_uses=(ToolUseReply("collect_digits", {
            "prompt": "Please type your account number, then press the hash key.", "max_digits": 8}),))
    if "colleague" in said:
        return BedrockReply(text="", tool_uses=(ToolUseReply("warm_transfer", {
            "summary": "Ann Lee has a billing question about her last invoice."}),))
    return BedrockReply(text="How can I help?")


@pytest.fixture(scope="module")
def shop() -> Iterator[ToolServer]:
    answers = {f"/orders/{order}": ToolAnswer({"status": "shipped", "warehouse": "B7"}) for order in ("4321", "8888")}
    answers["/orders/5555"] = ToolAnswer({"status": "shipped"}, delay_s=3.0)  # slow enough to talk over
    answers["/orders/7777"] = ToolAnswer({"status": "delivered"})
    with ToolServer(answers) as server:
        yield server


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeDeepgram, FakeBedrock, FakeTwilio]]:
    # Speech about as long as spoken words (so a caller can talk over it).
    with FakeDeepgram(transcripts=["hello"], seconds_per_char=0.06) as deepgram, \
            FakeBedrock(script=model) as bedrock, FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, answer_after_s=1.0) as twilio:
        yield deepgram, bedrock, twilio


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shop: ToolServer,
           fakes: tuple[FakeDeepgram, FakeBedrock, FakeTwilio]) -> Iterator[Server]:
    deepgram, bedrock, twilio = fakes
    tmp = tmp_path_factory.mktemp("actions")
    order_tool = {"name": "order_status", "description": "Where a customer's order is.", "method": "GET",
                  "url": shop.url + "/orders/{order_id}", "keep": ["status"], "timeout_s": 5,
                  "auth": {"secret": "SHOP_TOKEN"},
                  "parameters": {"type": "object", "required": ["order_id"],
                                 "properties": {"order_id": {"type": "string", "pattern": "^[0-9]{4}$"}}}}
    tools = [order_tool, {"builtin": "collect_digits", "max_digits": 8}, {"builtin": "warm_transfer"}]
    agents = agents_dir(tmp, shop={"transfer_to": DESK, "tools": tools, "filler": "One moment, please."})
    env = {
        "AYBIZA_STT": "deepgram", "AYBIZA_LLM": "bedrock", "AYBIZA_TTS": "deepgram",
        "DEEPGRAM_API_KEY": "test-key", "AYBIZA_DEEPGRAM_URL": deepgram.url,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.url, "AYBIZA_HEALTH_PROBES": "false",
        "AYBIZA_AGENTS_DIR": str(agents), "AYBIZA_SECRET_SHOP_TOKEN": "shop-secret",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "AYBIZA_TWILIO_API_URL": twilio.url, **AWS,
    }
    with running_server(tmp, env) as running:
        yield running



def _spoken(deepgram: FakeDeepgram, since: int) -> str:
    return " ".join(text for session in deepgram.speaks[since:] for text in session.texts)


def _tool_calls(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [call for turn in record["turns"] for call in turn["tool_calls"]]


@pytest.mark.anyio
async def test_the_model_calls_our_tool_with_its_arguments_and_answers_from_the_result(
    server: Server, shop: ToolServer, fakes: tuple[FakeDeepgram, FakeBedrock, FakeTwilio]
) -> None:
    deepgram, bedrock, _ = fakes
    deepgram.rescript(["where is my order 4321"])
    speaks, turns = len(deepgram.speaks), len(bedrock.turns())
    report = await place_call(server.stream_url, [Wait(6), Say(caller_speech("where is my order 4321")), Wait(12)],
                              auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, agent="shop")
    [request] = shop.to("/orders/4321")
    assert request.method == "GET" and request.headers["Authorization"] == "Bearer shop-secret"
    asked, answered = bedrock.turns()[turns:]
    assert [t["toolSpec"]["name"] for t in asked.body["toolConfig"]["tools"]] == [
        "order_status", "collect_digits", "warm_transfer"]
    assert answered.tool_results()[0]["content"] == [{"json": {"status": "shipped"}}], "only the kept field"
    assert "Your order is shipped." in _spoken(deepgram, speaks)
    record = await server.record(report.call_sid)
    [call] = _tool_calls(record)
    assert (call["name"], call["outcome"], call["arguments"]) == ("order_status", "ok", {"order_id": "4321"})
    assert call["result"] == {"status": "shipped"} and call["duration_ms"] > 0
    assert record["usage"]["tools"] == {"order_status": 1} and record["outcome"] == "hangup"


@pytest.mark.anyio
async def test_a_caller_who_talks_over_a_slow_tool_gets_its_result_with_the_answer_to_what_they_said(
    server: Server, shop: ToolServer, fakes: tuple[FakeDeepgram, FakeBedrock, FakeTwilio]
) -> None:
    deepgram, bedrock, _ = fakes
    deepgram.rescript(["where is my order 5555", "and do you deliver on sundays"])
    speaks, turns = len(deepgram.speaks), len(bedrock.turns())
    report = await place_call(server.stream_url, [
        Wait(6), Say(caller_speech("where is my order 5555")),
        Say(caller_speech("and do you deliver on sundays"), barge_in_after=0.3), Wait(14)],
        auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, agent="shop")
    assert len(shop.to("/orders/5555")) == 1, "the tool ran once, to the end"
    assert report.clears, "the caller's words cut the agent off"
    last = bedrock.turns()[-1]
    assert last.tool_results()[0]["content"] == [{"json": {"status": "shipped"}}]
    assert last.texts()[-1] == "and do you deliver on sundays"
    assert len(bedrock.turns()) - turns == 2, "no reply was made to the interrupted turn over the caller"
    assert "Your order is shipped. And yes, we deliver on Sundays." in _spoken(deepgram, speaks)
    record = await server.record(report.call_sid)
    [asked] = [turn for turn in record["turns"] if turn["user"] == "where is my order 5555"]
    assert asked["interrupted"] and [c["outcome"] for c in asked["tool_calls"]] == ["ok"]


@pytest.mark.anyio
async def test_a_region_failing_after_the_tool_ran_is_answered_elsewhere_without_running_it_again(
    server: Server, shop: ToolServer, fakes: tuple[FakeDeepgram, FakeBedrock, FakeTwilio]
) -> None:
    deepgram, bedrock, _ = fakes
    deepgram.rescript(["where is my order 7777"])
    unavailable = BedrockReply(status=503, error_type="ServiceUnavailableException")
    failed: list[str] = []

    def region_down_after_the_tool(request: BedrockRequest) -> BedrockReply:
        if request.tool_results() and len(failed) < 2:  # botocore tries twice per region, then we fail over
            failed.append(request.path)
            return unavailable
        return model(request)

    bedrock.rescript(region_down_after_the_tool)
    speaks = len(deepgram.speaks)
    try:
        report = await place_call(server.stream_url, [Wait(6), Say(caller_speech("where is my order 7777")),
                                                      Wait(12)],
                                  auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, agent="shop")
    finally:
        bedrock.rescript(model)
    assert len(failed) == 2
    assert len(shop.to("/orders/7777")) == 1, "the tool ran once; its result went to the next region"
    assert "Your order is delivered." in _spoken(deepgram, speaks)
    record = await server.record(report.call_sid)
    assert len(record["usage"]["failovers"]) == 1
    assert [c["name"] for c in _tool_calls(record)] == ["order_status"]


@pytest.mark.anyio
async def test_a_region_dropping_mid_tool_call_never_runs_the_tool_twice(
    server: Server, shop: ToolServer, fakes: tuple[FakeDeepgram, FakeBedrock, FakeTwilio]
) -> None:
    deepgram, bedrock, _ = fakes
    deepgram.rescript(["where is my order 8888"])
    dropped: list[str] = []

    def drop_halfway_through_the_call(request: BedrockRequest) -> BedrockReply:
        reply = model(request)
        if reply.tool_uses and not dropped:
            dropped.append(request.path)
            # messageStart, text, contentBlockStop, contentBlockStart(toolUse), one input piece: then the line drops
            return BedrockReply(text=reply.text, tool_uses=reply.tool_uses, chunk_chars=64, abort=True,
                                exception_after=5)
        if reply.tool_uses:  # the next region goes on from what the caller heard: the call alone
            return BedrockReply(text="", tool_uses=reply.tool_uses)
        return reply

    bedrock.rescript(drop_halfway_through_the_call)
    try:
        report = await place_call(server.stream_url, [Wait(6), Say(caller_speech("where is my order 8888")),
                                                      Wait(12)],
                                  auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, agent="shop")
    finally:
        bedrock.rescript(model)
    assert dropped and len(shop.to("/orders/8888")) == 1
    record = await server.record(report.call_sid)
    assert len(record["usage"]["failovers"]) == 1 and len(_tool_calls(record)) == 1


@pytest.mark.anyio
async def test_digits_typed_on_the_keypad_are_used_and_masked_in_the_transcript(
    server: Server, fakes: tuple[FakeDeepgram, FakeBedrock, FakeTwilio]
) -> None:
    deepgram, bedrock, _ = fakes
    deepgram.rescript(["i would like to check my balance"])
    speaks = len(deepgram.speaks)
    report = await place_call(server.stream_url, [
        Wait(6), Say(caller_speech("i would like to check my balance")), Wait(10), Press("1234#"), Wait(12)],
        auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, agent="shop")
    assert bedrock.turns()[-1].tool_results()[0]["content"] == [{"json": {"digits": "1234", "complete": True}}]
    spoken = _spoken(deepgram, speaks)
    assert "Please type your account number" in spoken and "Account 1 2 3 4 has a balance" in spoken
    record = await server.record(report.call_sid)
    [call] = _tool_calls(record)
    assert call["name"] == "collect_digits" and call["result"] == {"digits": "••••", "complete": True}
    transcript = " ".join(turn["agent"] for turn in record["turns"])
    assert "Account • • • • has a balance" in transcript and "1 2 3 4" not in transcript
    assert record["digits"] == "••••#"


@pytest.mark.anyio
async def test_a_warm_transfer_rings_the_colleague_then_bridges_the_caller_into_the_conference(
    server: Server, fakes: tuple[FakeDeepgram, FakeBedrock, FakeTwilio]
) -> None:
    deepgram, _, twilio = fakes
    deepgram.rescript(["can i talk to a colleague about my bill"])
    report = await place_call(server.stream_url, [
        Wait(6), Say(caller_speech("can i talk to a colleague about my bill")), Wait(15)],
        auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, agent="shop")
    [leg] = [leg for leg in twilio.created if leg.to == DESK]
    room = f"aybiza-{report.call_sid}"
    assert "<Say>Ann Lee has a billing question about her last invoice.</Say>" in leg.twiml
    steps = [(what, sid) for what, sid, _ in twilio.events if sid in (leg.sid, report.call_sid)]
    assert steps == [("create", leg.sid), ("answered", leg.sid), ("join", leg.sid),
                     ("update", report.call_sid), ("join", report.call_sid)]
    assert twilio.conferences[room] == [leg.sid, report.call_sid]
    record = await server.record(report.call_sid)
    assert record["outcome"] == "transferred" and "warm transfer to +" in record["outcome_detail"]
    assert DESK not in record["outcome_detail"]  # a phone number: masked like the transcript (AYBIZA_REDACT_PII)
    assert [c["name"] for c in _tool_calls(record)] == ["warm_transfer"]
    assert report.received_bytes > 8000, "the hold line and the hold tune were played"


# -- the embedded default agent ---------------------------------------------------------------


@pytest.mark.anyio
async def test_asking_the_embedded_default_agent_for_a_real_person_transfers_to_its_front_desk(
    tmp_path: Path,
) -> None:
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "AYBIZA_TWILIO_API_URL": twilio.url,
               "AYBIZA_AGENTS_DIR": str(agents_dir(tmp_path))}
        with running_server(tmp_path, env) as embedded:
            report = await place_call(embedded.stream_url, [
                Wait(6), Say(caller_speech("Can I speak to a real person please")), Wait(15)],
                auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID)
            record = await embedded.record(report.call_sid)
    [update] = [u for u in twilio.updates if u.call_sid == report.call_sid]
    assert "<Dial><Number>+16035550142</Number></Dial>" in update.twiml
    assert record["outcome"] == "transferred"
    [call] = _tool_calls(record)
    assert (call["name"], call["kind"], call["outcome"]) == ("transfer", "action", "ok")
    assert "put you through to the front desk" in record["turns"][-1]["agent"]
