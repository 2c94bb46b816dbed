"""The call ledger: samples tagged with their turn, a typed usage snapshot, a sink told as things happen."""

from __future__ import annotations

import pytest

from aybiza.observability.metrics import STAGES, Metrics
from aybiza.pipeline import CacheKind, CallLedger, IncidentKind, Stage, Usage
from aybiza.pipeline.ledger import CacheUse, Incident, TokenUse
from aybiza.testing.kit import VirtualClock


class RecordingSink:
    """A LedgerSink that keeps what it was told, in order."""

    def __init__(self) -> None:
        self.told: list[tuple[object, ...]] = []

    def timing(self, stage: Stage, seconds: float) -> None:
        self.told.append(("timing", stage, seconds))

    def cache(self, kind: CacheKind, hit: bool) -> None:
        self.told.append(("cache", kind, hit))

    def failover(self, from_region: str, to_region: str) -> None:
        self.told.append(("failover", from_region, to_region))

    def incident(self, kind: IncidentKind) -> None:
        self.told.append(("incident", kind))


def test_a_sample_belongs_to_the_turn_being_answered_and_stt_final_to_the_next() -> None:
    ledger = CallLedger()
    ledger.time(Stage.TTS_FIRST_BYTE, 0.12)  # the greeting's audio: turn 0
    ledger.time(Stage.STT_FINAL, 0.2)  # the caller's first turn recognised: it belongs to turn 1
    ledger.turn = 1  # turn-taking: the caller's turn 1 is complete
    ledger.time(Stage.LLM_FIRST_TOKEN, 0.35)
    ledger.time(Stage.TTS_FIRST_BYTE, 0.1)
    ledger.time(Stage.VOICE_TO_VOICE, 0.8)
    ledger.time(Stage.TTS_FIRST_BYTE, 0.4)  # a second sample of the same stage in a turn

    assert ledger.samples == [
        (Stage.TTS_FIRST_BYTE, 0.12, 0),
        (Stage.STT_FINAL, 0.2, 1),
        (Stage.LLM_FIRST_TOKEN, 0.35, 1),
        (Stage.TTS_FIRST_BYTE, 0.1, 1),
        (Stage.VOICE_TO_VOICE, 0.8, 1),
        (Stage.TTS_FIRST_BYTE, 0.4, 1),
    ]
    assert ledger.timings(0) == {"tts_first_byte": 0.12}
    assert ledger.timings(1) == {"stt_final": 0.2, "llm_first_token": 0.35, "tts_first_byte": 0.1,
                                 "voice_to_voice": 0.8}, "the first sample of each stage in the turn"
    assert ledger.timings(2) == {}


def test_only_stt_final_is_measured_before_the_turn() -> None:
    assert [stage for stage in Stage if stage.before_turn] == [Stage.STT_FINAL]


