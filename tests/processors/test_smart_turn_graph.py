"""smart-turn with its attention softmax in float (opt-in): close probabilities, no int8 softmax kernel left."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from aybiza.codecs import ulaw2lin
from aybiza.processors.packaged import verified_dir
from aybiza.processors.smart_turn import SMART_TURN_V3, SmartTurnModel, log_mel_features
from aybiza.processors.smart_turn_graph import float_attention_softmax
from aybiza.testing.caller import caller_speech


def _path() -> Path:
    return verified_dir(SMART_TURN_V3) / SMART_TURN_V3.files[0][0]


def _session(model: str | bytes, optimized: Path | None = None) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


@cache
def _features(text: str) -> np.ndarray:
    pcm = ulaw2lin(caller_speech(text)) + bytes(3200)
    return log_mel_features(SmartTurnModel.prepare(pcm, 8000))[None, :, :]


def test_the_four_attention_softmaxes_are_fed_float_scores() -> None:
    _, changed = float_attention_softmax(_path())
    assert changed == 4  # one per encoder layer; the pooling softmax had no quantisation to remove


def test_onnxruntime_runs_no_int8_softmax_after_the_rewrite(tmp_path: Path) -> None:
    model, _ = float_attention_softmax(_path())
    _session(str(_path()), tmp_path / "shipped.onnx")
    _session(model, tmp_path / "rewritten.onnx")

    def ops(name: str) -> list[str]:
        return [node.op_type for node in onnx.load(str(tmp_path / name)).graph.node]

    assert ops("shipped.onnx").count("QLinearSoftmax") == 4
    rewritten = ops("rewritten.onnx")
    assert rewritten.count("QLinearSoftmax") == 0 and rewritten.count("Softmax") >= 4
    assert rewritten.count("QLinearMatMul") > 0, "the matrix products stay int8"


@pytest.mark.parametrize("text", ["What are your opening hours?", "I need to cancel my appointment because"])
def test_clear_cases_keep_their_probability_within_five_hundredths(text: str) -> None:
    shipped = _session(str(_path()))
    rewritten = _session(float_attention_softmax(_path())[0])
    features = _features(text)
    before = float(shipped.run(None, {"input_features": features})[0].reshape(-1)[0])
    after = float(rewritten.run(None, {"input_features": features})[0].reshape(-1)[0])
    assert after == pytest.approx(before, abs=0.05)  # not bit-identical: the scores are no longer rounded to int8


def _phone(text: str) -> bytes:
    return ulaw2lin(caller_speech(text)) + bytes(3200)


def test_the_model_runs_the_shipped_graph_unless_asked() -> None:
    pcm = _phone("What are your opening hours?")
    features = log_mel_features(SmartTurnModel.prepare(pcm, 8000))[None, :, :]
    shipped = float(_session(str(_path())).run(None, {"input_features": features})[0].reshape(-1)[0])
    rewritten = float(_session(float_attention_softmax(_path())[0]).run(None, {"input_features": features})[0]
                      .reshape(-1)[0])
    assert SmartTurnModel().probability(pcm, 8000) == shipped
    assert SmartTurnModel(float_softmax=True).probability(pcm, 8000) == rewritten
