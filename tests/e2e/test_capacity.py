"""The capacity settings in the assembled server: the float-softmax smart-turn graph ends a caller's turn.

``AYBIZA_SMART_TURN_FLOAT_SOFTMAX=true`` (docs/capacity.md §3) loads the
rewritten end-of-turn graph; a Twilio-shaped call on the production providers
(the Deepgram and Bedrock fakes over real sockets) still has its question's
end found and answered.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aybiza.testing.caller import Say, Wait, caller_speech, place_call
from aybiza.testing.fake_bedrock import BedrockReply, FakeBedrock
from aybiza.testing.fake_deepgram import FakeDeepgram

from .server import AUTH_TOKEN, Server, running_server

pytestmark = pytest.mark.slow

ANSWER = "We are open Monday to Friday from eight to six."


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeDeepgram, FakeBedrock]]:
    with FakeDeepgram(transcripts=["what are your opening hours"]) as deepgram, \
            FakeBedrock(script=[BedrockReply(text=ANSWER, input_tokens=100, output_tokens=12)]) as bedrock:
        yield deepgram, bedrock


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeDeepgram, FakeBedrock]) -> Iterator[Server]:
    deepgram, bedrock = fakes
    env = {
        "AYBIZA_STT": "deepgram", "AYBIZA_LLM": "bedrock", "AYBIZA_TTS": "deepgram",
        "DEEPGRAM_API_KEY": "test-key", "AYBIZA_DEEPGRAM_URL": deepgram.url,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.url, "AWS_ACCESS_KEY_ID": "AKIDTEST",
        "AWS_SECRET_ACCESS_KEY": "secret", "AWS_EC2_METADATA_DISABLED": "true",
        "AYBIZA_HEALTH_PROBES": "false", "AYBIZA_END_OF_TURN": "balanced",
        "AYBIZA_SMART_TURN_FLOAT_SOFTMAX": "true",
    }
    with running_server(tmp_path_factory.mktemp("capacity"), env) as running:
        yield running


@pytest.mark.anyio
async def test_the_float_softmax_graph_ends_the_turn_and_the_question_is_answered(
    server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, _ = fakes
    report = await place_call(server.stream_url, [Wait(12), Say(caller_speech("what are your opening hours")),
                                                  Wait(12)], auth_token=AUTH_TOKEN)
    assert report.close_code == 1000
    assert report.turns and report.turns[0].latency is not None, "the caller's turn ended and was answered"
    assert report.turns[0].latency < 3.0  # ended by the model or the 1.3 s silence limit, not a holding line
    assert "Finalize" in deepgram.listens[0].types()
    texts = " ".join(t for session in deepgram.speaks for t in session.texts)
    assert "Monday to Friday" in texts
