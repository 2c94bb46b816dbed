"""FAQ embeddings cached on disk: reused while model and texts are unchanged, rebuilt otherwise, never served torn."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from aybiza.agents import load_agent
from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.processors.llm.embedding import SentenceEncoder
from aybiza.processors.llm.embedding_cache import EmbeddingCache, model_identity
from aybiza.processors.packaged import MINILM_L6_V2

AGENTS = Path(__file__).resolve().parents[3] / "agents"
TEXTS = ["what are your opening hours", "where can I park", "do you take my insurance"]


class Counting:
    """The real encoder, counting the texts it is asked to encode."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        self.encoder = encoder
        self.encoded: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.encoded.append(list(texts))
        return self.encoder.encode(texts)


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.packaged()


@pytest.fixture
def counting(encoder: SentenceEncoder) -> Counting:
    return Counting(encoder)


def _cache(directory: Path) -> EmbeddingCache:
    return EmbeddingCache(directory, model_identity(MINILM_L6_V2))


def test_vectors_are_encoded_once_then_read_back_identical(tmp_path: Path, counting: Counting) -> None:
    first = _cache(tmp_path).vectors(TEXTS, counting.encode)
    again = _cache(tmp_path).vectors(TEXTS, counting.encode)  # a new process: a new cache object, same directory
    assert counting.encoded == [TEXTS]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(again, counting.encoder.encode(TEXTS), atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [_cache(tmp_path).path(TEXTS).name]  # no partial files left


def test_other_texts_or_another_model_are_encoded_again(tmp_path: Path, counting: Counting) -> None:
    _cache(tmp_path).vectors(TEXTS, counting.encode)
    edited = [*TEXTS[:2], "do you take Delta Dental"]
    _cache(tmp_path).vectors(edited, counting.encode)
    _cache(tmp_path).vectors(TEXTS[::-1], counting.encode)  # order matters: rows follow the texts
    other_model = EmbeddingCache(tmp_path, model_identity(MINILM_L6_V2) + "|model.safetensors=0000")
    other_model.vectors(TEXTS, counting.encode)
    assert counting.encoded == [TEXTS, edited, TEXTS[::-1], TEXTS]
    assert len(list(tmp_path.glob("*.npz"))) == 4
    assert _cache(tmp_path).key(["ab", "c"]) != _cache(tmp_path).key(["a", "bc"])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped", "empty", "wrong rows"])
def test_a_corrupt_cache_file_is_ignored_and_rebuilt(tmp_path: Path, counting: Counting, damage: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    cache = _cache(tmp_path)
    good = cache.vectors(TEXTS, counting.encode)
    path = cache.path(TEXTS)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "flipped":  # one byte of one vector: the file still loads, its digest does not match
        vectors = good.copy()
        vectors[1, 7] += np.float32(0.25)
        np.savez(path, vectors=vectors, digest=np.load(path)["digest"])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a sound file of another text list's vectors under this name
        other = _cache(tmp_path / "other")
        other.vectors(TEXTS[:2], counting.encode)
        path.write_bytes(other.path(TEXTS[:2]).read_bytes())
    counting.encoded.clear()
    rebuilt = cache.vectors(TEXTS, counting.encode)
    assert counting.encoded == [TEXTS], "the damaged file is not served"
    np.testing.assert_allclose(rebuilt, good, atol=1e-6)
    assert "FAQ embedding cache file" in caplog.text
    counting.encoded.clear()
    np.testing.assert_array_equal(cache.vectors(TEXTS, counting.encode), rebuilt)
    assert counting.encoded == [], "the rebuilt file is sound again"


def test_a_write_that_fails_halfway_leaves_the_old_file_whole(tmp_path: Path, counting: Counting,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _cache(tmp_path)
    good = cache.vectors(TEXTS, counting.encode)
    path = cache.path(TEXTS)
    before = path.read_bytes()
    path.touch()

    def dies(source: str, target: str) -> None:  # the process is killed between writing and renaming
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", dies)
    path.write_bytes(b"broken")  # force a rebuild, whose store then fails
    rebuilt = cache.vectors(TEXTS, counting.encode)  # the caller still gets its vectors
    np.testing.assert_allclose(rebuilt, good, atol=1e-6)
    assert path.read_bytes() == b"broken", "the file is replaced by a rename only, never written in place"
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "the partial file is removed"
    monkeypatch.undo()
    path.write_bytes(before)
    counting.encoded.clear()
    cache.vectors(TEXTS, counting.encode)
    assert counting.encoded == []


def test_old_files_are_pruned_beyond_the_bound(tmp_path: Path, counting: Counting) -> None:
    cache = _cache(tmp_path)
    for i in range(5):
        cache.vectors([f"question {i}"], counting.encode)
        os.utime(cache.path([f"question {i}"]), (1000 + i, 1000 + i))
    cache.prune(keep=2)
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == sorted(
        cache.path([f"question {i}"]).name for i in (3, 4))


def test_the_engines_faq_matcher_reads_its_phrasings_from_the_cache(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", agents_dir=AGENTS)
    agent = load_agent(settings.default_agent, settings.agents_dir)
    batches: list[int] = []
    encode = SentenceEncoder.encode

    def counted(self: SentenceEncoder, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        batches.append(len(texts))
        return encode(self, texts)

    monkeypatch.setattr(SentenceEncoder, "encode", counted)
    cold = Engines(settings).faq_matcher(agent)
    phrasings = sum(len(faq.questions) for faq in agent.faqs)
    assert batches == [phrasings]
    assert list((tmp_path / "cache" / "embeddings").glob("*.npz")), "cached under the cache directory"
    assert not (tmp_path / "data" / "embeddings").exists()
    batches.clear()
    warm = Engines(settings).faq_matcher(agent)  # the next process
    assert batches == []
    faq, score = warm.match("what time do you open")
    assert batches == [1], "only the caller's question is encoded"
    assert faq is not None and (faq.id, score) == (cold.match("what time do you open")[0].id,  # type: ignore[union-attr]
                                                   pytest.approx(cold.match("what time do you open")[1], abs=1e-5))
