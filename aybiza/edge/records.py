"""The call record: what the platform keeps about one call, live and after it ended.

A :class:`CallRecord` holds the route, each turn (what was said, its
timings, what the cache answered, the tools it called with their arguments,
outcome, result and duration), the usage the call's ledger counted
(tokens per model, audio per recogniser, characters per voice, cache hits
and misses), cost, quality, language, the typed end reason (``outcome``) and
the incidents the call met. It is a pydantic model stored whole as JSON, so
every write is a snapshot: idempotent and re-derivable (a retried write
changes nothing, a lost one is repaired by the next).

Timestamps are wall-clock seconds since the epoch (``time.time()``): they
are shown to people and compared across processes and days (retention); all
latencies inside are durations measured on the monotonic clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..pipeline.context import CallContext
from ..pipeline.ledger import Incident, ToolUse, Usage
from ..recording.info import RecordingInfo

__all__ = [
    "CallRecord",
    "CallStatus",
    "Offer",
    "TurnRecord",
    "final_fields",
    "record_from_context",
]

CallStatus = Literal["active", "ended", "interrupted"]
"""``active`` while the call runs; ``ended`` after a normal end; ``interrupted`` if its process died."""


@dataclass(frozen=True, slots=True)
class Offer:
    """A call ``/twiml`` sent to a node, as the webhook knew it (kept until its stream starts there, so a
    call whose stream never starts is still archived: :meth:`aybiza.edge.calls.CallStore.archive_offer`)."""

    call_sid: str
    caller: str
    agent_id: str
    offered_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> Offer:
        fields: dict[str, Any] = json.loads(data)
        return cls(call_sid=str(fields["call_sid"]), caller=str(fields.get("caller", "")),
                   agent_id=str(fields.get("agent_id", "")), offered_at=float(fields["offered_at"]))


class TurnRecord(BaseModel):
    """One exchange: the caller's turn, the agent's answer, its latencies and cache use."""

    model_config = ConfigDict(extra="ignore")

    turn_id: int
    user: str = ""
    agent: str = ""
    language: str = "en"
    at: float = Field(default_factory=time.time)
    timings: dict[str, float] = Field(default_factory=dict)
    cached: list[str] = Field(default_factory=list)  # which stages the cache served: "llm", "tts"
    interrupted: bool = False
    tool_calls: list[ToolUse] = Field(default_factory=list)  # redacted: digits typed are masked


class CallRecord(BaseModel):
    """Everything known about one call; stored whole (JSON) at every update."""

    model_config = ConfigDict(extra="ignore")

    call_id: str
    status: CallStatus = "active"
    version: int = 0
    owner: str = ""
    transport: str = "twilio"
    caller: str = ""
    caller_country: str = ""
    agent_id: str = "default"
    language: str = "en"
    route: dict[str, str] = Field(default_factory=dict)
    started_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    ended_at: float | None = None
    turns: list[TurnRecord] = Field(default_factory=list)
    timings: list[tuple[str, float]] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    cost: dict[str, Any] | None = None
    quality: dict[str, Any] = Field(default_factory=dict)
    outcome: str | None = None  # an EndReason value
    outcome_detail: str = ""
    incidents: list[Incident] = Field(default_factory=list)
    digits: str = ""
    custom: dict[str, str] = Field(default_factory=dict)
    transcript_purged: bool = False
    direction: Literal["inbound", "outbound"] = "inbound"  # outbound: we dialled (issue 14, item 3)
    answered_by: str = ""  # an outbound call's answering-machine verdict (Twilio's AnsweredBy)
    recording: RecordingInfo | None = None  # the call's recording (issue 14, item 4), when it was recorded

    @property
    def duration_s(self) -> float:
        """Seconds from start to end (or to the last update while live)."""
        end = self.ended_at if self.ended_at is not None else self.updated_at
        return max(0.0, end - self.started_at)

    def context(self) -> list[dict[str, str]]:
        """The conversation so far as ``[{"role": "user"|"assistant", "text": ...}]`` (to resume a call)."""
        messages: list[dict[str, str]] = []
        for turn in self.turns:
            if turn.user:
                messages.append({"role": "user", "text": turn.user})
            if turn.agent:
                messages.append({"role": "assistant", "text": turn.agent})
        return messages

    def put_turn(self, turn: TurnRecord) -> None:
        """Add ``turn`` or replace the one with the same ``turn_id``."""
        for index, existing in enumerate(self.turns):
            if existing.turn_id == turn.turn_id:
                self.turns[index] = turn
                return
        self.turns.append(turn)

    def summary(self) -> dict[str, Any]:
        """The list view: identity, times, outcome and totals, without transcript or timings."""
        cost = self.cost or {}
        return {
            "call_id": self.call_id,
            "status": self.status,
            "transport": self.transport,
            "caller": self.caller,
            "agent_id": self.agent_id,
            "language": self.language,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": round(self.duration_s, 3),
            "turns": len(self.turns),
            "outcome": self.outcome,
            "cost_usd": cost.get("total_usd"),
            "model": self.usage.answered_by,
            "cache_hits": {str(kind): use.hits for kind, use in self.usage.cache.items()},
            "incidents": [incident.kind.value for incident in self.incidents],
            "transcript_purged": self.transcript_purged,
            "direction": self.direction,
            "answered_by": self.answered_by,
        }

    def to_json(self) -> str:
        """The stored form."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> CallRecord:
        """Inverse of :meth:`to_json`."""
        return cls.model_validate_json(data)


def _route(ctx: CallContext) -> dict[str, str]:
    return {
        "region": ctx.region,
        "fallbacks": ",".join(ctx.fallback_regions),
        "regions_tried": ",".join(ctx.regions_tried),
        "model_tier": ctx.model_tier,
        "quality_tier": ctx.quality_tier,
        "codec": ctx.codec,
    }


def record_from_context(ctx: CallContext) -> CallRecord:
    """A new live record for the call ``ctx`` describes."""
    return CallRecord(
        call_id=ctx.call_id,
        transport=ctx.transport,
        caller=ctx.caller,
        caller_country=ctx.caller_country,
        agent_id=ctx.agent_id,
        language=ctx.language,
        route=_route(ctx),
        custom=dict(ctx.custom),
        direction=_direction(ctx),
    )


def _direction(ctx: CallContext) -> Literal["inbound", "outbound"]:
    return "outbound" if ctx.custom.get("direction") == "outbound" else "inbound"


def final_fields(
    ctx: CallContext,
    *,
    cost: Mapping[str, Any] | None = None,
    quality: Mapping[str, Any] | None = None,
    detail: str = "",
) -> dict[str, Any]:
    """The fields :meth:`CallStore.end` takes from the call's context (and its ledger) at its end."""
    ledger = ctx.ledger
    fields: dict[str, Any] = {
        "language": ctx.language,
        "route": _route(ctx),
        "usage": ledger.usage(),
        "digits": ledger.redact(ctx.digits),
        "timings": [(stage.value, round(seconds, 6)) for stage, seconds, _ in ledger.samples],
        # Why the call ended, and what it met, often quote the caller or a tool ("no order 4111 1111 ...", a
        # provider's message): masked like the transcript, before the cut so no half number is left bare.
        "incidents": [incident.model_copy(update={"detail": ledger.redact(incident.detail)})
                      for incident in ledger.incidents],
        "outcome_detail": ledger.redact(detail)[:500],
        "direction": _direction(ctx),
        "answered_by": ctx.custom.get("answered_by", "")[:32],
    }
    if cost is not None:
        fields["cost"] = dict(cost)
    if quality is not None:
        fields["quality"] = dict(quality)
    return fields
