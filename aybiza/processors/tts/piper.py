"""Piper neural TTS (piper-tts 1.x), by default the hash-checked en_US joe medium voice.

The ONNX session is loaded once per process per model and runs on one
intra-op thread, so concurrent calls share cores fairly instead of each
grabbing all of them. Text is cut at clause punctuation (and a long opening
clause before a connective word) and each piece is synthesized on its own:
the first audio is ready after the first piece (about 50 ms for "Hello,"
on a warm voice), not after the whole sentence.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import threading
from collections.abc import Generator
from pathlib import Path

import onnxruntime
from piper import PiperVoice
from piper.config import PiperConfig, SynthesisConfig

from ...errors import ConfigError
from ..packaged import PIPER_JOE_MEDIUM, sha256_of, verified_dir
from .base import AudioChunk, split_clauses

__all__ = ["PiperSynthesizer", "load_voice", "JOE_MODEL_FILE"]

JOE_MODEL_FILE = "en_US-joe-medium.onnx"

def _config_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".json")


def load_voice(model_path: Path) -> PiperVoice:
    """Load the piper voice at ``model_path`` (config beside it as ``.onnx.json``); blocking."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    config = json.loads(_config_path(model_path).read_text(encoding="utf-8"))
    return PiperVoice(
        session=onnxruntime.InferenceSession(str(model_path), sess_options=options,
                                             providers=["CPUExecutionProvider"]),
        config=PiperConfig.from_dict(config),
    )


@functools.cache
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, once per process per (path, size, mtime)."""
    return sha256_of(path)


class PiperSynthesizer:
    """Piper TTS; ``length_scale`` multiplies the voice's own pace (> 1 slower, < 1 faster).

    ``first_clause_words``: an opening clause longer than this many words is
    cut before a connective word so the first audio comes sooner (None: never).
    The voice loads on first use and stays with this object; the process's
    engines keep one synthesizer per voice.
    """

    __slots__ = ("model_path", "sample_rate", "_length_scale", "_first_clause_words", "_voice", "_lock", "_warmed",
                 "_identity")

    name = "piper"

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        length_scale: float = 1.0,
        first_clause_words: int | None = 8,
    ) -> None:
        if length_scale <= 0:
            raise ConfigError(f"piper length_scale must be positive, got {length_scale}")
        if model_path is None:
            model_path = verified_dir(PIPER_JOE_MEDIUM) / JOE_MODEL_FILE
        model_path = Path(model_path).resolve()
        config_path = _config_path(model_path)
        if not model_path.is_file() or not config_path.is_file():
            raise ConfigError(f"piper voice needs {model_path} and {config_path}")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            self.sample_rate = int(config["audio"]["sample_rate"])
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{config_path} is not a piper voice config: {error}") from error
        self.model_path = model_path
        self._length_scale = length_scale
        self._first_clause_words = first_clause_words
        self._voice: PiperVoice | None = None
        self._lock = threading.Lock()
        self._warmed = False
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """What decides this voice's audio (a rendering cache's key): piper-tts, the model's bytes, the pace."""
        if self._identity is None:
            model, config = (_file_digest(path, path.stat().st_size, path.stat().st_mtime_ns)
                             for path in (self.model_path, _config_path(self.model_path)))
            self._identity = (f"piper-tts {importlib.metadata.version('piper-tts')}|onnxruntime "
                              f"{onnxruntime.__version__}|{model}|{config}|{self._length_scale}|"
                              f"{self._first_clause_words}")
        return self._identity

    def voice(self) -> PiperVoice:
        """The loaded voice (loaded once, on first use; blocking)."""
        with self._lock:
            if self._voice is None:
                self._voice = load_voice(self.model_path)
            return self._voice

    def warm(self) -> None:
        """Load the voice and run one short synthesis, once (the first inference is slow)."""
        if self._warmed:
            return
        for _ in self.synthesize("Hello.", "en"):
            pass
        self._warmed = True

    def synthesize(self, text: str, language: str) -> Generator[AudioChunk, None, None]:
        """Yield one PCM16 chunk per clause of ``text`` at the voice's rate (``language`` is the voice's)."""
        voice = self.voice()
        settings = SynthesisConfig(length_scale=voice.config.length_scale * self._length_scale)
        for clause in split_clauses(text, first_max_words=self._first_clause_words):
            for chunk in voice.synthesize(clause, syn_config=settings):
                yield chunk.audio_int16_bytes, chunk.sample_rate
