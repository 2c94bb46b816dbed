"""Turn: voice-to-voice latency through our real stages on scripted providers, as parts that sum to the total.

Callers (real WebSocket clients in their own process) speak, wait for the
agent's reply to play out, and speak again. The server is ``aybiza serve``'s
app (``benchmarks.scripted_server``): our Twilio transport, VAD, Deepgram STT
stage, turn-taker, Bedrock model stage and Deepgram TTS stage, with only the
far side of the SDKs scripted (STT final 150 ms after our ``Finalize``, LLM
first token 350 ms after the request, TTS first audio 100 ms after the
turn's first ``Speak``). Each turn is measured from the caller's last frame
of speech leaving the phone to the reply's first audio reaching it
(``total``, the caller's clock) and cut into:

==============  =================================================================
endpointing     the caller's own silence until it sent the frame that completes
                the VAD's end-of-turn window (caller-side)
stt             ``stt_final`` as our STT stage recorded it: speech stopped at the
                stage -> final transcript in it (Finalize round trip)
llm             ``llm_first_sentence`` as our model stage recorded it: the turn
                taken up -> first sentence ready to speak
tts             ``tts_first_byte`` as our TTS stage recorded it: the turn's first
                ``Speak`` sent -> its first audio back
overhead        the rest, all ours: the window frame's trip to the STT stage
                (socket, parse, edge chain), turn-taking, hand-offs between the
                stages, and the first audio's way out to the caller
==============  =================================================================

``endpointing`` counts from the caller's last frame of speech, where the
VAD places the end of speech too (the server's own voice-to-voice, which
starts there, leaves out exactly that frame's 20 ms and the two sockets:
``outside_server_ms``); ``overhead_min_ms`` would go negative if it did not.

The stage timings come from the call record (``GET /api/calls/{id}``,
``turns[].timings``: the call's ledger), so they are what the dashboard and
the metrics show for production calls. Per turn the parts sum to the total;
so do their means (percentiles of parts do not add up, and are not presented
as if they did). Since the stage timings are our stages' own, they include
our side of each provider's wire (the SDK seam, the Bedrock reader thread,
event-loop wake-ups); what each stage took beyond its scripted provider's
delay is reported too (``beyond_provider_mean_ms``), and ``all_ours_ms`` is
everything but the caller's silence and the providers' scripted delays.

Run: ``.venv/bin/python -m benchmarks.turn [--quick] [--stt-ms 150 --llm-ms 350 --tts-ms 100]``
(prints the figures; under ``aybiza bench``, set ``AYBIZA_BENCH_TIMINGS`` to JSON instead).
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

from benchmarks.loadgen import ProgressFn, run_scenario
from benchmarks.stats import cdf_ms, percentiles_ms

__all__ = ["DEFAULT_TIMINGS", "HEADLINE", "STAGES", "breakdown", "run", "summarise"]

DEFAULT_TIMINGS = {"stt_final_ms": 150.0, "llm_first_token_ms": 350.0, "tts_first_byte_ms": 100.0,
                   "reply": ["We open at nine in the morning."]}

# part -> (the call record's timing, the scripted provider's delay behind it)
STAGES = {"stt": ("stt_final", "stt_final_ms"), "llm": ("llm_first_sentence", "llm_first_token_ms"),
          "tts": ("tts_first_byte", "tts_first_byte_ms")}
HEADLINE = ("endpointing", "stt", "llm", "tts", "overhead")
TIMINGS_ENV = "AYBIZA_BENCH_TIMINGS"


def breakdown(row: dict[str, float], provider_s: dict[str, float] | None = None) -> dict[str, float]:
    """One turn's parts in seconds (``HEADLINE``, summing to ``total``), plus what the server and stages saw.

    ``row`` holds the caller's stamps (``spoken_at``, ``window_sent``,
    ``reply_at``) and the turn's recorded timings; ``provider_s`` the scripted
    providers' delays by part (for ``beyond_<part>`` and ``all_ours``).
    """
    parts = {"endpointing": row["window_sent"] - row["spoken_at"]}
    parts.update({part: row[timing] for part, (timing, _) in STAGES.items()})
    parts["total"] = row["reply_at"] - row["spoken_at"]
    parts["overhead"] = parts["total"] - sum(parts[name] for name in HEADLINE[:-1])
    # What the server's own voice-to-voice (speech end as the VAD dates it -> first audio sent) leaves out.
    parts["outside_server"] = parts["total"] - row["voice_to_voice"]
    if provider_s is not None:
        for part in STAGES:
            parts[f"beyond_{part}"] = parts[part] - provider_s[part]
        parts["all_ours"] = parts["overhead"] + sum(parts[f"beyond_{part}"] for part in STAGES)
    return parts


def summarise(rows: list[dict[str, float]], provider_s: dict[str, float]) -> dict[str, Any]:
    """Per-part statistics over turns; checks that the parts add up to the total for every turn."""
    turns = [breakdown(row, provider_s) for row in rows]
    if not turns:
        return {"turns": 0}
    names = [*HEADLINE, "total", "outside_server", *(f"beyond_{part}" for part in STAGES), "all_ours"]
    columns = {name: np.array([t[name] for t in turns]) for name in names}
    sum_error = max(abs(sum(t[name] for name in HEADLINE) - t["total"]) for t in turns)
    means = {name: round(float(columns[name].mean()) * 1000, 3) for name in names}
    server_v2v = np.array([row["voice_to_voice"] for row in rows])
    first_token = np.array([row["llm_first_token"] for row in rows])
    return {
        "turns": len(turns),
        "voice_to_voice_ms": percentiles_ms(columns["total"], (50, 95, 99)),
        "overhead_ms": percentiles_ms(columns["overhead"], (50, 95, 99)),
        "overhead_ms_p95": percentiles_ms(columns["overhead"], (95,))["p95_ms"],
        # Below zero only if the VAD dated a speech end earlier than the caller's last frame of speech.
        "overhead_min_ms": round(float(columns["overhead"].min()) * 1000, 3),
        "all_ours_ms": percentiles_ms(columns["all_ours"], (50, 95, 99)),
        "breakdown_mean_ms": {name: means[name] for name in HEADLINE},
        "breakdown_mean_total_ms": means["total"],
        "beyond_provider_mean_ms": {part: means[f"beyond_{part}"] for part in STAGES},
        "server_voice_to_voice_ms": percentiles_ms(server_v2v, (50, 95, 99)),
        "outside_server_ms": percentiles_ms(columns["outside_server"], (50, 95, 99)),
        "llm_first_token_ms": percentiles_ms(first_token, (50, 95, 99)),
        "parts_ms": {name: percentiles_ms(columns[name], (50, 95, 99)) for name in names},
        "parts_sum_error_ms": round(sum_error * 1000, 6),
        "cdf_ms": {name: cdf_ms(columns[name]) for name in (*HEADLINE, "total")},
        "overhead_cdf_ms": {name: cdf_ms(columns[name]) for name in ("overhead", "all_ours", "outside_server")},
    }


def run(quick: bool = False, progress: ProgressFn | None = None,
        timings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure voice-to-voice latency and its breakdown.

    ``timings`` (or the environment variable ``AYBIZA_BENCH_TIMINGS``, JSON)
    overrides :class:`~aybiza.testing.scripted.ScriptedTimings` fields, e.g.
    ``{"stt_final_ms": 250, "llm_first_token_ms": 600}``.
    """
    if timings is None and os.environ.get(TIMINGS_ENV):
        timings = json.loads(os.environ[TIMINGS_ENV])
    timings = {**DEFAULT_TIMINGS, **(timings or {})}
    provider_s = {part: float(timings[field]) / 1000 for part, (_, field) in STAGES.items()}
    params = {"calls": 10 if quick else 20, "turns": 5 if quick else 10}
    raw = run_scenario("turns", params, timings=timings, progress=progress)
    return {"quick": quick, "timings": timings, "calls": raw["calls"], "turns_per_call": raw["turns_per_call"],
            "unmatched_utterances": raw["unmatched_utterances"], "failures_sample": raw["failures_sample"],
            "caller_audio": raw["audio"], "end_of_turn_ms": raw["end_of_turn_ms"], "server_cpu": raw["server_cpu"],
            "callers_cpu": raw["callers_cpu"], "machine_busy_percent_before": raw["machine_busy_percent_before"],
            "server_waiting_for_cpu_percent": raw["server_waiting_for_cpu_percent"],
            **summarise(raw["rows"], provider_s)}


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
