"""Sentence embeddings with all-MiniLM-L6-v2, as a forward pass in plain numpy.

The model is a 6-layer BERT (hidden 384, 12 heads, GELU, LayerNorm eps
1e-12). Sentence-transformers turns it into sentence vectors by mean-pooling
the last hidden states over the attention mask and L2-normalising; this
module does the same, so cosine similarity is a dot product. The weights and
tokenizer come from an installed package, hash-checked by
:func:`~aybiza.processors.packaged.verified_dir`; nothing is downloaded and
torch is not needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from ...errors import ModelIntegrityError
from ..packaged import MINILM_L6_V2, verified_dir

__all__ = ["SentenceEncoder", "EMBEDDING_DIM"]

EMBEDDING_DIM = 384
_HEADS = 12
_LAYERS = 6
_LAYER_NORM_EPS = 1e-12
_BATCH = 32  # sentences per forward pass when encoding many (bounds the attention tensor)

Array = npt.NDArray[np.float32]


def _erf(x: Array) -> Array:
    """erf to ~1.5e-7 absolute (Abramowitz & Stegun 7.1.26): below float32 noise for BERT's GELU."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    result: Array = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32, copy=False)
    return result


def _gelu(x: Array) -> Array:
    """The exact (erf) GELU that BERT uses, not the tanh approximation."""
    result: Array = (0.5 * x * (1.0 + _erf(x * np.float32(1.0 / math.sqrt(2.0))))).astype(
        np.float32, copy=False
    )
    return result


def _layer_norm(x: Array, weight: Array, bias: Array) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    variance = (centered * centered).mean(axis=-1, keepdims=True)
    normed: Array = (centered / np.sqrt(variance + np.float32(_LAYER_NORM_EPS))) * weight + bias
    return normed


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: Array  # (384, 1152): query, key, value projections side by side, transposed for x @ w
    qkv_b: Array
    out_w: Array
    out_b: Array
    ln1_w: Array
    ln1_b: Array
    up_w: Array
    up_b: Array
    down_w: Array
    down_b: Array
    ln2_w: Array
    ln2_b: Array


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence vectors: ``encode(texts) -> (n, 384)`` float32, unit length."""

    @classmethod
    def packaged(cls) -> SentenceEncoder:
        """The packaged all-MiniLM-L6-v2, hash-checked (blocking; the process's engines keep one)."""
        return cls(verified_dir(MINILM_L6_V2))

    def __init__(self, directory: Path, max_tokens: int = 128) -> None:
        weights = load_file(str(directory / "model.safetensors"))
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # The shipped tokenizer.json pads every input to 128 tokens; pad to the batch's longest instead.
        tokenizer.no_padding()
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer = tokenizer

        def w(name: str) -> Array:
            try:
                return np.ascontiguousarray(weights[name], dtype=np.float32)
            except KeyError:
                raise ModelIntegrityError(f"{directory}: model.safetensors has no tensor {name!r}") from None

        self._word = w("embeddings.word_embeddings.weight")
        self._position = w("embeddings.position_embeddings.weight")
        self._token_type = w("embeddings.token_type_embeddings.weight")[0]
        self._emb_ln_w = w("embeddings.LayerNorm.weight")
        self._emb_ln_b = w("embeddings.LayerNorm.bias")
        self._layers: list[_Layer] = []
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            attn = p + "attention.self."
            qkv_w = np.concatenate([w(attn + n + ".weight") for n in ("query", "key", "value")], axis=0)
            qkv_b = np.concatenate([w(attn + n + ".bias") for n in ("query", "key", "value")])
            self._layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(qkv_w.T),
                    qkv_b=qkv_b,
                    out_w=np.ascontiguousarray(w(p + "attention.output.dense.weight").T),
                    out_b=w(p + "attention.output.dense.bias"),
                    ln1_w=w(p + "attention.output.LayerNorm.weight"),
                    ln1_b=w(p + "attention.output.LayerNorm.bias"),
                    up_w=np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                    up_b=w(p + "intermediate.dense.bias"),
                    down_w=np.ascontiguousarray(w(p + "output.dense.weight").T),
                    down_b=w(p + "output.dense.bias"),
                    ln2_w=w(p + "output.LayerNorm.weight"),
                    ln2_b=w(p + "output.LayerNorm.bias"),
                )
            )
        if self._word.shape[1] != EMBEDDING_DIM:
            raise ModelIntegrityError(f"{directory}: expected hidden size {EMBEDDING_DIM}")

    def encode(self, texts: Sequence[str]) -> Array:
        """Unit-length sentence vectors, one row per text, in the order given."""
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        # Batches of similar length waste little on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), _BATCH):
            chunk = order[start : start + _BATCH]
            out[chunk] = self._encode_batch([texts[i] for i in chunk])
        return out

    def _encode_batch(self, texts: list[str]) -> Array:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        batch, length = ids.shape
        head_dim = EMBEDDING_DIM // _HEADS
        scale = np.float32(1.0 / math.sqrt(head_dim))
        # Additive mask: padded keys get the most negative float, as transformers does.
        key_bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]

        # Hidden states stay 2-D (tokens, 384) so each projection is one GEMM over the whole batch.
        x = (self._word[ids] + self._position[:length] + self._token_type).reshape(batch * length, -1)
        x = _layer_norm(x, self._emb_ln_w, self._emb_ln_b)
        for layer in self._layers:
            qkv = x @ layer.qkv_w + layer.qkv_b  # (B*T, 3*384)
            qkv = qkv.reshape(batch, length, 3, _HEADS, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, T, d)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch * length, EMBEDDING_DIM)
            x = _layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1_w, layer.ln1_b)
            hidden = _gelu(x @ layer.up_w + layer.up_b)
            x = _layer_norm(hidden @ layer.down_w + layer.down_b + x, layer.ln2_w, layer.ln2_b)

        x = x.reshape(batch, length, EMBEDDING_DIM)
        summed = (x * mask[:, :, None]).sum(axis=1)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        pooled = summed / counts
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
        vectors: Array = (pooled / norms).astype(np.float32, copy=False)
        return vectors
