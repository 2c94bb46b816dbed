"""Typed frames: the only values that move between processors.

Frames are few and general on purpose (one class per kind of event a stage
can react to). All are frozen, slotted dataclasses; audio is 16-bit signed
little-endian mono PCM carrying its sample rate and the monotonic time at
which it was captured (or produced), so every stage can measure latency
without a wall clock. Phone audio may also carry the G.711 μ-law it arrived
(or will leave) as, so a provider that speaks μ-law gets it without a
decode/encode round trip.

Most frames flow downstream (``push``). *Control* frames flow upstream, from
a later stage to earlier ones (``steer``; see :mod:`.processor`):
:class:`LanguageChanged` (the language stage tells the recogniser) and
:class:`AgentSpeaking` (the output tells turn-taking and the VAD when the
caller hears the agent) and :class:`HeardSoFar` (the recogniser tells the end
of turn the words of the turn so far).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Frame",
    "InputAudio",
    "OutputAudio",
    "SpeechStarted",
    "SpeechStopped",
    "Transcript",
    "UserTurn",
    "AgentText",
    "AgentTurnDone",
    "Interruption",
    "AgentResume",
    "DTMF",
    "LanguageChanged",
    "AgentSpeaking",
    "HeardSoFar",
    "QualityReport",
    "EndOfCall",
]


@dataclass(frozen=True, slots=True)
class Frame:
    """Base of every frame."""


@dataclass(frozen=True, slots=True)
class InputAudio(Frame):
    """Caller audio: PCM16 mono; ``captured_at`` is ``time.monotonic()`` on arrival."""

    pcm: bytes
    sample_rate: int
    captured_at: float
    voiced: bool | None = None  # set by the VAD stage; None = not classified yet
    ulaw: bytes | None = None  # the same audio as the 8 kHz μ-law it arrived as (phone calls)

    @property
    def duration(self) -> float:
        """Seconds of audio in this frame."""
        return len(self.pcm) / (2 * self.sample_rate)


@dataclass(frozen=True, slots=True)
class OutputAudio(Frame):
    """Agent audio for the caller, tagged with the agent turn it belongs to.

    PCM16 mono in ``pcm``; a provider that synthesised 8 kHz μ-law for a phone
    call may hand it over as ``ulaw`` alone (``pcm`` empty): the phone output
    sends it as is, anything else decodes it. Announcements (apologies in the
    local voice) have a negative ``turn_id``.
    """

    pcm: bytes
    sample_rate: int
    turn_id: int
    produced_at: float
    ulaw: bytes | None = None

    @property
    def duration(self) -> float:
        """Seconds of audio in this frame."""
        if not self.pcm and self.ulaw is not None:
            return len(self.ulaw) / self.sample_rate
        return len(self.pcm) / (2 * self.sample_rate)


@dataclass(frozen=True, slots=True)
class SpeechStarted(Frame):
    """The caller started speaking; ``at`` is the monotonic time of the first voiced audio."""

    at: float


@dataclass(frozen=True, slots=True)
class SpeechStopped(Frame):
    """The caller stopped speaking; ``at`` is the monotonic time the last voiced audio ended."""

    at: float


@dataclass(frozen=True, slots=True)
class Transcript(Frame):
    """Recognised caller speech: interim (may change) or final (will not)."""

    text: str
    final: bool
    language: str = "en"
    confidence: float | None = None
    speech_ended_at: float | None = None
    alternatives: tuple[str, ...] = ()  # other hypotheses, best first (n-best, when the recogniser gives them)


@dataclass(frozen=True, slots=True)
class UserTurn(Frame):
    """The caller finished a turn: what they said, ready for the model."""

    text: str
    turn_id: int
    language: str = "en"
    speech_ended_at: float | None = None
    alternatives: tuple[str, ...] = ()  # other hypotheses of the whole turn (n-best)


@dataclass(frozen=True, slots=True)
class AgentText(Frame):
    """A piece of the agent's reply to speak (a sentence or clause)."""

    text: str
    turn_id: int
    language: str = "en"


@dataclass(frozen=True, slots=True)
class AgentTurnDone(Frame):
    """The agent has said everything it will say for ``turn_id``."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Interruption(Frame):
    """Barge-in: cancel in-flight agent work and drop queued agent audio."""

    at: float


@dataclass(frozen=True, slots=True)
class AgentResume(Frame):
    """The interruption carried no words (a cough, "uh-huh"): the agent goes on from the sentence it was cut in."""

    at: float


@dataclass(frozen=True, slots=True)
class DTMF(Frame):
    """A keypad digit pressed by the caller."""

    digit: str


@dataclass(frozen=True, slots=True)
class LanguageChanged(Frame):
    """The call's language changed (BCP-47 tag such as ``en-GB`` or ``de``).

    Pushed downstream (the model and the voice follow it) and steered
    upstream (the recogniser switches to it).
    """

    language: str
    confidence: float = 1.0


@dataclass(frozen=True, slots=True)
class AgentSpeaking(Frame):
    """Control: the caller started (True) or stopped (False) hearing the agent. Steered by the output."""

    speaking: bool


@dataclass(frozen=True, slots=True)
class HeardSoFar(Frame):
    """Control: the words a recogniser has heard of the caller's current turn so far. Steered by the recogniser.

    ``upto``: the capture time (monotonic) of the end of the audio the words cover; ``None``: not known.
    Words that stop short of the caller's last sound may lack its last word.
    """

    text: str
    language: str = "en"
    upto: float | None = None


@dataclass(frozen=True, slots=True)
class QualityReport(Frame):
    """A window's audio quality score in [0, 1] and the call's tier."""

    score: float
    tier: str
    details: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EndOfCall(Frame):
    """The call is over (hang-up, error or the agent ended it)."""

    reason: str
