"""The process's engines: provider clients per region, models and pools, built from Settings, shared by calls.

One :class:`Engines` per process owns everything expensive a call uses:
the Deepgram client, one Bedrock client per (region, endpoint) and the
thread pool that reads their streams, the whisper models (English and
multilingual) and the lock that keeps their inferences one at a time, the
pocketsphinx decoder pool, the voices, the FAQ matchers (one per agent
configuration, so an edited agent gets a new one) on one sentence encoder,
and the language detector. Nothing of this lives in module globals; tests
and benchmarks build their own :class:`Engines` and throw it away.

Scripted providers plug in where real ones do: ``deepgram_client`` and
``bedrock_client`` replace the SDK clients (the stages that use them run
unchanged), the way httpx's ``MockTransport`` replaces a network.

Everything is created lazily and thread-safely; :meth:`warm` loads what the
settings select (blocking: run it in a thread at startup). What a call needs
only a moment after it starts — the multilingual whisper model (audio
language ID on a call's first utterance), the text language detector, the
recognisers that only stand in for Deepgram — is loaded by
:meth:`warm_in_background` once the server is ready, so ``/health`` answers
seconds sooner and a process that never takes such a call never pays for them.
The FAQ phrasings' vectors are cached on disk (:mod:`~aybiza.processors.llm.embedding_cache`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
from lingua import LanguageDetector

from .agents import AgentConfig
from .config import Settings
from .edge.answers import agent_fingerprint
from .errors import ConfigError, CredentialsError
from .processors.language import DEFAULT_LANGUAGES, detector_for
from .processors.llm.bedrock import MAX_CONCURRENT_STREAMS, bedrock_client, classify_error
from .processors.llm.embedding import SentenceEncoder
from .processors.llm.embedding_cache import EmbeddingCache, model_identity
from .processors.llm.faq import FAQMatcher
from .processors.packaged import MINILM_L6_V2, WHISPER_BASE, joined_dir
from .processors.smart_turn import SmartTurnModel
from .processors.stt.deepgram import deepgram_client, deepgram_environment
from .processors.stt.sphinx import SphinxPool
from .processors.stt.whisper import WhisperRecognizer, primary_language
from .processors.tts.base import SpeechSynthesizer
from .processors.tts.espeak import EspeakSynthesizer
from .processors.tts.flite import FliteSynthesizer
from .processors.tts.piper import PiperSynthesizer

__all__ = ["BedrockClientFactory", "Engines"]

BedrockClientFactory = Callable[[str, "str | None", float], Any]
"""``(region, endpoint_url, read_timeout) -> bedrock-runtime client``."""

log = logging.getLogger("aybiza.engines")

_MAX_MATCHERS = 32  # distinct agent configurations kept; an edited agent is a new configuration


class Engines:
    """Provider clients, models and pools of one process."""

    def __init__(
        self,
        settings: Settings,
        *,
        deepgram_client: Any = None,
        bedrock_client: BedrockClientFactory | None = None,
    ) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        # Slow builds (seconds of CPU) have locks of their own: a call's stage asking the event loop's
        # way for a voice must never wait behind a FAQ matcher being encoded in another thread.
        self._matchers_lock = threading.Lock()
        self._detectors_lock = threading.Lock()
        self._deepgram = deepgram_client
        self._bedrock_factory = bedrock_client
        self._bedrock: dict[tuple[str, str | None, float], Any] = {}
        self._bedrock_pool: ThreadPoolExecutor | None = None
        # One whisper inference at a time per process, whichever model: each already uses a core.
        self.whisper_slots = threading.BoundedSemaphore(1)
        self.whisper_limiter = anyio.CapacityLimiter(1)
        # Issue 16 (mouth to ear): a first utterance's audio language ID runs beside its recognition, one at a time.
        self.lid_slots = threading.BoundedSemaphore(1)
        self.lid_limiter = anyio.CapacityLimiter(1)
        self._whisper: dict[str, WhisperRecognizer] = {}
        self.sphinx = SphinxPool()
        self.sphinx_limiter = anyio.CapacityLimiter(os.cpu_count() or 1)
        self._voices: dict[str, SpeechSynthesizer] = {}
        self._encoder: SentenceEncoder | None = None
        self._matchers: OrderedDict[str, FAQMatcher] = OrderedDict()
        self.embeddings = EmbeddingCache(settings.startup_cache_dir / "embeddings", model_identity(MINILM_L6_V2))
        self._detectors: dict[frozenset[str], LanguageDetector] = {}
        self._smart_turn: SmartTurnModel | None = None
        # One end-of-turn inference at a time per process: each is ~10-60 ms of one core.
        self.smart_turn_limiter = anyio.CapacityLimiter(1)

    # -- providers ------------------------------------------------------------------

    def deepgram(self) -> Any:
        """The process's Deepgram client (listen and speak) for the configured key and URL."""
        with self._lock:
            if self._deepgram is None:
                self._deepgram = deepgram_client(self.settings.deepgram_api_key, self.settings.deepgram_url)
            return self._deepgram

    def bedrock(self, region: str, endpoint_url: str | None = None, *, read_timeout: float = 2.5) -> Any:
        """The process's ``bedrock-runtime`` client for a region and endpoint (created once)."""
        endpoint = endpoint_url or self.settings.bedrock_endpoint_url or None
        key = (region, endpoint, float(read_timeout))
        with self._lock:
            client = self._bedrock.get(key)
            if client is None:
                if self._bedrock_factory is not None:
                    client = self._bedrock_factory(region, endpoint, read_timeout)
                else:
                    client = bedrock_client(region, endpoint, read_timeout=read_timeout,
                                            api_key=self.settings.bedrock_api_key)
                self._bedrock[key] = client
            return client

    @property
    def bedrock_pool(self) -> ThreadPoolExecutor:
        """Threads that read Bedrock event streams (one per stream in flight)."""
        with self._lock:
            if self._bedrock_pool is None:
                self._bedrock_pool = ThreadPoolExecutor(MAX_CONCURRENT_STREAMS, thread_name_prefix="aybiza-bedrock")
            return self._bedrock_pool

    # -- recognisers ------------------------------------------------------------------

    def whisper(self, language: str = "en") -> WhisperRecognizer:
        """The recogniser for ``language``: the English model for English, the multilingual one otherwise."""
        multilingual = primary_language(language) != "en"
        key = "multilingual" if multilingual else "en"
        with self._lock:
            recognizer = self._whisper.get(key)
            if recognizer is None:
                settings = self.settings
                if multilingual:
                    # The packaged base model ships split in two; it is joined once under the data directory.
                    directory = settings.whisper_multilingual_dir or joined_dir(
                        WHISPER_BASE, settings.startup_cache_dir / "models")
                    recognizer = WhisperRecognizer(directory, beam_size=settings.whisper_beam_size,
                                                   multilingual=True, slots=self.whisper_slots,
                                                   limiter=self.whisper_limiter, lid_slots=self.lid_slots,
                                                   lid_limiter=self.lid_limiter)
                else:
                    recognizer = WhisperRecognizer(settings.whisper_model_dir, beam_size=settings.whisper_beam_size,
                                                   slots=self.whisper_slots, limiter=self.whisper_limiter)
                self._whisper[key] = recognizer
            return recognizer

    # -- turn-taking --------------------------------------------------------------------

    @property
    def smart_turn(self) -> SmartTurnModel:
        """The end-of-turn model (smart-turn v3 from the pipecat-ai wheel), shared by every call."""
        with self._lock:
            if self._smart_turn is None:
                self._smart_turn = SmartTurnModel()
            return self._smart_turn

    # -- voices -------------------------------------------------------------------------

    def voice(self, name: str) -> SpeechSynthesizer:
        """An embedded voice engine by name (``piper``, ``espeak``, ``flite``), created once."""
        with self._lock:
            engine = self._voices.get(name)
            if engine is None:
                if name == "piper":
                    engine = PiperSynthesizer()
                elif name == "espeak":
                    engine = EspeakSynthesizer()
                elif name == "flite":
                    engine = FliteSynthesizer()
                else:
                    raise ConfigError(f"no embedded voice {name!r} (piper, espeak, flite)")
                self._voices[name] = engine
            return engine

    @property
    def local_voice(self) -> SpeechSynthesizer:
        """The voice that always works, offline: the embedded voice the settings chose, else piper."""
        tts = self.settings.tts
        return self.voice(tts if tts in ("piper", "espeak", "flite") else "piper")

    @property
    def other_languages_voice(self) -> SpeechSynthesizer:
        """The local voice for languages the main voice cannot speak."""
        return self.voice("espeak")

    # -- understanding ------------------------------------------------------------------

    def faq_matcher(self, agent: AgentConfig, language: str | None = None) -> FAQMatcher:
        """The FAQ matcher of this agent configuration in ``language`` (default the agent's; blocking the first
        time: run it in a thread)."""
        language = (language or agent.language).split("-", 1)[0].lower()
        key = f"{agent_fingerprint(agent)}:{language}"
        with self._matchers_lock:
            matcher = self._matchers.pop(key, None)
            if matcher is None:
                if self._encoder is None:
                    self._encoder = SentenceEncoder.packaged()
                encoder = self._encoder
                matcher = FAQMatcher(agent, encoder, language=language,
                                     encode_phrasings=lambda texts: self.embeddings.vectors(texts, encoder.encode))
            self._matchers[key] = matcher  # most recently used last
            while len(self._matchers) > _MAX_MATCHERS:
                self._matchers.popitem(last=False)
            return matcher

    def language_detector(self, languages: frozenset[str] = frozenset(DEFAULT_LANGUAGES)) -> LanguageDetector:
        """A text language detector for exactly these languages (blocking the first time)."""
        with self._detectors_lock:
            detector = self._detectors.get(languages)
            if detector is None:
                detector = detector_for(languages)
                self._detectors[languages] = detector
            return detector

    # -- startup checks ---------------------------------------------------------------------

    def check(self) -> None:
        """Fail fast, before serving, when a chosen provider has no credentials (``CredentialsError``)."""
        settings = self.settings
        if "deepgram" in (settings.stt, settings.tts):
            self.deepgram()
        if settings.llm == "bedrock":
            self.bedrock(settings.bedrock_region)

    def verify_keys(self, timeout_s: float = 5.0) -> list[str]:
        """Ask each chosen provider whether it accepts our key (blocking).

        Raises ``CredentialsError`` when a provider refuses it; returns warnings
        for providers that could not be asked (unreachable: the call-time
        fallbacks cover those).
        """
        settings, warnings = self.settings, []
        if "deepgram" in (settings.stt, settings.tts):
            warnings += _verify_deepgram(settings, timeout_s)
        if settings.llm == "bedrock":
            warnings += _verify_bedrock(self.bedrock(settings.bedrock_region), settings.bedrock_region)
        return warnings

    # -- lifecycle ----------------------------------------------------------------------

    def warm(self, agent: AgentConfig) -> None:
        """Load what a call needs the moment it starts, for the settings and the default ``agent`` (blocking).

        That is the recogniser of the agent's language (when whisper is the recogniser), the
        end-of-turn model, the local voice and the FAQ matcher; the rest waits for
        :meth:`warm_later`. The loads run side by side on a few threads (model loading and the
        first inferences release the GIL): a server is ready in about half the time of loading
        them in turn.
        """
        settings = self.settings
        jobs: list[Callable[[], object]] = []
        if settings.stt == "whisper":
            jobs.append(functools.partial(self._warm_whisper, primary_language(agent.language)))
        elif settings.stt == "sphinx":
            jobs.append(self.sphinx.warm)
        if settings.end_of_turn != "silence":
            jobs.append(self._warm_smart_turn)
        warm = getattr(self.local_voice, "warm", None)
        if callable(warm):
            jobs.append(warm)
        if settings.llm == "faq":
            jobs.append(lambda: self.faq_matcher(agent))
        if settings.stt == "deepgram" or settings.tts == "deepgram":
            jobs.append(self.deepgram)
        _run_side_by_side(jobs)

    def warm_later(self, agent: AgentConfig) -> None:
        """Load what calls need a moment after they start, or only when something fails (blocking).

        Whisper's two models (English, and the multilingual one that audio language ID on a
        call's first utterance needs; for Deepgram they are the fallback) and the text
        language detector of the first transcripts. A call that needs one before it is loaded
        waits for that load (the engines' locks), as the first call used to wait for startup.
        """
        jobs: list[Callable[[], object]] = []
        if self.settings.stt in ("whisper", "deepgram"):  # whisper is Deepgram's fallback too
            languages = {"en"} | {primary_language(language) for language in agent.languages} | {"es"}
            jobs += [functools.partial(self._warm_whisper, language) for language in sorted(languages)[:2]]
        jobs.append(self.language_detector)
        _run_side_by_side(jobs)

    def warm_in_background(self, agent: AgentConfig) -> threading.Thread:
        """Run :meth:`warm_later` in a daemon thread (a serving process, once ready); a failure is logged.

        A model that fails to load here fails again, with its error, in the call that needs it,
        which then ends with an apology like any failed stage.
        """
        def run() -> None:
            started = time.perf_counter()
            try:
                self.warm_later(agent)
                log.info("models for later calls loaded in %.1f s", time.perf_counter() - started)
            except Exception:  # logged, not raised: the thread has nobody to raise to
                log.exception("loading the models calls need later failed; calls that need them will fail")

        thread = threading.Thread(target=run, name="aybiza-warm-later", daemon=True)
        thread.start()
        return thread

    def _warm_whisper(self, language: str) -> None:
        recognizer = self.whisper(language)
        if recognizer.loaded:
            return  # warm already did it
        recognizer.load()
        recognizer.transcribe(bytes(32000), 16000, language)  # the first inference is twice as slow

    def _warm_smart_turn(self) -> None:
        self.smart_turn.load()
        self.smart_turn.calibrated_probability(bytes(16000), 8000)  # the first inference is the slow one

    def close(self) -> None:
        """Stop the Bedrock reader threads (in-flight reads end with their sockets)."""
        with self._lock:
            if self._bedrock_pool is not None:
                self._bedrock_pool.shutdown(wait=False, cancel_futures=True)
                self._bedrock_pool = None


