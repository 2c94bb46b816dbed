"""smart-turn's attention softmax in float: the same decisions, 14 % less CPU per inference.

The shipped smart-turn v3.2 CPU export is a QDQ-quantised graph: every
activation goes ``QuantizeLinear -> DequantizeLinear`` between operators,
and onnxruntime fuses each ``DQ -> op -> Q`` into an int8 kernel. For the
encoder's four attention softmaxes that kernel is ``QLinearSoftmax``, which
took ~22 % of an inference's kernel time here (a lookup per element over
6 heads x 400 x 400 scores), more than the float softmax it replaces.

:func:`float_attention_softmax` feeds each of those softmaxes the float
attention scores its ``Q -> DQ`` pair was quantising (the pair, then unused,
is dropped by onnxruntime); the softmax's *output* keeps its quantisation,
so the attention-times-values product stays an int8 ``QLinearMatMul``. The
scores are no longer rounded to int8 before the softmax, so the graph is, if
anything, nearer the float model the quantised one was made from.

Measured on this machine's cores (one intra-op thread, ``benchmarks/conversation.py``'s
server settings): 47.9 -> 41.2 ms per inference (median of 15, interleaved);
probabilities within 0.001 on the repository's test recordings, and
``benchmarks/endpoint.py --quick`` gives the same delays and cut-off rates
(see ``docs/capacity.md``).

The model file itself is unchanged and still checked against its pinned
SHA-256 before this runs (:func:`~aybiza.processors.packaged.verified_dir`);
the rewrite happens in memory at load.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["float_attention_softmax"]


def float_attention_softmax(path: Path) -> tuple[bytes, int]:
    """The model at ``path`` with each ``Q -> DQ -> Softmax`` fed the float scores; (model bytes, softmaxes changed)."""
    import onnx

    model = onnx.load(str(path))
    producer = {output: node for node in model.graph.node for output in node.output}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Softmax" or not node.input:
            continue
        dequantize = producer.get(node.input[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        quantize = producer.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        node.input[0] = quantize.input[0]
        changed += 1
    return model.SerializeToString(), changed
