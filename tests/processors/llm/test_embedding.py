"""The numpy all-MiniLM-L6-v2 encoder reproduces sentence-transformers' published numbers."""

from __future__ import annotations

import numpy as np
import pytest

from aybiza.processors.llm.embedding import EMBEDDING_DIM, SentenceEncoder


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.packaged()


def test_reproduces_the_published_similarity_matrix(encoder: SentenceEncoder) -> None:
    # sentence-transformers' README/quickstart prints this matrix for all-MiniLM-L6-v2;
    # matching it to 4 decimals checks tokenizer, weights, encoder, pooling and normalisation.
    vectors = encoder.encode(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    expected = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    np.testing.assert_allclose(vectors @ vectors.T, expected, atol=6e-4)


def test_paraphrases_are_much_closer_than_unrelated_requests(encoder: SentenceEncoder) -> None:
    opening, open_when, root_canal, parking = encoder.encode(
        ["what time do you open", "when are you open", "I need a root canal", "where can I park"]
    )
    same = float(opening @ open_when)
    assert same > 0.7
    assert same > float(opening @ root_canal) + 0.4
    assert same > float(opening @ parking) + 0.3


def test_vectors_are_unit_length_float32_in_input_order(encoder: SentenceEncoder) -> None:
    texts = ["a much longer sentence about booking a dental appointment next week", "hi", ""]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, EMBEDDING_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Order is kept even though the encoder batches by length internally.
    np.testing.assert_allclose(vectors[1], encoder.encode(["hi"])[0], atol=1e-5)


def test_padding_in_a_batch_does_not_change_a_sentence(encoder: SentenceEncoder) -> None:
    alone = encoder.encode(["do you take cash"])[0]
    batch = encoder.encode(["do you take cash", "what are your opening hours on saturday and sunday please"])
    np.testing.assert_allclose(batch[0], alone, atol=1e-5)


def test_long_input_is_truncated_not_rejected(encoder: SentenceEncoder) -> None:
    vectors = encoder.encode(["open " * 400])
    assert vectors.shape == (1, EMBEDDING_DIM)
    assert np.isfinite(vectors).all()


def test_empty_list_gives_empty_matrix(encoder: SentenceEncoder) -> None:
    assert encoder.encode([]).shape == (0, EMBEDDING_DIM)

