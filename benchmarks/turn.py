"""Turn: voice-to-voice latency with scripted providers, as a breakdown whose parts sum to the total.

Callers (real WebSocket clients in their own process) speak, wait for the
agent's reply to play out, and speak again; the server runs the real app,
transport, VAD and turn-taker with scripted STT/LLM/TTS at set delays
(default: STT final 150 ms after speech stops, LLM first token 350 ms, TTS
first byte 100 ms). Both processes stamp the same monotonic clock, so each
turn is cut into consecutive intervals from the caller's last speech frame
leaving the phone to the reply's first audio reaching it:

==================  ==========================================================
endpointing wait    speech end -> the caller sends the frame that completes
                    the VAD's silence window (the caller's own silence)
ingress             that frame: sent -> SpeechStopped reaches the STT stage
stt                 the scripted STT's delay (exact, by construction)
stt_wake            STT answer due -> it ran (event-loop lateness)
turn_taking         final transcript -> UserTurn at the model stage
llm                 the scripted model's delay to its first sentence
llm_wake            first sentence due -> it ran
handoff             first sentence pushed -> reached the TTS stage
tts                 the scripted TTS's delay to its first audio
tts_wake            first audio due -> it ran
egress              first audio pushed -> the caller has it (encode, send, socket)
==================  ==========================================================

``overhead`` is ours: ingress + the three wakes + turn_taking + handoff +
egress. Per turn the parts sum exactly to the total; so do their means
(percentiles of parts do not add up, and are not presented as if they did).

Run: ``.venv/bin/python -m benchmarks.turn [--quick] [--stt-ms 150 --llm-ms 350 --tts-ms 100]``
-> ``benchmarks/results/turn.json`` (under ``aybiza bench``, set ``AYBIZA_BENCH_TIMINGS`` to JSON instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.ingress import cdf_ms, percentiles_ms
from benchmarks.loadgen import ProgressFn, run_scenario

__all__ = ["run", "breakdown", "summarise", "PARTS", "OVERHEAD_PARTS", "DEFAULT_TIMINGS"]

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_TIMINGS = {"stt_final_ms": 150.0, "llm_first_token_ms": 350.0, "tts_first_byte_ms": 100.0,
                   "reply": ["We open at nine in the morning."]}

# (part, start stamp, end stamp), consecutive: each part starts where the previous one ended.
PARTS = (
    ("endpointing", "spoken_at", "window_sent"),
    ("ingress", "window_sent", "speech_stopped"),
    ("stt", "speech_stopped", "stt_deadline"),
    ("stt_wake", "stt_deadline", "transcript"),
    ("turn_taking", "transcript", "user_turn"),
    ("llm", "user_turn", "llm_deadline"),
    ("llm_wake", "llm_deadline", "first_text"),
    ("handoff", "first_text", "tts_in"),
    ("tts", "tts_in", "tts_deadline"),
    ("tts_wake", "tts_deadline", "first_audio"),
    ("egress", "first_audio", "reply_at"),
)
OVERHEAD_PARTS = ("ingress", "stt_wake", "turn_taking", "llm_wake", "handoff", "tts_wake", "egress")
HEADLINE = ("endpointing", "stt", "llm", "tts", "overhead")
TIMINGS_ENV = "AYBIZA_BENCH_TIMINGS"


def breakdown(row: dict[str, float]) -> dict[str, float]:
    """One turn's parts in seconds, plus ``overhead`` (ours) and ``total`` (speech end -> reply heard)."""
    parts = {name: row[end] - row[start] for name, start, end in PARTS}
    parts["overhead"] = sum(parts[name] for name in OVERHEAD_PARTS)
    parts["total"] = row["reply_at"] - row["spoken_at"]
    return parts


def summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Per-part statistics over turns; checks that the parts add up to the total for every turn."""
    turns = [breakdown(row) for row in rows]
    if not turns:
        return {"turns": 0}
    names = [name for name, _, _ in PARTS] + ["overhead", "total"]
    columns = {name: np.array([t[name] for t in turns]) for name in names}
    sum_error = max(abs(sum(t[name] for name, _, _ in PARTS) - t["total"]) for t in turns)
    means = {name: round(float(columns[name].mean()) * 1000, 3) for name in names}
    return {
        "turns": len(turns),
        "voice_to_voice_ms": percentiles_ms(columns["total"], (50, 95, 99)),
        "overhead_ms": percentiles_ms(columns["overhead"], (50, 95, 99)),
        "overhead_ms_p95": percentiles_ms(columns["overhead"], (95,))["p95_ms"],
        "breakdown_mean_ms": {name: means[name] for name in HEADLINE},
        "breakdown_mean_total_ms": means["total"],
        "overhead_parts_mean_ms": {name: means[name] for name in OVERHEAD_PARTS},
        "parts_ms": {name: percentiles_ms(columns[name], (50, 95, 99)) for name in names},
        "parts_sum_error_ms": round(sum_error * 1000, 6),
        "cdf_ms": {name: cdf_ms(columns[name]) for name in (*HEADLINE, "total")},
        "overhead_cdf_ms": {name: cdf_ms(columns[name]) for name in (*OVERHEAD_PARTS, "overhead")},
    }


def run(quick: bool = False, progress: ProgressFn | None = None,
        timings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure voice-to-voice latency and its breakdown; writes ``results/turn.json``.

    ``timings`` (or the environment variable ``AYBIZA_BENCH_TIMINGS``, JSON)
    overrides :class:`~aybiza.testing.scripted.ScriptedTimings` fields, e.g.
    ``{"stt_final_ms": 250, "llm_first_token_ms": 600}``.
    """
    if timings is None and os.environ.get(TIMINGS_ENV):
        timings = json.loads(os.environ[TIMINGS_ENV])
    timings = {**DEFAULT_TIMINGS, **(timings or {})}
    params = {"calls": 10 if quick else 20, "turns": 5 if quick else 10}
    raw = run_scenario("turns", params, timings=timings, record_turns=True, progress=progress)
    result: dict[str, Any] = {"quick": quick, "timings": timings, "calls": raw["calls"],
                              "turns_per_call": raw["turns_per_call"],
                              "unmatched_utterances": raw["unmatched_utterances"],
                              "failures_sample": raw["failures_sample"], "caller_audio": raw["audio"],
                              "server_cpu": raw["server_cpu"], "callers_cpu": raw["callers_cpu"],
                              "machine_busy_percent_before": raw["machine_busy_percent_before"],
                              "server_waiting_for_cpu_percent": raw["server_waiting_for_cpu_percent"],
                              **summarise(raw["rows"])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "turn.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    """Command line: ``--quick`` for the short run."""
    parser = argparse.ArgumentParser(description="voice-to-voice breakdown")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stt-ms", type=float, default=DEFAULT_TIMINGS["stt_final_ms"])
    parser.add_argument("--llm-ms", type=float, default=DEFAULT_TIMINGS["llm_first_token_ms"])
    parser.add_argument("--tts-ms", type=float, default=DEFAULT_TIMINGS["tts_first_byte_ms"])
    args = parser.parse_args()
    timings = {"stt_final_ms": args.stt_ms, "llm_first_token_ms": args.llm_ms, "tts_first_byte_ms": args.tts_ms}
    result = run(args.quick, progress=lambda f, text: print(f"{f:5.0%} {text}", file=sys.stderr), timings=timings)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("cdf_ms") and k != "parts_ms"}, indent=2))


if __name__ == "__main__":
    main()