def test_usage_is_a_typed_snapshot_of_everything_counted() -> None:
    ledger = CallLedger()
    ledger.add_tokens("claude-haiku", 100, 20)
    ledger.add_tokens("claude-haiku", 50, 5)
    ledger.add_tokens("claude-sonnet", 10, 1)
    ledger.add_stt("nova-3", 1.25)
    ledger.add_stt("nova-3", 0.5)
    ledger.add_stt("whisper", 2.0)
    ledger.add_tts("aura-2", 40)
    ledger.add_tts("aura-2", 2)
    ledger.add_audio(3.0)
    ledger.add_audio(0.0004)
    ledger.add_gated(1.5)
    ledger.cache(CacheKind.ANSWER, True)
    ledger.cache(CacheKind.ANSWER, False)
    ledger.cache(CacheKind.AUDIO, True)
    ledger.answered("claude-haiku")
    ledger.answered("claude-haiku")
    ledger.answered("cache")
    ledger.interruptions += 2
    ledger.stt_reconnects += 1
    ledger.model_errors += 1
    ledger.failover("eu-west-2", "eu-central-1")

    usage = ledger.usage()
    assert isinstance(usage, Usage)
    assert usage.tokens == {"claude-haiku": TokenUse(input=150, output=25),
                            "claude-sonnet": TokenUse(input=10, output=1)}
    assert usage.stt_seconds == {"nova-3": 1.75, "whisper": 2.0}
    assert usage.tts_chars == {"aura-2": 42}
    assert (usage.audio_seconds, usage.gated_seconds) == (3.0, 1.5), "rounded to the millisecond"
    assert usage.cache == {CacheKind.ANSWER: CacheUse(hits=1, misses=1), CacheKind.AUDIO: CacheUse(hits=1, misses=0)}
    assert usage.cache_hits(CacheKind.ANSWER) == 1 and usage.cache_hits(CacheKind.AGENT) == 0
    assert ledger.cache_hits(CacheKind.AUDIO) == 1
    assert usage.answers == {"claude-haiku": 2, "cache": 1} and usage.answered_by == "claude-haiku"
    assert (usage.interruptions, usage.stt_reconnects, usage.model_errors) == (2, 1, 1)
    assert usage.failovers == [("eu-west-2", "eu-central-1")]


def test_a_snapshot_does_not_change_when_the_call_goes_on() -> None:
    ledger = CallLedger()
    ledger.add_tokens("m", 1, 1)
    before = ledger.usage()
    ledger.add_tokens("m", 1, 1)
    ledger.failover("a", "b")
    assert before.tokens == {"m": TokenUse(input=1, output=1)} and before.failovers == []
    assert ledger.usage().tokens == {"m": TokenUse(input=2, output=2)}


def test_usage_survives_a_round_trip_through_json() -> None:
    ledger = CallLedger()
    ledger.add_tokens("m", 3, 4)
    ledger.cache(CacheKind.AUDIO, False)
    ledger.failover("x", "y")
    usage = ledger.usage()
    assert Usage.model_validate_json(usage.model_dump_json()) == usage


def test_an_empty_call_answered_nothing() -> None:
    usage = CallLedger().usage()
    assert usage == Usage() and usage.answered_by == "none"


def test_incidents_say_what_and_when() -> None:
    clock = VirtualClock()
    ledger = CallLedger(clock=clock)
    clock.advance(2.5)
    ledger.incident(IncidentKind.STT_FALLBACK, "stt-deepgram: OverloadedError: unreachable")
    clock.advance(1.0)
    ledger.incident(IncidentKind.MODEL_FAILED, "x" * 800)
    first, second = ledger.incidents
    assert first == Incident(kind=IncidentKind.STT_FALLBACK, detail="stt-deepgram: OverloadedError: unreachable",
                             at_s=2.5)
    assert second.kind is IncidentKind.MODEL_FAILED and second.at_s == 3.5
    assert len(second.detail) == 500, "a detail is kept short"
    assert ledger.elapsed() == pytest.approx(3.5)


def test_the_sink_is_told_of_timings_cache_lookups_failovers_and_incidents_as_they_happen() -> None:
    sink = RecordingSink()
    ledger = CallLedger(sink)
    ledger.time(Stage.STT_FINAL, 0.2)
    ledger.cache(CacheKind.ANSWER, True)
    ledger.failover("us-east-1", "us-west-2")
    ledger.incident(IncidentKind.TTS_FALLBACK, "aura refused")
    ledger.add_tokens("m", 1, 1)  # usage is read at the end, not streamed
    ledger.add_audio(0.02)
    assert sink.told == [
        ("timing", Stage.STT_FINAL, 0.2),
        ("cache", CacheKind.ANSWER, True),
        ("failover", "us-east-1", "us-west-2"),
        ("incident", IncidentKind.TTS_FALLBACK),
    ]


