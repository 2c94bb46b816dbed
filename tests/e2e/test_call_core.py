"""The call core through a real server on the production providers (Deepgram, Bedrock, Aura via the shipped fakes).

One server, run as ``aybiza serve`` runs it, with the real deepgram-sdk and
boto3 pointed at local fakes that speak their wire protocols. The tests
place Twilio-shaped calls (and a browser-shaped one) and check what the
providers were asked, what the caller heard, what the record says and what
the metrics show: the language reaches the recogniser, the ledger feeds every
series the dashboard and alerts read, the cost budget steps the model down.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from aybiza.codecs import ulaw2lin
from aybiza.testing.browser_caller import place_browser_call
from aybiza.testing.caller import Say, Wait, caller_speech, place_call
from aybiza.testing.fake_bedrock import BedrockReply, FakeBedrock
from aybiza.testing.fake_deepgram import FakeDeepgram
from aybiza.testing.metrics import metric

from .conftest import ROOT, agents_dir
from .server import AUTH_TOKEN, Server, running_server

pytestmark = pytest.mark.slow

ANSWER = "We are open Monday to Friday from eight to six. Is there anything else?"
PREMIUM = "us.anthropic.claude-sonnet-4-6"


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeDeepgram, FakeBedrock]]:
    with FakeDeepgram(transcripts=["what are your opening hours"]) as deepgram, \
            FakeBedrock(script=[BedrockReply(text=ANSWER, input_tokens=120, output_tokens=18)]) as bedrock:
        yield deepgram, bedrock


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeDeepgram, FakeBedrock]) -> Iterator[Server]:
    deepgram, bedrock = fakes
    tmp = tmp_path_factory.mktemp("core")
    # 120 input + 18 output tokens on the premium model cost about $0.00063: past this budget after one turn.
    agents = agents_dir(tmp, budget={"cost_budget_usd": 0.0005})
    (agents / "broken.yaml").write_text("id: broken\ngreeting: [never closed\n")
    env = {
        "AYBIZA_STT": "deepgram", "AYBIZA_LLM": "bedrock", "AYBIZA_TTS": "deepgram",
        "DEEPGRAM_API_KEY": "test-key", "AYBIZA_DEEPGRAM_URL": deepgram.url,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.url, "AWS_ACCESS_KEY_ID": "AKIDTEST",
        "AWS_SECRET_ACCESS_KEY": "secret", "AWS_EC2_METADATA_DISABLED": "true",
        "AYBIZA_AGENTS_DIR": str(agents),
    }
    with running_server(tmp, env) as running:
        yield running



@pytest.mark.anyio
async def test_a_spanish_number_makes_deepgram_listen_in_spanish_from_the_first_word(
    server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, bedrock = fakes
    deepgram.rescript(["a qué hora abren los sábados"])
    listens = len(deepgram.listens)
    report = await place_call(server.stream_url, [Wait(8), Say(caller_speech("a que hora abren", language="es")),
                                                  Wait(10)], auth_token=AUTH_TOKEN, caller="+34912345678")
    assert report.close_code == 1000
    first = deepgram.listens[listens]
    assert first.query["language"] == "es"  # the number's prior, before anyone spoke
    record = await server.record(report.call_sid)
    assert record["language"] == "es" and record["caller_country"] == "ES"
    assert "sábados" in bedrock.turns()[-1].body["messages"][-1]["content"][0]["text"]


@pytest.mark.anyio
async def test_a_language_change_mid_call_switches_the_recogniser(
    server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, _ = fakes
    deepgram.rescript(["Hola, quisiera saber a qué hora abren ustedes los sábados por la mañana",
                       "gracias"])
    listens = len(deepgram.listens)
    report = await place_call(
        server.stream_url,
        [Wait(8), Say(caller_speech("hola quisiera saber a que hora abren", language="es")), Wait(10),
         Say(caller_speech("gracias", language="es")), Wait(8)],
        auth_token=AUTH_TOKEN, caller="+12025550123")
    sessions = deepgram.listens[listens:]
    assert sessions[0].query["language"] == "en-US"  # a US number: English first
    assert any(s.query["language"] == "es" for s in sessions[1:])  # the language stage steered the recogniser
    switched = next(s for s in sessions[1:] if s.query["language"] == "es")
    assert len(switched.audio) > 0  # the conversation went on in Spanish on the new socket
    record = await server.record(report.call_sid)
    assert record["language"].startswith("es")
    assert record["outcome"] == "hangup" and not record["incidents"]


@pytest.mark.anyio
async def test_a_cached_answer_moves_the_cache_series_and_the_dashboard_ratio(
    server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, bedrock = fakes
    deepgram.rescript(["what are your opening hours", "what are your opening hours"])
    question = caller_speech("what are your opening hours")
    async with httpx.AsyncClient(timeout=5) as client:
        before = (await client.get(f"{server.http}/metrics")).text
        turns = len(bedrock.turns())
        for _ in range(2):  # the first call stores the answer, the second is served from the cache
            report = await place_call(server.stream_url, [Wait(8), Say(question), Wait(10)], auth_token=AUTH_TOKEN)
            assert report.turns and report.turns[0].latency is not None
        after = (await client.get(f"{server.http}/metrics")).text
        dashboard = (await client.get(f"{server.http}/api/dashboard")).json()
        page = (await client.get(f"{server.http}/dashboard")).text
    assert len(bedrock.turns()) == turns + 1  # the second answer never reached the model
    assert metric(after, "aybiza_cache_requests_total", namespace="llm", result="hit") > metric(
        before, "aybiza_cache_requests_total", namespace="llm", result="hit")
    assert metric(after, "aybiza_cache_requests_total", namespace="llm", result="miss") > 0
    ratio = dashboard["cache"]["namespaces"]["llm"]["hit_ratio"]
    assert ratio is not None and 0 < ratio < 1
    assert "llm" in page and "%" in page
    record = await server.record(report.call_sid)
    assert record["usage"]["answers"] == {"cache": 1}
    assert record["turns"][-1]["cached"] == ["llm"], record["turns"]


@pytest.mark.anyio
async def test_a_call_past_its_budget_steps_down_a_model(
    server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, bedrock = fakes
    deepgram.rescript(["where are you located", "what are your opening hours"])
    turns = len(bedrock.turns())
    report = await place_call(  # clean audio in English: the premium tier, unless the budget says otherwise
        server.stream_url,
        [Wait(8), Say(caller_speech("where are you located")), Wait(10),
         Say(caller_speech("what are your opening hours")), Wait(10)],
        auth_token=AUTH_TOKEN, agent="budget")
    models = [request.model_id for request in bedrock.turns()[turns:]]
    assert len(models) == 2 and models[0] == PREMIUM
    assert models[1] != PREMIUM and "haiku" in models[1]  # the cheapest tier once the budget was spent
    record = await server.record(report.call_sid)
    assert set(record["usage"]["tokens"]) == set(models)


@pytest.mark.anyio
async def test_a_region_failure_mid_call_is_answered_elsewhere_and_counted(
    server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, bedrock = fakes
    deepgram.rescript(["do you see children as well"])  # a question nobody asked before: no cached answer
    unavailable = BedrockReply(status=503, error_type="ServiceUnavailableException")
    # botocore retries once in place (two attempts per region), then the turn moves to the next region.
    bedrock.rescript([unavailable, unavailable, BedrockReply(text="Yes, we see children of every age.")])
    try:
        report = await place_call(server.stream_url, [Wait(8), Say(caller_speech("do you see children as well")),
                                                      Wait(10)], auth_token=AUTH_TOKEN)
    finally:
        bedrock.rescript([BedrockReply(text=ANSWER, input_tokens=120, output_tokens=18)])
    record = await server.record(report.call_sid)
    assert len(record["usage"]["failovers"]) == 1
    tried = record["route"]["regions_tried"].split(",")
    assert len(tried) == 2 and record["usage"]["failovers"][0] == tried


@pytest.mark.anyio
async def test_a_browser_call_runs_the_same_session(server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]) -> None:
    deepgram, bedrock = fakes
    deepgram.rescript(["where do I park"])
    listens, turns = len(deepgram.listens), len(bedrock.turns())
    question = ulaw2lin(caller_speech("where do I park"))
    report = await place_browser_call(server.http, question, 8000, language="es-ES", lead_s=4.0, listen_s=6.0)
    assert report.status == 200
    session = deepgram.listens[listens]
    assert session.query["encoding"] == "linear16" and session.query["sample_rate"] == "16000"
    assert session.query["language"] == "es"  # the browser's language is the call's prior
    assert len(bedrock.turns()) == turns + 1
    assert {"call", "route", "transcript", "agent_text", "end"} <= set(report.event_types())
    record = await server.record(report.call_id)
    assert record["transport"] == "webrtc" and record["outcome"] == "hangup"
    assert record["turns"] and record["turns"][-1]["user"] == "where do I park"


def _series(path: Path) -> set[str]:
    return set(re.findall(r"aybiza_[a-z_]+", path.read_text()))


@pytest.mark.anyio
async def test_every_series_the_dashboard_and_the_alerts_read_has_data(server: Server) -> None:
    observability = ROOT / "aybiza" / "observability"
    used = _series(observability / "grafana" / "aybiza.json") | _series(observability / "prometheus" / "alerts.yml")
    # A call that ends on a failure (its agent's file is broken) feeds the error series.
    report = await place_call(server.stream_url, [Wait(6)], auth_token=AUTH_TOKEN, agent="broken")
    assert report.close_code == 1000
    record = await server.record(report.call_sid)
    assert record["outcome"] == "agent_unavailable"
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(50):  # region health and latency are exported every 2 s
            text = (await client.get(f"{server.http}/metrics")).text
            if "aybiza_region_latency_seconds{" in text:
                break
            await anyio.sleep(0.2)
    empty = []
    for name in sorted(used):
        sample = f"{name.removesuffix('_bucket')}_count" if name.endswith("_bucket") else name
        if name in ("aybiza_active_calls", "aybiza_region_health", "aybiza_refused_total",
                    "aybiza_media_dropped_frames_total",  # 0 is a value (no call was refused, none flooded)
                    # no agent here has a webhook, and these calls' finals follow the end of turn: the counts
                    # move in test_post_call_webhook.py and test_preempt_traces.py
                    "aybiza_webhook_deliveries_total", "aybiza_preemptions_total",
                    # a lone node that is not draining: they move in test_drain_alone.py and test_cluster.py
                    "aybiza_node_draining", "aybiza_cluster_nodes", "aybiza_reaped_calls_total"):
            present = re.search(rf"^{name}(\{{[^}}]*\}})? ", text, re.MULTILINE) is not None
        else:
            present = metric(text, sample) > 0
        if not present:
            empty.append(name)
    assert not empty, f"series with no data after real calls: {empty}\n{text}"
    assert metric(text, "aybiza_tts_first_byte_seconds_count") > 0  # Aura's first byte is measured
    assert metric(text, "aybiza_calls_total", model=PREMIUM) > 0  # the model that answered, not "local"
    assert metric(text, "aybiza_errors_total", kind="agent_unavailable") == 1
