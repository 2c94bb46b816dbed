"""Traces: off without an OTLP endpoint (no tap in the call), the stages end to end, the spans' structure."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aybiza.codecs import lin2ulaw
from aybiza.config import Settings
from aybiza.observability import tracing
from aybiza.observability.tracing import TraceTap, TurnMarks, stage_spans
from aybiza.pipeline import (
    AgentText,
    CallContext,
    CallLedger,
    Frame,
    InputAudio,
    Interruption,
    Pipeline,
    SpeechStopped,
    Stage,
    Transcript,
)
from aybiza.routing.service import RoutingService
from aybiza.stack import SpeechStack
from aybiza.testing.kit import run_stage
from aybiza.testing.scripted import ScriptedTimings, bench_agent, scripted_engines, scripted_settings

_OTEL_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
              "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_SERVICE_NAME")


def test_off_unless_an_otlp_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    assert not tracing.enabled(Settings())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.enabled(Settings())
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.enabled(Settings())


def test_the_standard_otel_variables_are_settings_passed_to_the_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=k%3D1,tenant=ops")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "voice-eu")
    settings = Settings()
    assert (settings.otel_endpoint, settings.otel_service_name) == ("http://collector:4318/", "voice-eu")
    assert tracing.otlp_target(settings) == tracing.OtlpTarget(
        "http://collector:4318/v1/traces", (("tenant", "ops"), ("x-api-key", "k=1")), "voice-eu")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example.com/ingest")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer%20t")
    target = tracing.otlp_target(Settings())
    assert target is not None and target.endpoint == "https://traces.example.com/ingest"  # used as given
    assert target.headers == (("authorization", "Bearer t"),)  # the traces headers win over the general ones
    assert Settings(otel_endpoint="http://127.0.0.1:4318", otel_sdk_disabled=True).otel_sdk_disabled
    assert tracing.otlp_target(Settings(otel_endpoint="http://127.0.0.1:4318", otel_sdk_disabled=True)) is None


def test_the_call_has_a_tap_only_when_traces_are_on_and_it_stands_where_no_audio_flows(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)

    def build() -> list[str]:
        settings = scripted_settings(data_dir=tmp_path)
        routing = RoutingService.from_settings(settings)
        stack = SpeechStack(settings, scripted_engines(settings), routing=routing)
        ctx = CallContext(call_id="CAtap", caller="+447700900123")
        processors, _ = stack.build(ctx, bench_agent(), call_routing=routing.call_routing(ctx.caller))
        return [type(p).__name__ for p in processors]

    assert "TraceTap" not in build()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    names = build()
    assert names.index("TraceTap") == names.index("PreemptiveReplies") + 1  # after the recogniser ate the audio


def test_stages_lie_end_to_end_from_the_end_of_speech_to_the_first_audio() -> None:
    waiting = TurnMarks(speech_end=10.0, confirmed=10.4, final=10.55, first_text=10.91)
    spans = stage_spans(waiting, first_audio=11.02)
    assert [name for name, _, _ in spans] == ["end_of_turn", "stt", "model", "tts"]
    assert spans[0][1] == 10.0 and spans[-1][2] == 11.02
    assert all(a[2] == b[1] for a, b in zip(spans, spans[1:], strict=False))
    preempted = TurnMarks(speech_end=10.0, final=10.15, confirmed=10.4, first_text=10.51)
    assert [name for name, _, _ in stage_spans(preempted, first_audio=10.61)] == ["stt", "end_of_turn", "model",
                                                                                  "tts"]


@pytest.mark.anyio
async def test_a_calls_spans_nest_call_turn_stages_with_barge_in_and_tool_calls() -> None:
    ledger = CallLedger()
    ctx = CallContext(call_id="CAspans", ledger=ledger)
    tap = TraceTap()
    now = time.monotonic()
    frames = [InputAudio(b"\x00" * 320, 8000, now), SpeechStopped(at=now), Transcript("hi", final=True),
              AgentText("Hello.", 1)]
    out = await run_stage([tap], frames, ctx=ctx)
    assert out.of(InputAudio) and 1 in tap.turns
    ledger.turn = 1
    ledger.time(Stage.VOICE_TO_VOICE, 0.6)
    ledger.time(Stage.LLM_FIRST_TOKEN, 0.3)
    ledger.time(Stage.LLM_FIRST_SENTENCE, 0.31)
    use = ledger.tool_started(1, "order_status", "http", {})
    ledger.tool_ended(use, "ok")
    await run_stage([tap], [Interruption(at=time.monotonic())], ctx=ctx)

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tap.export(ctx, provider.get_tracer("test"))
    spans = {span.name: span for span in exporter.get_finished_spans()}
    call, turn = spans["call"], spans["turn"]
    assert call.context is not None and turn.context is not None
    assert call.parent is None and turn.parent is not None and turn.parent.span_id == call.context.span_id
    for name in ("stt", "end_of_turn", "model", "tts", "llm", "tool_call"):
        parent = spans[name].parent
        assert parent is not None and parent.span_id == turn.context.span_id, name
    assert turn.end_time is not None and turn.start_time is not None
    assert (turn.end_time - turn.start_time) / 1e9 == pytest.approx(0.6, abs=1e-6)
    assert [event.name for event in turn.events] == ["barge_in"]


@pytest.mark.anyio
async def test_in_a_real_call_the_tap_sees_a_few_frames_a_turn_and_no_audio(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What traces cost a call: the tap's frames, counted in the scripted production stack answering a turn."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: export fails quietly
    monkeypatch.setattr(TraceTap, "stop", _no_export)
    settings = scripted_settings(data_dir=tmp_path)
    timings = ScriptedTimings(stt_final_ms=5, llm_first_token_ms=5, tts_first_byte_ms=5, tts_speed=1000)
    routing = RoutingService.from_settings(settings)
    stack = SpeechStack(settings, scripted_engines(settings, timings), routing=routing)
    ctx = CallContext(call_id="CAcost", caller="+447700900123", transport="twilio")
    call_routing = routing.call_routing(ctx.caller)
    chosen = call_routing.next_turn(routing.snapshot())
    ctx.region, ctx.fallback_regions = chosen.region, chosen.fallbacks
    processors, opening = stack.build(ctx, bench_agent(), call_routing=call_routing)
    [tap] = [p for p in processors if isinstance(p, TraceTap)]
    seen: list[type] = []
    inner = tap.process

    async def counting(frame: Frame) -> None:
        seen.append(type(frame))
        await inner(frame)

    tap.process = counting  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    speech = 5000 * sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 10)) + rng.normal(0, 30, t.size)
    quiet = rng.normal(0, 30, 8000)
    pcm = np.clip(np.concatenate([quiet, speech, quiet]), -32768, 32767).astype("<i2").tobytes()
    call_audio = [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]

    async def feed(pipe: Pipeline, tg: Any) -> None:
        for frame in opening:
            await pipe.push(frame)
        for chunk in call_audio:
            await pipe.push(InputAudio(chunk, 8000, time.monotonic(), ulaw=lin2ulaw(chunk)))
            await anyio.sleep(0.002)
        await anyio.sleep(1.0)

    await Pipeline(processors).run(ctx, feed)
    assert 1 in tap.turns, "the turn was answered and noted"
    assert InputAudio not in seen and len(seen) < 20, (len(call_audio), seen)


async def _no_export(self: TraceTap) -> None:
    return None
