"""OpenTelemetry traces of calls: one span per call, one per caller turn, and the turn's stages inside it.

Off, and free, unless the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and ``OTEL_SDK_DISABLED`` is
not ``true``: then :func:`otlp_target` gives where spans go, the call's
pipeline gets a :class:`TraceTap`, and each call's spans go out over OTLP/HTTP
(protobuf) with the SDK's batch processor. Those variables, the headers
(``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``) and ``OTEL_SERVICE_NAME`` are
settings (:class:`aybiza.config.Settings`, under their standard names) and
are passed to the exporter; the SDK's own tuning (batch delays, resource
attributes, timeouts) it reads itself as usual.

**No cost per frame.** The tap stands after the model stage, where the
caller's audio no longer flows (the recogniser consumed it): it sees a few
frames a turn (speech stops, final transcripts, the agent's text, barge-ins)
and notes their times. The spans are built once, when the call ends, from
those times and the call's ledger (stage timings, tool calls, failovers), so
a call costs nothing on the hot path and the SDK is never touched mid-call.

A turn's span runs from the caller's end of speech (as the VAD dated it) to
the first agent audio sent (the ledger's ``voice_to_voice``). Its stage spans
lie end to end along that critical path, so they add up to it:

==================  ============================================================
``stt``             end of speech -> the turn's last final transcript
``end_of_turn``     -> the end of turn confirmed (the held ``SpeechStopped``)
``model``           -> the first sentence of the reply released to the voice
``tts``             -> the first audio sent to the caller
==================  ============================================================

(sorted by time: with a preemptive reply the final comes before the end of
turn, without one after it, and a span with nothing to wait for is empty).
The model's own span (``llm``: its start to its first token, from the ledger)
overlaps them and carries ``preempted`` when it started before the confirmed
end of turn. Barge-ins and failovers are events on the turn; tool calls are
spans (the ledger's start and duration).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..pipeline import (
    AgentText,
    CallContext,
    Frame,
    Interruption,
    Processor,
    SpeechStopped,
    Stage,
    Transcript,
)

__all__ = ["OtlpTarget", "TraceTap", "TurnMarks", "enabled", "otlp_target", "stage_spans", "tracer"]


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """Where a process's spans go: the OTLP/HTTP traces URL, its headers, and the service's name."""

    endpoint: str
    headers: tuple[tuple[str, str], ...] = ()
    service_name: str = "aybiza"


def otlp_target(settings: Settings) -> OtlpTarget | None:
    """Where spans go, or None when tracing is off (no endpoint, or the SDK disabled).

    As the OTLP/HTTP exporter specifies: the traces endpoint is used as given,
    the base endpoint gets ``/v1/traces`` appended.
    """
    if settings.otel_sdk_disabled:
        return None
    if settings.otel_traces_endpoint:
        endpoint = settings.otel_traces_endpoint
    elif settings.otel_endpoint:
        endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
    else:
        return None
    from opentelemetry.util.re import parse_env_headers

    headers = parse_env_headers(settings.otel_headers, liberal=True) if settings.otel_headers else {}
    return OtlpTarget(endpoint, tuple(sorted(headers.items())), settings.otel_service_name)


def enabled(settings: Settings) -> bool:
    """Whether traces are exported: an OTLP endpoint is configured and the SDK is not disabled."""
    return otlp_target(settings) is not None


_LOCK = threading.Lock()
_TRACER: Any = None


def tracer(target: OtlpTarget) -> Any:
    """The process's tracer, exporting to ``target`` (created on first use; the batch exporter flushes at exit)."""
    global _TRACER
    with _LOCK:
        if _TRACER is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider = TracerProvider(resource=Resource.create({"service.name": target.service_name}))
            exporter = OTLPSpanExporter(endpoint=target.endpoint, headers=dict(target.headers))
            provider.add_span_processor(BatchSpanProcessor(exporter))
            _TRACER = provider.get_tracer("aybiza")
        return _TRACER


@dataclass(slots=True)
class TurnMarks:
    """Monotonic times of one agent turn's milestones, as the tap saw them."""

    speech_end: float | None = None  # the caller's end of speech (SpeechStopped.at)
    final: float | None = None  # the last final transcript before the reply
    confirmed: float | None = None  # the end of turn confirmed (SpeechStopped reaching the tap)
    first_text: float | None = None  # the reply's first sentence released to the voice
    barge_ins: list[float] = field(default_factory=list)


def stage_spans(marks: TurnMarks, first_audio: float) -> list[tuple[str, float, float]]:
    """The turn's stages end to end from the end of speech to the first audio: ``(name, start, end)``."""
    assert marks.speech_end is not None
    points = [("stt", marks.final), ("end_of_turn", marks.confirmed), ("model", marks.first_text),
              ("tts", first_audio)]
    spans: list[tuple[str, float, float]] = []
    cursor = marks.speech_end
    for name, at in sorted(((n, t) for n, t in points if t is not None), key=lambda item: item[1]):
        end = min(max(at, cursor), first_audio)
        spans.append((name, cursor, end))
        cursor = end
    return spans


