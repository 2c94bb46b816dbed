"""Preemptive replies and traces on the assembled server (``aybiza serve``'s app on scripted providers).

Calls go through a real socket like Twilio's; the providers answer with the issue's latencies (the
recogniser finalising on its own 150 ms after speech ends, the model's first token 350 ms after the
request, the voice's first audio 100 ms after the first text). Traces go to an OTLP/HTTP receiver in
this process that decodes the protobuf request with ``opentelemetry-proto``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from aybiza.codecs import ULAW_SILENCE, ulaw2lin
from aybiza.testing.caller import CallReport, Say, Wait, caller_speech, place_call

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import scripted_server  # noqa: E402
from benchmarks.scripted_server import API_TOKEN, AUTH_TOKEN  # noqa: E402

pytestmark = pytest.mark.slow

TIMINGS: dict[str, Any] = {"stt_final_ms": 150, "llm_first_token_ms": 350, "tts_first_byte_ms": 100,
                           "stt_endpointing": True, "reply": ["We open at nine in the morning."]}
QUESTION = "what time do you open tomorrow"


class OTLPReceiver:
    """An OTLP/HTTP trace receiver on loopback: every span of every ``POST /v1/traces``, decoded."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        receiver.spans.extend(scope_spans.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OTLPReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def server_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[Any]:
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with scripted_server(cpu=None, timings=TIMINGS) as server:
            yield server


async def call(base: str, audio: bytes) -> CallReport:
    stream_url = base.replace("http://", "ws://") + "/twilio/stream"
    return await place_call(stream_url, [Wait(10), Say(audio), Wait(8)], auth_token=AUTH_TOKEN, public_url=base)


async def record(base: str, call_sid: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        for _ in range(50):
            response = await client.get(f"/api/calls/{call_sid}")
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
            await anyio.sleep(0.1)
    raise AssertionError(f"no record of {call_sid}")


def trailing_silence_s(ulaw: bytes) -> float:
    """How long the clip goes on after its last voiced 20 ms (the synthesiser's tail)."""
    pcm = np.frombuffer(ulaw2lin(ulaw), dtype="<i2").astype(np.float64)
    frames = pcm[: pcm.size // 160 * 160].reshape(-1, 160)
    voiced = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 500)
    return (frames.shape[0] - 1 - int(voiced[-1])) * 0.02 + pcm.size % 160 / 8000


def trimmed(ulaw: bytes) -> bytes:
    """The clip from its first to its last voiced 20 ms (the synthesiser's silences cut)."""
    pcm = np.frombuffer(ulaw2lin(ulaw), dtype="<i2").astype(np.float64)
    frames = pcm[: pcm.size // 160 * 160].reshape(-1, 160)
    voiced = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 500)
    return ulaw[int(voiced[0]) * 160 : (int(voiced[-1]) + 1) * 160]


def latency(report: CallReport) -> float:
    assert report.turns and report.turns[0].latency is not None, "the caller heard no answer"
    return report.turns[0].latency


@pytest.mark.anyio
async def test_a_preempted_answer_is_heard_sooner_and_its_call_is_traced_stage_by_stage(
        monkeypatch: pytest.MonkeyPatch) -> None:
    question = caller_speech(QUESTION)
    with server_with(monkeypatch, AYBIZA_PREEMPTIVE="false") as server:
        waiting = latency(await call(server.base, question))
    with OTLPReceiver() as otlp, server_with(monkeypatch, AYBIZA_PREEMPTIVE="true",
                                             OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
                                             OTEL_BSP_SCHEDULE_DELAY="100") as server:
        report = await call(server.base, question)
        preempted = latency(report)
        calls: list[Span] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not calls:
            await anyio.sleep(0.1)
            calls = [s for s in otlp.spans if s.name == "call" and any(
                a.key == "aybiza.call_id" and a.value.string_value == report.call_sid for a in s.attributes)]
        spans = list(otlp.spans)
    assert preempted < waiting - 0.3, (preempted, waiting)
    assert preempted < 0.8

    assert len(calls) == 1, "one call span for the call"
    call_span = calls[0]
    turns = [s for s in spans if s.name == "turn" and s.parent_span_id == call_span.span_id]
    assert len(turns) == 1 and turns[0].trace_id == call_span.trace_id
    turn = turns[0]
    stages = [s for s in spans if s.parent_span_id == turn.span_id and s.name in ("stt", "end_of_turn", "model", "tts")]
    assert {s.name for s in stages} == {"stt", "end_of_turn", "model", "tts"}
    turn_ms = (turn.end_time_unix_nano - turn.start_time_unix_nano) / 1e6
    stages_ms = sum(s.end_time_unix_nano - s.start_time_unix_nano for s in stages) / 1e6
    assert stages_ms == pytest.approx(turn_ms, abs=1.0), "the stages lie end to end along the turn"
    # ... and the turn is what the caller measured: end of speech -> first audio at the phone (the frame that
    # carried the end of speech and the two sockets are outside the server)
    mouth_to_ear_ms = (preempted + trailing_silence_s(question)) * 1000
    assert abs(turn_ms - mouth_to_ear_ms) < 80, (turn_ms, mouth_to_ear_ms)
    llm = [s for s in spans if s.parent_span_id == turn.span_id and s.name == "llm"]
    assert len(llm) == 1 and any(a.key == "aybiza.preempted" and a.value.bool_value for a in llm[0].attributes)


@pytest.mark.anyio
async def test_a_caller_who_goes_on_after_a_pause_hears_one_answer_to_the_whole_question(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # longer than the recogniser's endpointing (100 ms), shorter than our end of turn (400 ms)
    pause = bytes([ULAW_SILENCE]) * round(8000 * 0.25)
    audio = trimmed(caller_speech("what time do you open")) + pause + trimmed(caller_speech("tomorrow")) + pause
    with monkeypatch.context() as patch:
        patch.setitem(TIMINGS, "transcripts", ["what time do you open", "tomorrow"])
        with server_with(monkeypatch, AYBIZA_PREEMPTIVE="true") as server:
            report = await call(server.base, audio)
            body = await record(server.base, report.call_sid)
            async with httpx.AsyncClient(base_url=server.base, headers={"Authorization": f"Bearer {API_TOKEN}"}) \
                    as client:
                metrics = (await client.get("/metrics")).text
    turns = [t for t in body["turns"] if t.get("turn_id", 0) > 0]
    assert [t["user"] for t in turns] == ["what time do you open tomorrow"], "one turn: the whole question"
    assert len([t for t in turns if t.get("agent")]) == 1, "answered once"
    assert body["usage"]["preemptions"] == {"discarded": 1, "used": 1}
    assert 'aybiza_preemptions_total{outcome="used"} 1.0' in metrics  # the dashboard's series
    assert 'aybiza_preemptions_total{outcome="discarded"} 1.0' in metrics
    assert len(report.turns) == 1 and report.turns[0].first_reply_audio is not None
