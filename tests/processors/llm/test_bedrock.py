"""Claude on Bedrock through real boto3 against the fake Bedrock (AWS event-stream wire format)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.errors import (
    BadRequestError,
    CallEnded,
    CredentialsError,
    EndReason,
    OverloadedError,
    ProviderError,
    ProviderTimeout,
    ThrottledError,
)
from aybiza.pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    IncidentKind,
    Interruption,
    Notice,
    Pipeline,
    Processor,
    Stage,
    UserTurn,
)
from aybiza.pipeline.ledger import TokenUse
from aybiza.processors.llm.bedrock import BedrockStreamer, bedrock_client
from aybiza.processors.llm.reply import ReplyProcessor
from aybiza.processors.llm.sentences import ChatMessage, ReplyRequest, TextDelta, ThinkingDelta
from aybiza.testing import BedrockReply, FakeBedrock, wait_until
from aybiza.testing.fake_bedrock import DEFAULT_THINKING

MODEL = "eu.anthropic.claude-haiku-4-5-20251001-v1:0"
SYSTEM = "You are a concise booking agent."


class Sink(Processor):
    """The end of the test pipeline: keeps every frame."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)

    def said(self, turn_id: int | None = None) -> list[str]:
        return [f.text for f in self.frames if isinstance(f, AgentText) and turn_id in (None, f.turn_id)]

    def done(self) -> list[int]:
        return [f.turn_id for f in self.frames if isinstance(f, AgentTurnDone)]


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Static test credentials; nothing may look further (no profiles, no instance metadata)."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    """The reader threads (the process's engines own one pool for every stream)."""
    with ThreadPoolExecutor(8, thread_name_prefix="test-bedrock") as executor:
        yield executor


def streamer(fb: FakeBedrock, pool: ThreadPoolExecutor, *, region: str = "eu-west-2", **kwargs: Any) -> BedrockStreamer:
    """A streamer on a new client for the fake's endpoint."""
    return BedrockStreamer(region=region, model_id=MODEL, client=bedrock_client(region, fb.url), pool=pool,
                           **kwargs)


def llm(fb: FakeBedrock, pool: ThreadPoolExecutor, *, history: list[ChatMessage] | None = None,
        **kwargs: Any) -> ReplyProcessor:
    """The model stage on Bedrock: the reply processor on one streamer."""
    return ReplyProcessor(streamer(fb, pool, **kwargs), system_prompt=SYSTEM, history=history or ())


class Announcements:
    """What the call was asked to say in the local voice."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    async def __call__(self, notice: Notice) -> None:
        self.notices.append(notice)


@pytest.mark.anyio
async def test_reply_is_spoken_sentence_by_sentence_and_the_conversation_is_kept(pool: ThreadPoolExecutor) -> None:
    script = [
        BedrockReply(text="Sure. Your table for two is booked for eight. Anything else?"),
        BedrockReply(text="Goodbye!"),
    ]
    with FakeBedrock(script=script) as fb:
        stage = llm(fb, pool)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(UserTurn("Book a table for two at eight.", 1))
            await wait_until(lambda: sink.done() == [1])
            await p.push(UserTurn("No, that's all.", 2))
            await wait_until(lambda: sink.done() == [1, 2])

        await Pipeline([stage, sink]).run(CallContext(call_id="llm"), feed)

    assert sink.said(1) == ["Sure.", "Your table for two is booked for eight.", "Anything else?"]
    assert sink.said(2) == ["Goodbye!"]
    kinds = [type(f).__name__ for f in sink.frames]
    assert kinds == ["AgentText"] * 3 + ["AgentTurnDone"] + ["AgentText", "AgentTurnDone"]
    first, second = fb.requests
    assert first.model_id == MODEL
    assert first.body["system"] == [{"text": SYSTEM}]
    assert "/eu-west-2/bedrock/aws4_request" in first.headers["Authorization"], "SigV4 for the Region"
    assert second.body["messages"] == [
        {"role": "user", "content": [{"text": "Book a table for two at eight."}]},
        {
            "role": "assistant",
            "content": [{"text": "Sure. Your table for two is booked for eight. Anything else?"}],
        },
        {"role": "user", "content": [{"text": "No, that's all."}]},
    ]


@pytest.mark.anyio
async def test_the_first_sentence_is_pushed_while_the_model_is_still_writing(pool: ThreadPoolExecutor) -> None:
    reply = BedrockReply(
        text="Of course. Let me check what we have for Friday evening.",
        chunk_chars=4,
        stall_after=4,
        stall_s=0.4,
    )
    with FakeBedrock(script=[reply]) as fb:
        stage = llm(fb, pool, stall_timeout=2.0)
        sink = Sink()
        still_writing: list[bool] = []

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(UserTurn("Do you have a table on Friday?", 1))
            await wait_until(lambda: bool(sink.said()))
            still_writing.append(not fb.requests[0].finished)
            await wait_until(lambda: sink.done() == [1])

        await Pipeline([stage, sink]).run(CallContext(call_id="llm"), feed)

    assert sink.said() == ["Of course.", "Let me check what we have for Friday evening."]
    assert still_writing == [True]


@pytest.mark.anyio
async def test_premium_thinking_is_requested_and_never_spoken(pool: ThreadPoolExecutor) -> None:
    with FakeBedrock(script=[BedrockReply(text="Happy to help. What date?")]) as fb:
        stage = llm(fb, pool, thinking_budget=1024, temperature=0.3)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(UserTurn("I need a table.", 1))
            await wait_until(lambda: sink.done() == [1])

        await Pipeline([stage, sink]).run(CallContext(call_id="llm"), feed)

    body = fb.requests[0].body
    assert body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert body["inferenceConfig"] == {"maxTokens": 400 + 1024}, "no temperature with thinking"
    assert sink.said() == ["Happy to help.", "What date?"]
    spoken = " ".join(sink.said())
    assert not any(word in spoken for word in ("caller", "warmly")), "thinking is never spoken"


@pytest.mark.anyio
async def test_thinking_arrives_as_thinking_deltas_on_the_stream(pool: ThreadPoolExecutor) -> None:
    with FakeBedrock(script=[BedrockReply(text="Yes.")]) as fb:
        premium = streamer(fb, pool, thinking_budget=2048)
        events = [e async for e in premium.stream_reply(ReplyRequest(SYSTEM, (ChatMessage("user", "Hi"),)))]
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert (thinking, text) == (DEFAULT_THINKING, "Yes.")
    assert [type(e).__name__ for e in events].index("TextDelta") > [type(e).__name__ for e in events].index(
        "ThinkingDelta"
    )


@pytest.mark.anyio
async def test_usage_and_provider_latency_are_recorded_on_the_call(pool: ThreadPoolExecutor) -> None:
    reply = BedrockReply(text="Done.", input_tokens=25, output_tokens=7, latency_ms=321)
    with FakeBedrock(script=[reply]) as fb:
        stage = llm(fb, pool)
        sink = Sink()
        ctx = CallContext(call_id="llm")

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(UserTurn("Cancel my booking.", 1))
            await wait_until(lambda: sink.done() == [1])

        await Pipeline([stage, sink]).run(ctx, feed)

    usage = ctx.ledger.usage()
    assert usage.tokens == {MODEL: TokenUse(input=25, output=7)}
    assert usage.answered_by == MODEL
    timings = {stage: seconds for stage, seconds, _ in ctx.ledger.samples}
    assert timings[Stage.LLM_PROVIDER_LATENCY] == pytest.approx(0.321)
    assert {Stage.LLM_FIRST_TOKEN, Stage.LLM_FIRST_SENTENCE} <= set(timings)


@pytest.mark.anyio
async def test_blank_text_is_never_sent_and_roles_alternate(pool: ThreadPoolExecutor) -> None:
    # The fake rejects blank blocks and non-alternating roles as Bedrock does.
    history = [
        ChatMessage("assistant", "Hello, you're through to the restaurant."),
        ChatMessage("user", "   "),
        ChatMessage("user", "Hi"),
    ]
    with FakeBedrock(script=[BedrockReply(text="How can I help?")]) as fb:
        stage = llm(fb, pool, history=history)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(UserTurn("I'd like to book.", 1))
            await p.push(UserTurn("  ", 2))
            await wait_until(lambda: sink.done() == [1, 2])

        await Pipeline([stage, sink]).run(CallContext(call_id="llm"), feed)

    assert sink.said(1) == ["How can I help?"]
    for request in fb.requests:
        roles = [m["role"] for m in request.body["messages"]]
        assert roles[0] == "user" and all(a != b for a, b in zip(roles, roles[1:], strict=False))
        assert all(block["text"].strip() for m in request.body["messages"] for block in m["content"])


SCRIPTED_FAILURES = [
    (BedrockReply(status=429, error_type="ThrottlingException"), ThrottledError, True, 2),
    (BedrockReply(status=503, error_type="ServiceUnavailableException"), OverloadedError, True, 2),
    (BedrockReply(status=500, error_type="InternalServerException"), OverloadedError, True, 2),
    (BedrockReply(exception="modelStreamErrorException"), OverloadedError, True, 1),
    (BedrockReply(exception="throttlingException"), ThrottledError, True, 1),
    (BedrockReply(abort=True, exception_after=3), OverloadedError, True, 1),
    (BedrockReply(first_token_delay=1.0), ProviderTimeout, True, 1),
    (BedrockReply(stall_after=2, stall_s=1.0), ProviderTimeout, True, 1),
    (
        BedrockReply(
            status=400,
            error_type="ValidationException",
            error_message="The provided model identifier is invalid.",
        ),
        BadRequestError,
        False,
        1,
    ),
    (BedrockReply(status=403, error_type="AccessDeniedException"), CredentialsError, False, 1),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "error", "retryable", "attempts"),
    SCRIPTED_FAILURES,
    ids=[
        "http-429",
        "http-503",
        "http-500",
        "model-stream-error-frame",
        "throttling-frame",
        "connection-dropped",
        "first-token-deadline",
        "stream-stall",
        "validation",
        "access-denied",
    ],
)
async def test_failures_map_onto_the_error_tree(
    reply: BedrockReply, error: type[ProviderError], retryable: bool, attempts: int, pool: ThreadPoolExecutor
) -> None:
    with FakeBedrock(script=[reply]) as fb:
        # botocore's one in-place retry waits up to 1 s (jittered): leave room for it,
        # except where the deadline itself is under test.
        deadline = 0.5 if error is ProviderTimeout else 2.5
        failing = streamer(fb, pool, first_token_timeout=deadline, stall_timeout=0.3)
        with pytest.raises(error) as caught:
            async for _ in failing.stream_reply(ReplyRequest(SYSTEM, (ChatMessage("user", "Hello"),))):
                pass
    assert caught.value.retryable is retryable
    assert (caught.value.provider, caught.value.region) == ("bedrock", "eu-west-2")
    assert len(fb.requests) == attempts, "botocore retries once at most, and never a bad request"


@pytest.mark.anyio
async def test_a_turn_no_region_answered_asks_the_caller_again_and_the_call_goes_on(
    pool: ThreadPoolExecutor,
) -> None:
    with FakeBedrock(
        script=[BedrockReply(status=429), BedrockReply(status=429), BedrockReply(text="Yes, we're open.")]
    ) as fb:
        stage = llm(fb, pool)
        sink = Sink()
        announce = Announcements()
        ctx = CallContext(call_id="llm", announce=announce)

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(UserTurn("Are you open?", 1))
            await wait_until(lambda: sink.done() == [1])
            await p.push(UserTurn("Are you open today?", 2))
            await wait_until(lambda: sink.done() == [1, 2])

        await Pipeline([stage, sink]).run(ctx, feed)

    assert sink.said(1) == [], "nothing of a failed reply is spoken by the model"
    assert announce.notices == [Notice.RETRY], "the local voice apologises and asks again"
    assert sink.said(2) == ["Yes, we're open."]
    asked = [[block["text"] for block in m["content"]] for m in fb.requests[-1].body["messages"]]
    assert asked == [["Are you open today?"]], "the unanswered question is not asked again with the next one"
    assert ctx.ledger.model_errors == 1
    assert [incident.kind for incident in ctx.ledger.incidents] == [IncidentKind.MODEL_FAILED]


@pytest.mark.anyio
async def test_turns_failing_in_a_row_end_the_call_as_model_unavailable(pool: ThreadPoolExecutor) -> None:
    script = [BedrockReply(status=403, error_type="AccessDeniedException")] * 2
    with FakeBedrock(script=script) as fb:
        stage = llm(fb, pool)
        sink = Sink()
        announce = Announcements()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(UserTurn("Are you open?", 1))
            await wait_until(lambda: sink.done() == [1])
            await p.push(UserTurn("Hello?", 2))
            await anyio.sleep(5)  # the stage ends the call meanwhile

        with pytest.raises(ExceptionGroup) as caught:
            await Pipeline([stage, sink]).run(CallContext(call_id="llm", announce=announce), feed)
    ended = caught.value.subgroup(CallEnded)
    assert ended is not None
    [error] = ended.exceptions
    assert isinstance(error, CallEnded) and error.reason is EndReason.MODEL_UNAVAILABLE
    assert announce.notices == [Notice.RETRY], "asked again once; the second failure ends the call"


@pytest.mark.anyio
async def test_barge_in_cancels_the_reply_in_flight(pool: ThreadPoolExecutor) -> None:
    long = "Let me read you the whole menu. " + " ".join(f"Dish {i} is lovely." for i in range(40))
    with FakeBedrock(
        script=[BedrockReply(text=long, chunk_chars=6, chunk_delay=0.01), BedrockReply(text="Of course.")]
    ) as fb:
        stage = llm(fb, pool)
        sink = Sink()

        async def feed(p: Pipeline, tg: TaskGroup) -> None:
            await p.push(UserTurn("What's on the menu?", 1))
            await wait_until(lambda: bool(sink.said(1)))
            await p.push(Interruption(at=time.monotonic()))
            spoken = len(sink.said(1))
            await anyio.sleep(0.1)
            assert len(sink.said(1)) == spoken, "nothing more of the interrupted reply"
            await p.push(UserTurn("Just the specials, please.", 2))
            await wait_until(lambda: sink.done() == [2])

        await Pipeline([stage, sink]).run(CallContext(call_id="llm"), feed)

    assert sink.done() == [2], "the interrupted turn is not reported done"
    assert any(isinstance(f, Interruption) for f in sink.frames)
    assert not fb.requests[0].finished, "the HTTP stream was closed early"
    history = fb.requests[1].body["messages"]
    assert history[1]["role"] == "assistant" and history[1]["content"][0]["text"].startswith("Let me read")


def test_missing_aws_credentials_are_a_clear_error_when_the_client_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CredentialsError, match="no AWS credentials"):
        bedrock_client("eu-west-2", "http://127.0.0.1:9")


def test_clients_have_the_hot_path_settings() -> None:
    client = bedrock_client("us-east-1", "http://127.0.0.1:9", read_timeout=2.0)
    config = client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert (config.connect_timeout, config.read_timeout, config.tcp_keepalive) == (1.0, 2.0, True)
    assert bedrock_client("us-east-1", "http://127.0.0.1:9", read_timeout=2.0) is not client, (
        "no module cache: the process's engines keep the clients")


def test_the_process_keeps_one_client_per_region_and_endpoint() -> None:
    engines = Engines(Settings(llm="bedrock"))
    try:
        client = engines.bedrock("us-east-1", "http://127.0.0.1:9", read_timeout=2.0)
        assert engines.bedrock("us-east-1", "http://127.0.0.1:9", read_timeout=2.0) is client
        assert engines.bedrock("eu-west-2", "http://127.0.0.1:9", read_timeout=2.0) is not client
        assert client.meta.region_name == "us-east-1"
    finally:
        engines.close()


@pytest.mark.anyio
async def test_the_standard_endpoint_variable_points_the_client_elsewhere(
    monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor
) -> None:
    with FakeBedrock(script=[BedrockReply(text="Hi.")]) as fb:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fb.url)
        sonnet = BedrockStreamer(region="us-west-2", model_id="us.anthropic.claude-sonnet-4-6",
                                 client=bedrock_client("us-west-2"), pool=pool)
        events = [e async for e in sonnet.stream_reply(ReplyRequest(SYSTEM, (ChatMessage("user", "Hi"),)))]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hi."]
    assert fb.requests[0].model_id == "us.anthropic.claude-sonnet-4-6"


@pytest.mark.anyio
async def test_a_stalled_stream_is_abandoned_without_freezing_the_event_loop(pool: ThreadPoolExecutor) -> None:
    # A blackholed or hung region: the reader thread sits in recv() until the
    # read timeout. Giving up on it must not block the loop other calls run on.
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    with FakeBedrock(script=[BedrockReply(text="One two three four five.", stall_after=1, stall_s=6.0)]) as fb:
        stalled = streamer(fb, pool, first_token_timeout=5.0, stall_timeout=0.3)
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            started = time.monotonic()
            with pytest.raises(ProviderTimeout):
                async for _ in stalled.stream_reply(ReplyRequest(SYSTEM, (ChatMessage("user", "Hi"),))):
                    pass
            await anyio.sleep(0.3)  # the abandoned reader winds down meanwhile
            tg.cancel_scope.cancel()
    assert time.monotonic() - started < 3.0
    assert max(gaps) < 1.0, f"event loop blocked for {max(gaps):.2f} s"
