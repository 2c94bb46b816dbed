"""The call's ledger: typed usage and timings, the one source the record, the cost and the metrics read.

Stages write to the ledger as things happen (tokens per model, seconds of
audio sent to a recogniser, characters synthesised, cache hits and misses,
stage latencies); nothing is kept as string keys to be parsed back later.
A :class:`LedgerSink` (the process's metrics) is told about every sample
and every cache lookup as it is recorded, so the dashboard and Prometheus
see a call while it runs. ``usage()`` is the snapshot that goes into the
call record and is priced when the call ends.

Timing samples are tagged with the turn they belong to. The ledger's
``turn`` is the agent turn being answered (0 is the greeting); a stage
measured *before* the caller's turn is complete (the final transcript)
belongs to the turn about to start, ``turn + 1``.

Tool calls are on the ledger too (:class:`ToolUse`: the turn, the arguments,
the outcome, the result given to the model, the duration), opened when a
call starts so that a turn with one in flight is never cached, and closed
when it ends. Digits a caller typed into a collection are *secrets*:
:meth:`CallLedger.redact` masks them (also spaced out, "1 2 3 4") in any
text bound for the record. With ``pii`` on (``AYBIZA_REDACT_PII``, the
default, or the agent's ``redact_pii``) it also masks card numbers that pass
the Luhn check, phone numbers and email addresses (:mod:`.pii`): everything
the journal, the call store and the archive write goes through it.

The ledger is written on the event loop only (stages in worker threads hop
back to it), so it needs no lock. Writes on the per-frame path
(:meth:`add_audio`) are one addition.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .pii import mask, redact_pii

__all__ = [
    "FAILOVER_AT",
    "CacheKind",
    "CacheUse",
    "CallLedger",
    "Incident",
    "IncidentKind",
    "LedgerSink",
    "Stage",
    "TokenUse",
    "ToolOutcome",
    "ToolUse",
    "Usage",
]


FAILOVER_AT = "failover_at_s"
"""Key in a turn record's timings: seconds into the call its model failed over (not a latency; absent without
one). The journal adds it; :meth:`CallLedger.timings` holds latencies only."""


class Stage(enum.StrEnum):
    """A latency the platform measures; the value is the name metrics and records use."""

    STT_FINAL = "stt_final"  # caller speech end -> final transcript
    LLM_FIRST_TOKEN = "llm_first_token"  # caller turn -> first token of the reply
    LLM_FIRST_SENTENCE = "llm_first_sentence"  # caller turn -> first sentence ready to speak
    LLM_PROVIDER_LATENCY = "llm_provider_latency"  # what the provider reports for the whole reply
    TTS_FIRST_BYTE = "tts_first_byte"  # first text of a turn -> its first audio
    VOICE_TO_VOICE = "voice_to_voice"  # caller speech end -> first agent audio out
    CACHE_ANSWER = "cache_answer"  # caller turn -> answer served from the cache
    EDGE_FRAME = "edge_frame"  # edge preprocessing of one caller frame

    @property
    def before_turn(self) -> bool:
        """Measured before the caller's turn is complete: belongs to the next turn."""
        return self is Stage.STT_FINAL


class CacheKind(enum.StrEnum):
    """What an edge cache lookup was for (the metrics' ``namespace`` label)."""

    ANSWER = "llm"
    AUDIO = "tts"
    AGENT = "agent"


class IncidentKind(enum.StrEnum):
    """Something went wrong and the call went on (or ended) with a fallback."""

    STT_FALLBACK = "stt_fallback"  # the recogniser failed; the embedded one took over
    TTS_FALLBACK = "tts_fallback"  # the voice failed; the local voice took over
    MODEL_FAILED = "model_failed"  # no region answered a turn
    STAGE_FAILED = "stage_failed"  # a stage raised; the call ended with an apology
    ROUTE_REFUSED = "route_refused"  # no eligible region (or residency) for the call
    AGENT_FAILED = "agent_failed"  # the agent's configuration could not be loaded


class TokenUse(BaseModel):
    """Tokens one model read and wrote over the call."""

    model_config = ConfigDict(extra="ignore")

    input: int = 0
    output: int = 0


class CacheUse(BaseModel):
    """Hits and misses of one cache kind over the call."""

    model_config = ConfigDict(extra="ignore")

    hits: int = 0
    misses: int = 0