class TraceTap(Processor):
    """Notes the times of a turn's milestones (a few frames a turn); exports the call's spans when it ends."""

    name = "trace-tap"

    def __init__(self, target: OtlpTarget | None = None) -> None:
        super().__init__()
        self.target = target  # None: the spans are only built by an explicit export (tests)
        self.turns: dict[int, TurnMarks] = {}
        self._pending = TurnMarks()
        self._started = time.monotonic()
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()

    async def start(self, ctx: CallContext, tg: Any) -> None:
        await super().start(ctx, tg)
        self._started = time.monotonic()

    async def process(self, frame: Frame) -> None:
        """Note the milestone a frame marks; pass every frame on."""
        if isinstance(frame, SpeechStopped):
            self._pending.speech_end = frame.at
            self._pending.confirmed = time.monotonic()
        elif isinstance(frame, Transcript):
            if frame.final and frame.text.strip():
                self._pending.final = time.monotonic()
        elif isinstance(frame, AgentText):
            if frame.turn_id > 0 and frame.turn_id not in self.turns and self._pending.speech_end is not None:
                self._pending.first_text = time.monotonic()
                self.turns[frame.turn_id] = self._pending
                self._pending = TurnMarks()
        elif isinstance(frame, Interruption):
            latest = max(self.turns) if self.turns else None
            if latest is not None:
                self.turns[latest].barge_ins.append(frame.at)
        await self.push(frame)

    async def stop(self) -> None:
        """The call is over: build its spans and hand them to the exporter (which sends them in its thread)."""
        if self.ctx is not None and self.target is not None:
            try:
                self.export(self.ctx, tracer(self.target))
            except Exception as exc:  # traces must never fail a call
                self.ctx.log.warning("tracing: spans not exported: %s", exc)

    def _ns(self, monotonic: float) -> int:
        return int(monotonic * 1e9) + self._wall_offset_ns

    def export(self, ctx: CallContext, otel_tracer: Any) -> None:
        """Build the call's spans on ``otel_tracer`` (explicit times: nothing was open during the call)."""
        from opentelemetry import trace

        ledger = ctx.ledger
        now = time.monotonic()
        call = otel_tracer.start_span("call", start_time=self._ns(self._started), attributes={
            "aybiza.call_id": ctx.call_id, "aybiza.transport": ctx.transport,
            "aybiza.region": ctx.region or "", "aybiza.interruptions": ledger.interruptions})
        call_context = trace.set_span_in_context(call)
        for index, (from_region, to_region) in enumerate(ledger.usage().failovers):
            call.add_event("failover", {"from_region": from_region, "to_region": to_region, "index": index},
                           timestamp=self._ns(now))
        for turn_id, marks in sorted(self.turns.items()):
            timings = ledger.timings(turn_id)
            assert marks.speech_end is not None
            v2v = timings.get(Stage.VOICE_TO_VOICE.value)
            first_audio = marks.speech_end + v2v if v2v is not None else (marks.first_text or marks.speech_end)
            turn = otel_tracer.start_span(
                "turn", context=call_context, start_time=self._ns(marks.speech_end),
                attributes={"aybiza.turn": turn_id, "aybiza.mouth_to_ear_ms": round((first_audio - marks.speech_end)
                                                                                   * 1000, 3)})
            turn_context = trace.set_span_in_context(turn)
            for name, start, end in stage_spans(marks, first_audio):
                otel_tracer.start_span(name, context=turn_context, start_time=self._ns(start)).end(
                    end_time=self._ns(end))
            first_token = timings.get(Stage.LLM_FIRST_TOKEN.value)
            first_sentence = timings.get(Stage.LLM_FIRST_SENTENCE.value)
            if first_token is not None and first_sentence is not None and marks.first_text is not None:
                started = marks.first_text - first_sentence
                preempted = marks.confirmed is not None and started < marks.confirmed
                otel_tracer.start_span("llm", context=turn_context, start_time=self._ns(started),
                                       attributes={"aybiza.preempted": preempted}).end(
                    end_time=self._ns(started + first_token))
            for at in marks.barge_ins:
                turn.add_event("barge_in", timestamp=self._ns(at))
            for use, started_at in ledger.tool_spans(turn_id):
                duration = (use.duration_ms or 0.0) / 1000
                otel_tracer.start_span("tool_call", context=turn_context, start_time=self._ns(started_at),
                                       attributes={"aybiza.tool": use.name, "aybiza.outcome": use.outcome}).end(
                    end_time=self._ns(started_at + duration))
            turn.end(end_time=self._ns(first_audio))
        call.end(end_time=self._ns(now))
