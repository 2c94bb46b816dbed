"""smart-turn as shipped against its float-softmax rewrite: speed, probabilities and decisions on the turn cases.

:mod:`aybiza.processors.smart_turn_graph` feeds the attention softmaxes float
scores instead of their int8 rounding. That is faster, and not bit-identical:
this measures by how much, on the human telephone-band turn cases of
:mod:`benchmarks.corpus.turns` (seeds 7 and 11, the ones the profiles were
chosen and measured on). Each case is scored as the endpoint stage scores it:
the audio up to the VAD's stop (the end of speech plus the profile's
``stop_ms``), calibrated with the end's level; a decision is right when a
finished utterance is taken for the end of the turn and a pause is not.

Run: ``.venv/bin/python -m benchmarks.smart_turn_graph [--per-language N]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from aybiza.processors.endpoint import PROFILES, calibrated, end_level_db
from aybiza.processors.packaged import verified_dir
from aybiza.processors.smart_turn import SMART_TURN_V3, SmartTurnModel, log_mel_features
from aybiza.processors.smart_turn_graph import float_attention_softmax
from benchmarks.corpus.turns import turn_cases

__all__ = ["run"]


def _session(model: str | bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def run(per_language: int = 25) -> dict[str, Any]:
    """Per graph: inference ms (median, interleaved), right decisions per profile; and how far they differ."""
    path = verified_dir(SMART_TURN_V3) / SMART_TURN_V3.files[0][0]
    graphs = {"shipped": _session(str(path)), "float_softmax": _session(float_attention_softmax(path)[0])}
    stop_samples = PROFILES["balanced"].stop_ms * 8
    times: dict[str, list[float]] = {name: [] for name in graphs}
    right: dict[str, dict[str, int]] = {name: {p: 0 for p in PROFILES} for name in graphs}
    differences: list[float] = []
    agree = decisions = 0
    for seed in (7, 11):
        for case in turn_cases(per_language=per_language, seed=seed):
            pcm16 = np.clip(np.round(case.audio * 32768), -32768, 32767).astype("<i2")
            end = int((case.pause[0] if case.pause else case.speech_end) * 8000) + stop_samples
            pcm = pcm16[:end].tobytes()
            features = log_mel_features(SmartTurnModel.prepare(pcm, 8000))[None, :, :]
            end_db = end_level_db(pcm, 8000)
            scores = {}
            for name, session in graphs.items():
                began = time.process_time()
                outputs = session.run(None, {"input_features": features})
                times[name].append(time.process_time() - began)
                scores[name] = float(np.asarray(outputs[0]).reshape(-1)[0])
            differences.append(abs(scores["shipped"] - scores["float_softmax"]))
            finished = case.pause is None
            for profile in PROFILES.values():
                ends = {name: calibrated(p, end_db) >= profile.threshold for name, p in scores.items()}
                decisions += 1
                agree += ends["shipped"] == ends["float_softmax"]
                for name, decided in ends.items():
                    right[name][profile.name] += decided == finished
    cases = len(differences)
    return {
        "cases": cases,
        "inference_ms_median": {name: round(1000 * statistics.median(t), 1) for name, t in times.items()},
        "probability_difference": {"mean": round(float(np.mean(differences)), 4),
                                   "p95": round(float(np.percentile(differences, 95)), 4),
                                   "max": round(max(differences), 4)},
        "decisions_agree": f"{agree}/{decisions}",
        "right_decisions_of_cases": {name: {**counts, "all": sum(counts.values())} for name, counts in right.items()},
    }


def main() -> None:
    """Command line: ``--per-language N`` cases per language and seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--per-language", type=int, default=25)
    print(json.dumps(run(parser.parse_args().per_language), indent=1))


if __name__ == "__main__":
    main()
