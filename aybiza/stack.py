"""How a call's pipeline is built: which stages, on which of the process's engines.

``SpeechStack.build(ctx, agent, ...)`` returns a call's processors in the
design's order (``quality -> vad -> endpoint -> stt -> language -> turns -> watchdog -> model -> tts``;
the transport adds its output stage) and the frames that open the call (the
agent's greeting). The engines are the process's (:class:`~aybiza.engines.Engines`);
a call only creates cheap per-call state. The model stage gets the call's
:class:`~aybiza.tools.toolbox.Toolbox` when the agent has tools (or, for the
FAQ responder, FAQs that bind an action), acting through the session's
:class:`~aybiza.tools.toolbox.CallActions`. Providers that can fail in the
field come with their local fallback: Deepgram's recogniser falls back to
whisper, Aura to the local voice (:class:`~aybiza.processors.fallback.FallbackStage`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .agents import AgentConfig
from .config import Settings
from .edge.answers import AnswerPolicy
from .edge.cache import Cache
from .edge.calls import CallStore
from .engines import Engines
from .errors import EndReason
from .observability import tracing
from .observability.tracing import TraceTap
from .pipeline import AgentText, AgentTurnDone, CallContext, Frame, IncidentKind, Processor
from .processors.cache import CachedAnswers, CachingSynthesizer
from .processors.endpoint import PROFILES, EndOfTurnStage
from .processors.fallback import FallbackStage, Replay
from .processors.journal import CallJournal
from .processors.language import DEFAULT_LANGUAGES, LanguageProcessor
from .processors.llm.faq import FAQResponder
from .processors.llm.openai_compat import OpenAICompatLLM
from .processors.llm.reply import ReplyProcessor
from .processors.llm.routed import BedrockStreamers, RoutedBedrock
from .processors.llm.sentences import ChatMessage
from .processors.preempt import PreemptiveReplies
from .processors.quality import QualityProcessor
from .processors.stt.deepgram import DeepgramSTT
from .processors.stt.sphinx import SphinxSTT
from .processors.stt.whisper import WhisperSTT
from .processors.tts.base import SpeechSynthesizer, TTSProcessor
from .processors.tts.deepgram import DeepgramTTS
from .processors.turns import TurnTaker
from .processors.vad import VADProcessor
from .processors.watchdog import TurnWatchdog
from .routing.router import CallRouting
from .routing.service import RoutingService
from .tools.toolbox import CallActions, Toolbox

__all__ = ["SpeechStack"]


class SpeechStack:
    """The recipe of a call's pipeline over the process's engines and services."""

    def __init__(
        self,
        settings: Settings,
        engines: Engines,
        *,
        cache: Cache | None = None,
        routing: RoutingService | None = None,
        cost_so_far: Callable[[CallContext], float] = lambda ctx: 0.0,
    ) -> None:
        self.settings = settings
        self.otlp = tracing.otlp_target(settings)  # where calls' spans go (issue 16); None: no tracing
        self.engines = engines
        self.cache = cache
        self.routing = routing
        self.store: CallStore | None = None  # set once the durable store is open
        self._cost_so_far = cost_so_far

    @property
    def bedrock_streamers(self) -> BedrockStreamers:
        """ConverseStream streamers on the process's boto3 clients and reader threads."""
        assert self.routing is not None
        engines = self.engines
        return BedrockStreamers(
            self.routing, lambda region, endpoint, read_timeout: engines.bedrock(region, endpoint,
                                                                                 read_timeout=read_timeout),
            engines.bedrock_pool)

    def warm(self) -> None:
        """Create what a call would otherwise create on the event loop (blocking: run it in a thread at startup).

        A boto3 client made on first use blocks the loop for 0.1-0.6 s, stalling every
        call's audio in the middle of the first turn (or failover) that needs it; Deepgram's
        client (its HTTP and TLS set-up) ~0.15 s, delaying the first call's greeting and recogniser.
        """
        settings = self.settings
        if settings.llm == "bedrock" and self.routing is not None:
            self.bedrock_streamers.warm()
        if "deepgram" in (settings.stt, settings.tts):
            self.engines.deepgram()

    def build(
        self,
        ctx: CallContext,
        agent: AgentConfig,
        *,
        call_routing: CallRouting | None = None,
        history: Sequence[Mapping[str, str]] = (),
        resumed: bool = False,
        turn_offset: int = 0,
        actions: CallActions | None = None,
    ) -> tuple[list[Processor], list[Frame]]:
        """Processors for one call and the frames that open it.

        A call ``resumed`` from another process carries its conversation
        (``history``) into the model and is not greeted again. ``actions`` is
        what the agent's tools may do to the call (none: only lookups).
        """
        settings = self.settings
        vad, listening = self._listening()

        def quiet() -> float:
            """issue 16: the recognisers (whisper starts early; Deepgram sends a word's end at once) and the
            preemptive replies ask the call's VAD how long the caller has been quiet."""
            return vad.silent_s

        stt = self._stt(ctx, quiet)
        answers = self._answers(ctx, agent, call_routing, history, resumed, turn_offset, actions, quiet)
        processors: list[Processor] = [
            QualityProcessor(),  # sees every frame, before the gate drops silence
            *listening,
            stt,
            LanguageProcessor(self.engines.language_detector, speaks=agent.languages),  # the first transcripts
            TurnTaker(barge_in=settings.barge_in),
            TurnWatchdog(reply_timeout_s=settings.reply_timeout_s, silence_s=settings.silence_reprompt_s,
                         reprompts=settings.silence_reprompts),
            answers,
            *([TraceTap(self.otlp)] if self.otlp else []),  # traces (issue 16): only with an OTLP endpoint
            self._tts(ctx),
        ]
        greeting = AgentText(agent.text("greeting", ctx.language), turn_id=0,
                             language=agent.reply_language(ctx.language))
        opening: list[Frame] = [] if resumed else [greeting, AgentTurnDone(turn_id=0)]
        return processors, opening

    # -- recognition ----------------------------------------------------------------------

    def _listening(self) -> tuple[VADProcessor, list[Processor]]:
        """The VAD, and the stages that listen: the VAD and the end-of-turn stage that holds its stops until the
        turn is over (unless silence only)."""
        settings, silence_only = self.settings, self.settings.end_of_turn == "silence"
        stop_ms = settings.end_of_turn_ms if silence_only else PROFILES[settings.end_of_turn].stop_ms
        vad = VADProcessor(aggressiveness=settings.vad_aggressiveness, stop_ms=stop_ms,
                           barge_in_start_ms=settings.barge_in_start_ms, preroll_ms=settings.preroll_ms)
        if silence_only:
            return vad, [vad]
        model = self.engines.smart_turn
        return vad, [vad, EndOfTurnStage(model.calibrated_probability, PROFILES[settings.end_of_turn],
                                         limiter=self.engines.smart_turn_limiter)]

    def _stt(self, ctx: CallContext, quiet: Callable[[], float]) -> Processor:
        stt, engines = self.settings.stt, self.engines
        if stt == "deepgram":
            # Phone audio goes to Deepgram as the μ-law it arrived as: no resampling, no re-encoding.
            primary = DeepgramSTT(engines.deepgram(), encoding="mulaw" if ctx.transport == "twilio" else "linear16",
                                  caller_quiet_s=quiet)
            return FallbackStage(primary, lambda: self._whisper(quiet), replay=Replay.UTTERANCE,
                                 incident=IncidentKind.STT_FALLBACK, unavailable=EndReason.STT_UNAVAILABLE)
        if stt == "sphinx":
            return SphinxSTT(engines.sphinx, limiter=engines.sphinx_limiter)
        return self._whisper(quiet)

    def _whisper(self, quiet: Callable[[], float]) -> WhisperSTT:
        """The embedded recogniser; its first utterance goes through audio language ID (the call's languages)."""
        return WhisperSTT(self.engines.whisper, identify=1, languages=frozenset(DEFAULT_LANGUAGES),
                          early_s=self.settings.whisper_early_ms / 1000, caller_quiet_s=quiet)

    # -- the model ---------------------------------------------------------------------------

    def _answers(self, ctx: CallContext, agent: AgentConfig, call_routing: CallRouting | None,
                 history: Sequence[Mapping[str, str]], resumed: bool, turn_offset: int,
                 actions: CallActions | None, quiet: Callable[[], float]) -> Processor:
        """The model stage (seeded with the conversation so far), behind the answer cache, inside the journal.

        A chat model is also started before the turn is confirmed (``preemptive``): see
        :mod:`aybiza.processors.preempt`. The FAQ responder answers in milliseconds and keeps
        confirmation state between turns, so it is not preempted.
        """
        model = reply = self._model(ctx, agent, call_routing, actions)
        if isinstance(model, ReplyProcessor) and history:
            model.history.extend(ChatMessage("user" if m["role"] == "user" else "assistant", m["text"])
                                 for m in history if m.get("text"))
        if self.cache is not None and agent.cache_answers:
            policy = AnswerPolicy(agent, stateless_model=self.settings.llm == "faq", tier=ctx.model_tier)
            model = CachedAnswers(model, self.cache, policy, resumed=resumed)
        if self.settings.preemptive and isinstance(reply, ReplyProcessor):
            model = PreemptiveReplies(model, reply,  # the model starts before the turn is confirmed
                                      interim_stable_s=self.settings.preempt_interim_ms / 1000, caller_quiet_s=quiet)
        if self.store is not None:
            model = CallJournal(model, self.store, turn_offset=turn_offset)  # outermost: it sees cache hits too
        return model

    def _model(self, ctx: CallContext, agent: AgentConfig, call_routing: CallRouting | None,
               actions: CallActions | None) -> Processor:
        settings, engines = self.settings, self.engines
        if settings.llm == "bedrock":
            if self.routing is None or call_routing is None:
                raise ValueError("the Bedrock model stage needs the call's routing")
            routing = self.routing
            streamer = RoutedBedrock(ctx, routing, call_routing, streamer_for=self.bedrock_streamers,
                                     cost_budget_usd=agent.cost_budget_usd,
                                     cost_so_far=lambda: self._cost_so_far(ctx),
                                     on_failover=ctx.ledger.failover)
            return ReplyProcessor(streamer, system_prompt=agent.system_prompt,
                                  tools=self._toolbox(ctx, agent, actions) if agent.tools else None)
        if settings.llm == "openai":
            return OpenAICompatLLM(model=settings.openai_model, system_prompt=agent.system_prompt,
                                   base_url=settings.openai_base_url, api_key=settings.openai_api_key,
                                   tools=self._toolbox(ctx, agent, actions) if agent.tools else None)
        acts = any(faq.action for faq in agent.faqs)
        return FAQResponder(agent, lambda language: engines.faq_matcher(agent, language),
                            actions=self._toolbox(ctx, agent, actions) if acts else None)

    def _toolbox(self, ctx: CallContext, agent: AgentConfig, actions: CallActions | None) -> Toolbox:
        """The call's tools: secrets through Settings, the FAQ through the process's matcher."""
        engines = self.engines
        return Toolbox(ctx, agent, actions=actions, secret=self.settings.secret,
                       faq=lambda: engines.faq_matcher(agent))

    # -- the voice --------------------------------------------------------------------------

    def _tts(self, ctx: CallContext) -> Processor:
        settings = self.settings
        if settings.tts == "deepgram":
            primary = DeepgramTTS(self.engines.deepgram(), voice=settings.deepgram_voice,
                                  voices=settings.deepgram_voices,
                                  encoding="mulaw" if ctx.transport == "twilio" else "linear16")
            return FallbackStage(primary, lambda: self._local_tts(ctx), replay=Replay.AGENT_TEXT,
                                 incident=IncidentKind.TTS_FALLBACK, unavailable=EndReason.TTS_UNAVAILABLE)
        return self._local_tts(ctx)

    def _local_tts(self, ctx: CallContext) -> Processor:
        voice, other = self.engines.local_voice, self.engines.other_languages_voice
        if self.cache is not None:  # greetings and common answers cost nothing and start at once
            voice = self._cached(voice, ctx)
            other = self._cached(other, ctx)
        return TTSProcessor(voice, fallback=other)

    def _cached(self, engine: SpeechSynthesizer, ctx: CallContext) -> SpeechSynthesizer:
        assert self.cache is not None
        return CachingSynthesizer(engine, self.cache, ctx=ctx)