def _run_side_by_side(jobs: list[Callable[[], object]]) -> None:
    """Run the jobs on a few threads; the first failure is raised, as a load in turn would."""
    if not jobs:
        return
    with ThreadPoolExecutor(min(len(jobs), (os.cpu_count() or 1) + 1), thread_name_prefix="aybiza-warm") as pool:
        for done in [pool.submit(job) for job in jobs]:
            done.result()


def _verify_deepgram(settings: Settings, timeout_s: float) -> list[str]:
    """``GET /v1/projects`` with our key: 401/403 means Deepgram refuses it."""
    import httpx

    environment = deepgram_environment(settings.deepgram_url)
    url = f"{environment.base.rstrip('/')}/v1/projects"
    try:
        response = httpx.get(url, headers={"Authorization": f"Token {settings.deepgram_api_key.strip()}"},
                             timeout=timeout_s)
    except httpx.HTTPError as error:
        return [f"Deepgram could not be asked about the key ({url}: {type(error).__name__}); the local "
                "recogniser and voice stand in if it stays unreachable"]
    if response.status_code in (401, 403):
        raise CredentialsError(f"Deepgram refused DEEPGRAM_API_KEY (HTTP {response.status_code} from {url})",
                               provider="deepgram")
    return []


def _verify_bedrock(client: Any, region: str) -> list[str]:
    """A request for a model that does not exist: a credentials error means Bedrock refuses our key.

    Bedrock checks the signature before the model id, and an invalid model id costs nothing.
    """
    request = {"modelId": "aybiza-credentials-check", "inferenceConfig": {"maxTokens": 1},
               "messages": [{"role": "user", "content": [{"text": "."}]}]}
    try:
        response = client.converse_stream(**request)
        close = getattr(response.get("stream"), "close", None)
        if callable(close):
            close()
    except Exception as error:  # botocore raises many types; classify them
        mapped = classify_error(error, region=region)
        if isinstance(mapped, CredentialsError):
            raise CredentialsError(f"Bedrock refused our AWS credentials in {region}: {mapped}",
                                   provider="bedrock", region=region) from error
        if mapped is None or mapped.retryable:
            return [f"Bedrock in {region} could not be asked about our credentials ({type(error).__name__})"]
    return []
