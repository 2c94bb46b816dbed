"""Summaries and fields: extractive on the embedded stack, from the model's JSON where one is configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from aybiza.agents import load_agent
from aybiza.config import Settings
from aybiza.edge.records import CallRecord, TurnRecord
from aybiza.results.delivery import RetryPolicy
from aybiza.results.model_summary import model_summarizer, parse_results
from aybiza.results.spec import WebhookSpec
from aybiza.results.summary import extractive_results
from aybiza.testing.fake_bedrock import BedrockReply, FakeBedrock
from aybiza.testing.fake_openai import ChatReply, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
SPEC = WebhookSpec(url="https://crm.example.com/hook", secret="CRM_HOOK",
                   fields=["reason_for_call", "callback_number", "email", "account_type"])  # type: ignore[arg-type]


def _record() -> CallRecord:
    agent = load_agent("default", ROOT / "agents")
    hours = next(faq for faq in agent.faqs if faq.id == "opening_hours")
    parking_es = agent.translations["es"].faqs["parking"].answer
    return CallRecord(call_id="CA1", caller="+15555550123", outcome="hangup", turns=[
        TurnRecord(turn_id=0, agent="Hello."),
        TurnRecord(turn_id=1, user="when are you open", agent=hours.answer),
        TurnRecord(turn_id=2, user="¿hay aparcamiento?", agent=parking_es),
        TurnRecord(turn_id=3, user="call me back on 603 555 0199 or at ann@example.com", agent="Sure."),
    ])


def test_the_extractive_summary_names_the_faq_topics_in_any_language_and_fills_known_fields() -> None:
    agent = load_agent("default", ROOT / "agents")
    results = extractive_results(_record(), agent, SPEC)
    assert results.source == "extractive"
    assert "our opening hours" in results.summary and "parking" in results.summary and "hangup" in results.summary
    assert results.fields == {"reason_for_call": "our opening hours", "callback_number": "6035550199",
                              "email": "ann@example.com", "account_type": None}


def test_without_a_number_said_the_callback_number_is_the_callers() -> None:
    record = CallRecord(call_id="CA2", caller="+15555550123", turns=[TurnRecord(turn_id=1, user="hello")])
    results = extractive_results(record, None, SPEC)
    assert results.fields["callback_number"] == "+15555550123"
    assert results.fields["reason_for_call"] == "hello"


def test_the_models_json_answer_is_read_and_anything_else_is_refused() -> None:
    results = parse_results('Sure! {"summary": "Asked about hours.", "fields": {"reason_for_call": "hours", '
                            '"callback_number": "null"}}', SPEC, "model:x")
    assert results.summary == "Asked about hours."
    assert results.fields == {"reason_for_call": "hours", "callback_number": None, "email": None,
                              "account_type": None}
    with pytest.raises(ValueError):
        parse_results("I cannot do that.", SPEC, "model:x")
    with pytest.raises(ValueError):
        parse_results('{"fields": {}}', SPEC, "model:x")


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    policy = RetryPolicy(base_s=2, max_s=60)
    for attempt, ceiling in ((1, 2), (2, 4), (3, 8), (6, 60), (20, 60)):
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


@pytest.mark.anyio
async def test_an_openai_compatible_model_is_asked_once_not_streamed_for_json(tmp_path: Path) -> None:
    answer = '{"summary": "The caller asked when the practice opens.", "fields": {"reason_for_call": "hours"}}'
    with FakeOpenAI([ChatReply(text=answer)]) as openai:
        settings = Settings(llm="openai", openai_base_url=openai.url + "/v1", data_dir=tmp_path)
        summarize = model_summarizer(settings, None)
        assert summarize is not None
        results = await summarize(_record(), None, SPEC)
    [request] = openai.requests
    assert request["stream"] is False and request["response_format"] == {"type": "json_object"}
    assert "when are you open" in request["messages"][1]["content"]
    assert "callback_number" in request["messages"][1]["content"]
    assert results.source == "model:llama3.2"
    assert results.fields["reason_for_call"] == "hours"


@pytest.mark.anyio
async def test_bedrock_converse_is_asked_once_and_a_failure_falls_back_to_the_extractive_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aybiza.engines import Engines

    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    answer = '{"summary": "Hours and parking.", "fields": {"reason_for_call": "opening hours"}}'
    with FakeBedrock([BedrockReply(text=answer), BedrockReply(status=400, error_type="ValidationException")],
                     ) as bedrock:
        settings = Settings(llm="bedrock", bedrock_endpoint_url=bedrock.url, data_dir=tmp_path)
        engines = Engines(settings)
        try:
            summarize = model_summarizer(settings, engines)
            assert summarize is not None
            first = await summarize(_record(), None, SPEC)
            second = await summarize(_record(), None, SPEC)
        finally:
            engines.close()
    assert [r.path.rsplit("/", 1)[-1] for r in bedrock.requests] == ["converse", "converse"]
    assert first.source.startswith("model:") and first.summary == "Hours and parking."
    assert second.source == "extractive" and second.fields["callback_number"] == "6035550199"