def test_a_ledger_without_a_sink_records_all_the_same() -> None:
    ledger = CallLedger()
    ledger.time(Stage.EDGE_FRAME, 0.001)
    ledger.cache(CacheKind.AGENT, False)
    ledger.incident(IncidentKind.STAGE_FAILED)
    assert ledger.samples == [(Stage.EDGE_FRAME, 0.001, 0)]
    assert ledger.usage().cache == {CacheKind.AGENT: CacheUse(hits=0, misses=1)}
    assert [incident.kind for incident in ledger.incidents] == [IncidentKind.STAGE_FAILED]


def test_the_process_metrics_see_a_call_while_it_runs() -> None:
    metrics = Metrics()
    ledger = CallLedger(metrics)
    for stage in Stage:
        ledger.time(stage, 0.05)
    ledger.cache(CacheKind.ANSWER, True)
    ledger.cache(CacheKind.AUDIO, False)
    ledger.failover("eu-west-2", "eu-central-1")
    ledger.incident(IncidentKind.STT_FALLBACK)

    snapshot = metrics.snapshot()
    assert set(STAGES) <= {stage.value for stage in Stage}, "every latency metric is a stage the ledger measures"
    assert {name: snapshot["latency"][name]["count"] for name in STAGES} == dict.fromkeys(STAGES, 1)
    assert snapshot["cache"]["namespaces"] == {
        "llm": {"hits": 1, "misses": 0, "hit_ratio": 1.0}, "tts": {"hits": 0, "misses": 1, "hit_ratio": 0.0}}
    assert snapshot["failovers"] == 1
    assert snapshot["incidents"] == {"stt_fallback": 1}


def test_tool_calls_are_opened_then_closed_per_turn_and_counted() -> None:
    clock = VirtualClock()
    ledger = CallLedger(clock=clock)
    use = ledger.tool_started(2, "order_status", "http", {"order_id": "4321"})
    assert ledger.tool_calls == 1 and use.outcome == "running"  # counted from the start: the turn is not cached
    clock.advance(0.25)
    ledger.tool_ended(use, "ok", result={"status": "shipped"})
    [kept] = ledger.tool_uses(2)
    assert (kept.outcome, kept.result, kept.duration_ms) == ("ok", {"status": "shipped"}, 250.0)
    assert ledger.tool_uses(3) == [] and ledger.usage().tools == {"order_status": 1}


def test_typed_digits_are_masked_wherever_they_are_written() -> None:
    ledger = CallLedger()
    use = ledger.tool_started(1, "lookup", "http", {"account": "40021234", "note": "card 4002 1234"})
    ledger.tool_ended(use, "ok", result={"account": 40021234, "balance": 42})
    assert ledger.redact("account 40021234") == "account 40021234", "nothing is secret until typed"
    ledger.secret("40021234")
    assert ledger.redact("Account 4 0 0 2 1 2 3 4, or 4002-1234.") == "Account • • • • • • • •, or ••••-••••."
    [kept] = ledger.tool_uses(1)
    assert kept.arguments == {"account": "••••••••", "note": "card •••• ••••"}
    assert kept.result == {"account": "••••••••", "balance": 42}
    assert use.arguments["account"] == "40021234", "the model and the tools still get the real digits"


def test_a_failover_is_placed_in_its_turn_for_the_console_timeline() -> None:
    from aybiza.pipeline.ledger import CallLedger

    clock = iter([0.0, 4.25, 9.0]).__next__
    ledger = CallLedger(clock=clock)
    ledger.turn = 2
    ledger.failover("eu-west-2", "eu-central-1")
    ledger.failover("eu-central-1", "us-east-1")  # the same turn: the first one placed
    assert ledger.failover_at(2) == 4.25 and ledger.failover_at(1) is None
    assert "failover_at_s" not in ledger.timings(2)  # timings stay latencies
    assert ledger.usage().failovers == [("eu-west-2", "eu-central-1"), ("eu-central-1", "us-east-1")]
