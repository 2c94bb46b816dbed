"""Mouth to ear: the caller's end of speech -> the agent's first audio at the caller, with and without preemption.

The same callers as ``benchmarks.turn`` (real WebSocket clients in their own
process, Twilio-shaped, against ``aybiza serve``'s app on scripted providers:
``benchmarks.scripted_server``) speak, wait for the reply and speak again. A
turn is timed on the caller's clock, from the last frame of its speech leaving
the phone to the reply's first audio arriving there.

The providers behave like the production ones with the issue's latencies:
the recogniser finalises a phrase on its own 150 ms after the speech in its
audio ends (Deepgram's endpointing; ``stt_endpointing``), the model's first
token comes 350 ms after the request, the voice's first audio 100 ms after the
first text. The end of turn is our VAD silence (``end_of_turn_ms``, 400 ms):
the scripted caller's audio is a tone, which the smart-turn model is not for
(``benchmarks.endpoint`` measures that model on human speech).

The recogniser also sends interim results, as Deepgram does: the words so far
every 500 ms of speech, and the phrase's words 50 ms after its speech pauses
(``stt_interim_ms``), before its final.

Three runs, each with its own server: ``AYBIZA_PREEMPTIVE=false`` (``waiting``);
preemption on finals only (``AYBIZA_PREEMPT_INTERIM_MS=0``, ``preemptive_finals``);
and preemption with its default, on a stable interim too (``preemptive``).
Without preemption the model waits for the turn-taker's confirmed turn; with
it, the model starts on the recogniser's final (or on an interim whose words
and the caller have been still for ``preempt_interim_ms``) while our end of
turn is still waiting, and its words go out as soon as the turn is confirmed.

The embedded stack (``embedded``): ``aybiza serve`` with its defaults (VAD and the smart-turn end of
turn, whisper, the FAQ responder, the local voice) answers a spoken FAQ question ("When are you
open?", espeak-ng) on a few calls, one after the other. The caller's clock starts at the last voiced
20 ms of the question (the synthesiser's trailing silence is measured and added back).

Run: ``.venv/bin/python -m benchmarks.mouth_to_ear [--quick] [--no-embedded]`` (prints the figures as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.loadgen import ProgressFn, run_scenario
from benchmarks.stats import percentiles_ms

__all__ = ["TIMINGS", "run"]

TIMINGS = {"stt_final_ms": 150.0, "llm_first_token_ms": 350.0, "tts_first_byte_ms": 100.0, "stt_endpointing": True,
           "stt_interim_ms": 50.0, "reply": ["We open at nine in the morning."]}


@contextmanager
def _unchanged() -> Iterator[None]:
    yield


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


_RUNS = {"waiting": ("false", None), "preemptive_finals": ("true", "0"), "preemptive": ("true", None)}


def _measure(run_name: str, params: dict[str, Any], progress: ProgressFn | None) -> dict[str, Any]:
    preemptive, interim_ms = _RUNS[run_name]
    with (_environment("AYBIZA_PREEMPTIVE", preemptive),
          _environment("AYBIZA_PREEMPT_INTERIM_MS", interim_ms) if interim_ms is not None else _unchanged()):
        raw = run_scenario("turns", params, timings=TIMINGS, progress=progress)
    rows = raw["rows"]
    total = np.array([row["reply_at"] - row["spoken_at"] for row in rows])
    out: dict[str, Any] = {"turns": len(rows), "unmatched_utterances": raw["unmatched_utterances"],
                           "failures_sample": raw["failures_sample"], "end_of_turn_ms": raw["end_of_turn_ms"]}
    if len(rows):
        out["mouth_to_ear_ms"] = percentiles_ms(total, (50, 95, 99))
        out["p50_ms"] = out["mouth_to_ear_ms"]["p50_ms"]
        out["p95_ms"] = out["mouth_to_ear_ms"]["p95_ms"]
        out["server_voice_to_voice_ms"] = percentiles_ms(np.array([row["voice_to_voice"] for row in rows]),
                                                         (50, 95))
    return out


def _trailing_silence_s(ulaw: bytes) -> float:
    """How long a clip goes on after its last voiced 20 ms."""
    from aybiza.codecs import ulaw2lin

    pcm = np.frombuffer(ulaw2lin(ulaw), dtype="<i2").astype(np.float64)
    frames = pcm[: pcm.size // 160 * 160].reshape(-1, 160)
    voiced = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 500)
    return float((frames.shape[0] - 1 - int(voiced[-1])) * 0.02 + pcm.size % 160 / 8000)


def embedded(calls: int, turns: int, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Mouth to ear on ``aybiza serve``'s embedded default for a spoken FAQ question."""
    import tempfile

    import anyio
    import httpx

    from aybiza.testing.caller import Say, Wait, caller_speech, place_call
    from aybiza.testing.processes import free_port, serving

    root = Path(__file__).resolve().parents[1]
    question = caller_speech("When are you open?")
    tail = _trailing_silence_s(question)
    token = "mouth-to-ear-bench"
    samples: list[float] = []
    stages: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="aybiza-m2e-") as scratch:
        port = free_port()
        env = {**os.environ, "TWILIO_AUTH_TOKEN": token, "AYBIZA_DATA_DIR": scratch,
               "AYBIZA_PUBLIC_URL": f"http://127.0.0.1:{port}", "AYBIZA_LOG_LEVEL": "WARNING",
               "AYBIZA_API_TOKEN": token}
        command = [sys.executable, "-m", "aybiza.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        with serving(command, health_url=f"http://127.0.0.1:{port}/health", log_path=Path(scratch) / "server.log",
                     env=env, cwd=root, what="embedded server", timeout_s=120):
            script = [Wait(15)] + [step for _ in range(turns) for step in (Say(question), Wait(15))]
            for index in range(calls):
                report = anyio.run(lambda: place_call(f"ws://127.0.0.1:{port}/twilio/stream", script,
                                                      auth_token=token))
                samples += [t.latency + tail for t in report.turns if t.latency is not None]
                record = httpx.get(f"http://127.0.0.1:{port}/api/calls/{report.call_sid}",
                                   headers={"Authorization": f"Bearer {token}"}, timeout=10)
                for turn in record.json().get("turns", []) if record.status_code == 200 else []:
                    for stage, seconds in turn.get("timings", {}).items():
                        stages.setdefault(stage, []).append(float(seconds))
                if progress is not None:
                    progress((index + 1) / calls, f"embedded: {index + 1} calls")
    out: dict[str, Any] = {"turns": len(samples), "answered_of": calls * turns,
                           "question_trailing_silence_ms": round(tail * 1000, 1),
                           "stage_p50_ms": {stage: round(float(np.median(values)) * 1000, 1)
                                            for stage, values in sorted(stages.items())},
                           "stt_final_ms": [round(v * 1000) for v in stages.get("stt_final", [])],  # call by call
                           "mouth_to_ear_each_ms": [round(v * 1000) for v in samples]}
    if samples:
        out["mouth_to_ear_ms"] = percentiles_ms(np.array(samples), (50, 95))
        out["p50_ms"], out["p95_ms"] = out["mouth_to_ear_ms"]["p50_ms"], out["mouth_to_ear_ms"]["p95_ms"]
    return out