class Incident(BaseModel):
    """A failure the call survived or ended on: what, why, and when (seconds into the call)."""

    model_config = ConfigDict(extra="ignore")

    kind: IncidentKind
    detail: str = ""
    at_s: float = 0.0


ToolOutcome = Literal["running", "ok", "error", "timeout", "cancelled"]
"""How a tool call ended (``running`` while it runs)."""


class ToolUse(BaseModel):
    """One tool call: which turn, what it was asked, how it ended, what the model got back, how long it took."""

    model_config = ConfigDict(extra="ignore")

    turn: int
    name: str
    kind: str  # "http", a built-in's name, or "action" (bound to an FAQ)
    arguments: dict[str, Any] = Field(default_factory=dict)
    outcome: ToolOutcome = "running"
    result: dict[str, Any] = Field(default_factory=dict)
    error: str = ""
    at_s: float = 0.0  # seconds into the call
    duration_ms: float | None = None


class Usage(BaseModel):
    """What a call used, by provider and engine: stored in its record, priced at its end."""

    model_config = ConfigDict(extra="ignore")

    tokens: dict[str, TokenUse] = Field(default_factory=dict)  # model id -> tokens
    stt_seconds: dict[str, float] = Field(default_factory=dict)  # recogniser -> seconds of audio sent
    tts_chars: dict[str, int] = Field(default_factory=dict)  # voice engine -> characters synthesised
    audio_seconds: float = 0.0  # caller audio that reached the edge
    gated_seconds: float = 0.0  # of which held back as silence (never sent to a recogniser)
    cache: dict[CacheKind, CacheUse] = Field(default_factory=dict)
    answers: dict[str, int] = Field(default_factory=dict)  # model or engine -> turns it answered
    interruptions: int = 0
    stt_reconnects: int = 0
    model_errors: int = 0
    failovers: list[tuple[str, str]] = Field(default_factory=list)  # (from region, to region)
    tools: dict[str, int] = Field(default_factory=dict)  # tool -> calls
    preemptions: dict[str, int] = Field(default_factory=dict)  # preemptive replies: "used" / "discarded"

    @property
    def answered_by(self) -> str:
        """The model that answered most turns (``none`` if none did)."""
        if not self.answers:
            return "none"
        return max(self.answers.items(), key=lambda item: item[1])[0]

    def cache_hits(self, kind: CacheKind) -> int:
        """Hits of ``kind``."""
        use = self.cache.get(kind)
        return use.hits if use is not None else 0


class LedgerSink(Protocol):
    """Where a ledger reports as it records: the process's metrics."""

    def timing(self, stage: Stage, seconds: float) -> None:
        """A latency sample."""

    def cache(self, kind: CacheKind, hit: bool) -> None:
        """A cache lookup."""

    def failover(self, from_region: str, to_region: str) -> None:
        """A turn moved to another region."""

    def incident(self, kind: IncidentKind) -> None:
        """A failure the call met."""


