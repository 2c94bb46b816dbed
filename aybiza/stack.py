"""The speech stack a process runs: which STT, model and TTS, loaded once and shared by calls.

``SpeechStack.build(ctx)`` returns a call's processors in the design's order
(``quality -> vad -> stt -> language -> turns -> model -> tts``; the transport adds its own input
and output ends) and the frames that open the call (the agent's greeting).
Engines are process-wide and loaded by ``warm()`` at startup, off the event
loop; a call only creates cheap per-call state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property

from .agents import AgentConfig, list_agents, load_agent
from .config import Settings
from .edge.answers import AnswerPolicy
from .edge.cache import Cache
from .edge.calls import CallStore
from .errors import ConfigError
from .pipeline import AgentText, AgentTurnDone, CallContext, Frame, Processor
from .processors.cache import CachedAnswers, CachingSynthesizer
from .processors.journal import CallJournal
from .processors.language import DEFAULT_LANGUAGES, LanguageProcessor, detector_for
from .processors.llm.bedrock import BedrockLLM, bedrock_client
from .processors.llm.faq import FAQResponder, shared_matcher
from .processors.llm.openai_compat import OpenAICompatLLM
from .processors.llm.routed import BedrockStreamers, RoutedBedrock
from .processors.llm.sentences import ChatMessage, ReplyProcessor
from .processors.quality import QualityProcessor
from .processors.stt.deepgram import DeepgramSTT, resolve_api_key
from .processors.stt.sphinx import SPHINX_POOL, SphinxSTT
from .processors.stt.whisper import WhisperRecognizer, WhisperSTT
from .processors.tts.base import SpeechSynthesizer, TTSProcessor
from .processors.tts.deepgram import DeepgramTTS
from .processors.tts.espeak import EspeakSynthesizer
from .processors.tts.flite import FliteSynthesizer
from .processors.tts.piper import PiperSynthesizer
from .processors.turns import TurnTaker
from .processors.vad import VADProcessor
from .routing.router import CallInfo, CallRouting, RoutingPolicy
from .routing.service import RoutingService
from .routing.tiers import resolve_model

__all__ = ["SpeechStack"]

log = logging.getLogger("aybiza.stack")

UNAVAILABLE = "Sorry, I can't answer that right now. Could you say it again in a moment?"


class SpeechStack:
    """Process-wide engines plus the recipe for one call's pipeline."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._agents: dict[str, AgentConfig] = {}
        # Process-wide services the runtime plugs in (None: run without them).
        self.cache: Cache | None = None
        self.store: CallStore | None = None
        self.routing: RoutingService | None = None
        self.on_failover: Callable[[str, str], None] = lambda from_region, to_region: None

    def agent(self, agent_id: str) -> AgentConfig:
        """The agent's configuration (read once per process)."""
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = load_agent(agent_id, self.settings.agents_dir)
            self._agents[agent_id] = agent
        return agent

    def has_agent(self, agent_id: str) -> bool:
        """Whether an agent file exists for ``agent_id``."""
        return agent_id in self._agents or agent_id in list_agents(self.settings.agents_dir)

    @cached_property
    def recognizer(self) -> WhisperRecognizer:
        """The shared whisper model (default STT)."""
        return WhisperRecognizer(self.settings.whisper_model_dir, beam_size=self.settings.whisper_beam_size)

    @cached_property
    def synthesizer(self) -> SpeechSynthesizer:
        """The agent voice for English."""
        if self.settings.tts == "piper":
            return PiperSynthesizer()
        if self.settings.tts == "flite":
            return FliteSynthesizer()
        if self.settings.tts == "espeak":
            return EspeakSynthesizer()
        raise ConfigError(f"TTS {self.settings.tts!r} is not available in the embedded stack")

    @cached_property
    def other_languages(self) -> SpeechSynthesizer:
        """The voice for languages the main voice cannot speak."""
        return EspeakSynthesizer()

    def check(self) -> None:
        """Fail fast, before serving, when a chosen provider has no credentials or the agent is broken."""
        self.agent(self.settings.default_agent)
        if "deepgram" in (self.settings.stt, self.settings.tts):
            resolve_api_key()
        if self.settings.llm == "bedrock":
            bedrock_client(self.settings.bedrock_region)

    def warm(self) -> None:
        """Load every engine the settings select (blocking; run it in a thread at startup)."""
        self.check()
        agent = self.agent(self.settings.default_agent)
        if self.settings.stt == "whisper":
            self.recognizer.load()
        elif self.settings.stt == "sphinx":
            SPHINX_POOL.warm()
        if self.settings.tts != "deepgram":
            warm = getattr(self.synthesizer, "warm", None)
            if callable(warm):
                warm()
        if self.settings.llm == "faq":
            shared_matcher(agent)
        if self.settings.llm == "bedrock" and self.routing is not None:
            BedrockStreamers(self.routing).warm()  # made on first use, a client would block the event loop
        detector_for(frozenset(DEFAULT_LANGUAGES))

    def build(self, ctx: CallContext, *, history: Sequence[Mapping[str, str]] = (),
              resumed: bool = False) -> tuple[list[Processor], list[Frame]]:
        """Processors for one call and the frames that open it.

        A call ``resumed`` from another process carries its conversation
        (``history``) into the model and is not greeted again.
        """
        settings = self.settings
        agent = self.agent(ctx.agent_id)
        processors: list[Processor] = [
            QualityProcessor(),  # sees every frame, before the gate drops silence
            VADProcessor(aggressiveness=settings.vad_aggressiveness, stop_ms=settings.end_of_turn_ms,
                         preroll_ms=settings.preroll_ms),
            self._stt(ctx),
            LanguageProcessor(),  # reads the first final transcripts
            TurnTaker(barge_in=settings.barge_in),
            self._answers(ctx, agent, history, resumed),
            self._tts(ctx),
        ]
        opening: list[Frame] = [] if resumed else [AgentText(agent.greeting, turn_id=0, language=agent.language),
                                                   AgentTurnDone(turn_id=0)]
        return processors, opening

    def _stt(self, ctx: CallContext) -> Processor:
        stt = self.settings.stt
        if stt == "deepgram":
            # Phone audio goes to Deepgram as the μ-law it arrived as: no resampling.
            return DeepgramSTT(encoding="mulaw" if ctx.transport == "twilio" else "linear16")
        if stt == "sphinx":
            return SphinxSTT()
        return WhisperSTT(self.recognizer)

    def _answers(self, ctx: CallContext, agent: AgentConfig, history: Sequence[Mapping[str, str]],
                 resumed: bool) -> Processor:
        """The model stage (seeded with the conversation so far), behind the answer cache, inside the journal."""
        model = self._model(ctx, agent)
        if isinstance(model, ReplyProcessor) and history:
            model.history.extend(ChatMessage("user" if m["role"] == "user" else "assistant", m["text"])
                                 for m in history if m.get("text"))
        if self.cache is not None and agent.cache_answers:
            policy = AnswerPolicy(agent, stateless_model=self.settings.llm == "faq", tier=ctx.model_tier)
            model = CachedAnswers(model, self.cache, policy, resumed=resumed)
        if self.store is not None:
            model = CallJournal(model, self.store)  # outermost: it sees cache hits too
        return model

    def _model(self, ctx: CallContext, agent: AgentConfig) -> Processor:
        llm = self.settings.llm
        if llm == "bedrock" and self.routing is not None and ctx.region != "local":
            routing = self.routing
            # The same policy as RoutingService.route_call, which placed the call.
            policy = RoutingPolicy(data_residency=bool(agent.residency),
                                   residency_zones=frozenset({agent.residency or "EU"}))
            call_routing = CallRouting(CallInfo.from_number(ctx.caller), routing.catalog, policy)
            streamer = RoutedBedrock(ctx, routing, call_routing, streamer_for=BedrockStreamers(routing),
                                     cost_budget_usd=agent.cost_budget_usd, on_failover=self.on_failover)
            return ReplyProcessor(streamer, system_prompt=agent.system_prompt, error_text=UNAVAILABLE)
        if llm == "bedrock":
            if ctx.region == "local":
                ctx.region = self.settings.bedrock_region
            tier = ctx.model_tier if ctx.model_tier != "local" else self.settings.model_tier
            model = resolve_model(tier, ctx.region, self.settings.model_overrides,
                                  thinking_budget=self.settings.thinking_budget)
            ctx.model_tier = model.tier
            return BedrockLLM(region=ctx.region, model_id=model.model_id, system_prompt=agent.system_prompt,
                              thinking_budget=model.thinking_budget, error_text=UNAVAILABLE)
        if llm == "openai":
            return OpenAICompatLLM(model=self.settings.openai_model, system_prompt=agent.system_prompt)
        return FAQResponder(agent)

    def _tts(self, ctx: CallContext) -> Processor:
        if self.settings.tts == "deepgram":
            return DeepgramTTS(voice=self.settings.deepgram_voice,
                               encoding="mulaw" if ctx.transport == "twilio" else "linear16")
        voice, other = self.synthesizer, self.other_languages
        if self.cache is not None:  # greetings and common answers cost nothing and start at once
            voice = CachingSynthesizer(voice, self.cache, ctx=ctx)
            other = CachingSynthesizer(other, self.cache, ctx=ctx)
        return TTSProcessor(voice, fallback=other)