def run(quick: bool = False, progress: ProgressFn | None = None, *, with_embedded: bool = True) -> dict[str, Any]:
    """Mouth-to-ear percentiles on scripted providers, preemption off, on finals, on interims; then embedded FAQ."""
    params = {"calls": 4 if quick else 10, "turns": 5 if quick else 10, "needs": ["voice_to_voice"]}
    result: dict[str, Any] = {"quick": quick, "timings": TIMINGS}
    parts = len(_RUNS) + (1 if with_embedded else 0)
    for index, run_name in enumerate(_RUNS):
        def part(fraction: float, text: str, _i: int = index) -> None:
            if progress is not None:
                progress((_i + fraction) / parts, text)

        result[run_name] = _measure(run_name, params, part)

    def last(fraction: float, text: str) -> None:
        if progress is not None:
            progress((len(_RUNS) + fraction) / parts, text)

    if with_embedded:
        result["embedded"] = embedded(2 if quick else 4, 3 if quick else 5, last)
    with_, without = result["preemptive"].get("p50_ms"), result["waiting"].get("p50_ms")
    if with_ is not None and without is not None:
        result["preemption_saves_p50_ms"] = round(without - with_, 1)
    finals = result["preemptive_finals"].get("p50_ms")
    if with_ is not None and finals is not None:
        result["interim_saves_p50_ms"] = round(finals - with_, 1)
    return result


def main() -> None:
    """Command line: ``--quick`` for the short run."""
    parser = argparse.ArgumentParser(description="mouth-to-ear latency, with and without preemptive replies")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-embedded", action="store_true", help="the scripted runs only")
    args = parser.parse_args()
    result = run(args.quick, progress=lambda f, text: print(f"{f:5.0%} {text}", file=sys.stderr),
                 with_embedded=not args.no_embedded)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