class CallLedger:
    """Usage, timings and incidents of one call, recorded by its stages as they happen."""

    __slots__ = (
        "sink",
        "turn",
        "samples",
        "incidents",
        "audio_seconds",
        "gated_seconds",
        "interruptions",
        "stt_reconnects",
        "model_errors",
        "_clock",
        "_started",
        "_tokens",
        "_stt",
        "_tts",
        "_cache",
        "_turn_hits",
        "_answers",
        "_failovers",
        "_firsts",
        "_failover_at",
        "_tool_uses",
        "_secrets",
        "pii",
        "_preemptions",
        "open_turn",
    )

    def __init__(self, sink: LedgerSink | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.turn = 0
        self.samples: list[tuple[Stage, float, int]] = []
        self.incidents: list[Incident] = []
        self.audio_seconds = 0.0
        self.gated_seconds = 0.0
        self.interruptions = 0
        self.stt_reconnects = 0
        self.model_errors = 0
        self._clock = clock
        self._started = clock()
        self._tokens: dict[str, list[int]] = {}
        self._stt: dict[str, float] = {}
        self._tts: dict[str, int] = {}
        self._cache: dict[CacheKind, list[int]] = {}
        self._turn_hits: dict[tuple[CacheKind, int], int] = {}  # hits per (kind, turn answered)
        self._answers: dict[str, int] = {}
        self._failovers: list[tuple[str, str]] = []
        self._firsts: dict[int, dict[str, float]] = {}  # turn -> stage -> its first sample (see timings())
        self._failover_at: dict[int, float] = {}  # turn -> seconds into the call its model first failed over
        self._tool_uses: list[tuple[ToolUse, float]] = []  # with the monotonic time each started
        self._secrets: list[re.Pattern[str]] = []
        self.pii = False  # also mask card numbers, phone numbers and emails (set by the session)
        self._preemptions: dict[str, int] = {}
        # Preemptive replies: the turn being answered before it is confirmed. Its recognition timings are
        # filed under it, not under the turn after the one ``turn`` (set to it for the model's timings) names.
        self.open_turn: int | None = None

    # -- recording ----------------------------------------------------------------

    def add_tokens(self, model: str, input_tokens: int, output_tokens: int) -> None:
        """Tokens a model read and wrote for one reply."""
        counts = self._tokens.setdefault(model, [0, 0])
        counts[0] += input_tokens
        counts[1] += output_tokens

    def add_stt(self, engine: str, seconds: float) -> None:
        """Seconds of caller audio a recogniser was given (what a streaming one bills)."""
        self._stt[engine] = self._stt.get(engine, 0.0) + seconds

    def add_tts(self, engine: str, chars: int) -> None:
        """Characters a voice engine synthesised."""
        self._tts[engine] = self._tts.get(engine, 0) + chars

    def add_audio(self, seconds: float) -> None:
        """Caller audio that reached the edge."""
        self.audio_seconds += seconds

    def add_gated(self, seconds: float) -> None:
        """Caller audio held back as silence (never sent to a recogniser)."""
        self.gated_seconds += seconds

    def cache(self, kind: CacheKind, hit: bool, turn: int | None = None) -> None:
        """An edge cache lookup and its result (for ``turn``; default: the turn being answered)."""
        counts = self._cache.setdefault(kind, [0, 0])
        counts[0 if hit else 1] += 1
        if hit:
            key = (kind, self.turn if turn is None else turn)
            self._turn_hits[key] = self._turn_hits.get(key, 0) + 1
        if self.sink is not None:
            self.sink.cache(kind, hit)

    def answered(self, model: str) -> None:
        """``model`` (an id, ``faq``, ``cache`` ...) answered the current turn."""
        self._answers[model] = self._answers.get(model, 0) + 1

    def time(self, stage: Stage, seconds: float) -> None:
        """A latency sample of ``stage`` for the current (or, before the turn, the next) turn."""
        if stage.before_turn:
            turn = self.open_turn if self.open_turn is not None else self.turn + 1
        else:
            turn = self.turn
        self.samples.append((stage, seconds, turn))
        firsts = self._firsts.get(turn)
        if firsts is None:
            firsts = self._firsts[turn] = {}
        if stage.value not in firsts:
            firsts[stage.value] = round(seconds, 6)
        if self.sink is not None:
            self.sink.timing(stage, seconds)

    def failover(self, from_region: str, to_region: str) -> None:
        """A turn failed in ``from_region`` and was answered by ``to_region``."""
        self._failovers.append((from_region, to_region))
        self._failover_at.setdefault(self.turn, round(self.elapsed(), 3))  # the console's timeline places it
        if self.sink is not None:
            self.sink.failover(from_region, to_region)

    def preempted(self, outcome: str) -> None:
        """A preemptive reply was ``used`` (the turn ended as guessed) or ``discarded`` (the caller went on)."""
        self._preemptions[outcome] = self._preemptions.get(outcome, 0) + 1
        report = getattr(self.sink, "preemption", None)  # optional on a sink: the metrics count it
        if report is not None:
            report(outcome)

    def incident(self, kind: IncidentKind, detail: str = "") -> None:
        """A failure the call met (and survived, or ended on)."""
        self.incidents.append(Incident(kind=kind, detail=detail[:500], at_s=round(self.elapsed(), 3)))
        if self.sink is not None:
            self.sink.incident(kind)

    def tool_started(self, turn: int, name: str, kind: str, arguments: Mapping[str, Any]) -> ToolUse:
        """A tool call begins in ``turn``; the returned record is closed with :meth:`tool_ended`."""
        use = ToolUse(turn=turn, name=name, kind=kind, arguments=dict(arguments), at_s=round(self.elapsed(), 3))
        self._tool_uses.append((use, self._clock()))
        return use

    def tool_ended(self, use: ToolUse, outcome: ToolOutcome, *, result: Mapping[str, Any] | None = None,
                   error: str = "") -> None:
        """A tool call ended: how, what the model was given, and (measured here) how long it took."""
        started = next((at for recorded, at in self._tool_uses if recorded is use), self._clock())
        use.outcome = outcome
        use.result = dict(result or {})
        use.error = error[:300]
        use.duration_ms = round((self._clock() - started) * 1000.0, 1)

    def secret(self, value: str) -> None:
        """Keep ``value`` (digits the caller typed) out of every record: :meth:`redact` masks it."""
        if len(value) >= 2 and value.isalnum():
            # Also written out with separators, as a model reading it back would: "1 2 3 4", "1-2-3-4".
            self._secrets.append(re.compile(r"[\s,.-]*".join(re.escape(char) for char in value)))

    def redact(self, text: str) -> str:
        """``text`` with every secret (and, with ``pii`` on, personal data) masked (one ``•`` per character)."""
        for pattern in self._secrets:
            text = pattern.sub(lambda match: mask(match.group()), text)
        return redact_pii(text) if self.pii else text

    def redact_value(self, value: Any) -> Any:
        """:meth:`redact` through a JSON-like value (dicts, lists, strings; numbers as their digits)."""
        if not self._secrets and not self.pii:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {key: self.redact_value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(item) for item in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            masked = self.redact(str(value))
            return value if masked == str(value) else masked
        return value

    # -- reading ------------------------------------------------------------------

    def usage(self) -> Usage:
        """A snapshot of everything counted so far."""
        return Usage(
            tokens={model: TokenUse(input=i, output=o) for model, (i, o) in self._tokens.items()},
            stt_seconds={engine: round(s, 3) for engine, s in self._stt.items()},
            tts_chars=dict(self._tts),
            audio_seconds=round(self.audio_seconds, 3),
            gated_seconds=round(self.gated_seconds, 3),
            cache={kind: CacheUse(hits=h, misses=m) for kind, (h, m) in self._cache.items()},
            answers=dict(self._answers),
            interruptions=self.interruptions,
            stt_reconnects=self.stt_reconnects,
            model_errors=self.model_errors,
            failovers=list(self._failovers),
            tools=self._tool_counts(),
            preemptions=dict(self._preemptions),
        )

    def _tool_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for use, _ in self._tool_uses:
            counts[use.name] = counts.get(use.name, 0) + 1
        return counts

    @property
    def tool_calls(self) -> int:
        """Tool calls started so far (running ones included)."""
        return len(self._tool_uses)

    def tool_spans(self, turn: int) -> list[tuple[ToolUse, float]]:
        """Tool calls of ``turn`` with the monotonic time each started (for traces)."""
        return [(use, started) for use, started in self._tool_uses if use.turn == turn]

    def tool_uses(self, turn: int) -> list[ToolUse]:
        """The tool calls of ``turn``, redacted, in the order they started (copies: safe to store)."""
        return [ToolUse.model_validate({**use.model_dump(), "arguments": self.redact_value(use.arguments),
                                        "result": self.redact_value(use.result), "error": self.redact(use.error)})
                for use, _ in self._tool_uses if use.turn == turn]

    def cache_hits(self, kind: CacheKind) -> int:
        """Hits of ``kind`` so far."""
        counts = self._cache.get(kind)
        return counts[0] if counts is not None else 0

    def turn_cache_hits(self, kind: CacheKind, turn: int) -> int:
        """Hits of ``kind`` while ``turn`` was being answered (a preemptive guess files them under its turn)."""
        return self._turn_hits.get((kind, turn), 0)

    def timings(self, turn: int) -> dict[str, float]:
        """The first sample of each stage in ``turn``, in seconds (kept as samples come: no scan of them all)."""
        return dict(self._firsts.get(turn, ()))

    def failover_at(self, turn: int) -> float | None:
        """Seconds into the call at which ``turn``'s model first failed over, or None (the journal records it
        with the turn's timings as :data:`FAILOVER_AT`)."""
        return self._failover_at.get(turn)

    def elapsed(self) -> float:
        """Seconds since the call's ledger was opened."""
        return self._clock() - self._started
