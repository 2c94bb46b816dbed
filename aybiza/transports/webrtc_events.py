"""Live call events for the browser: frames -> JSON messages on the ``events`` data channel.

:func:`event_for` maps a frame to the message the page shows (or ``None``);
:class:`EventChannel` queues messages until the data channel opens and
reports each frame once; :class:`EventTap` is a pass-through stage that
feeds it. :func:`with_event_taps` puts a tap after every stage, so a frame
is reported where it first appears (a transcript after STT, agent text
after the model) whatever the stack's composition.

Messages (``type`` first): ``call``, ``route``, ``transcript``, ``speech``,
``user_turn``, ``agent_text``, ``agent_done``, ``agent_audio``, ``latency``,
``interruption``, ``quality``, ``language``, ``end``
(the last four come from the transport, not from frames).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    Interruption,
    LanguageChanged,
    Processor,
    QualityReport,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserTurn,
)

__all__ = ["EVENT_FRAMES", "EventChannel", "EventTap", "event_for", "route_event", "with_event_taps"]

Event = dict[str, Any]

EVENT_FRAMES: tuple[type[Frame], ...] = (
    Transcript,
    UserTurn,
    AgentText,
    AgentTurnDone,
    SpeechStarted,
    SpeechStopped,
    Interruption,
    QualityReport,
    LanguageChanged,
)
"""Frame types the page hears about; audio is never one of them."""


def event_for(frame: Frame) -> Event | None:
    """The page's message for ``frame``, or ``None`` if the page does not show it."""
    if isinstance(frame, Transcript):
        return {"type": "transcript", "text": frame.text, "final": frame.final, "language": frame.language}
    if isinstance(frame, UserTurn):
        return {"type": "user_turn", "turn_id": frame.turn_id, "text": frame.text, "language": frame.language}
    if isinstance(frame, AgentText):
        return {"type": "agent_text", "turn_id": frame.turn_id, "text": frame.text, "language": frame.language}
    if isinstance(frame, AgentTurnDone):
        return {"type": "agent_done", "turn_id": frame.turn_id}
    if isinstance(frame, SpeechStarted):
        return {"type": "speech", "state": "started"}
    if isinstance(frame, SpeechStopped):
        return {"type": "speech", "state": "stopped"}
    if isinstance(frame, Interruption):
        return {"type": "interruption"}
    if isinstance(frame, QualityReport):
        return {"type": "quality", "tier": frame.tier, "score": round(frame.score, 3)}
    if isinstance(frame, LanguageChanged):
        return {"type": "language", "language": frame.language, "confidence": round(frame.confidence, 3)}
    return None


def route_event(ctx: CallContext) -> Event:
    """Where the call is served: region, model tier and the quality tier it started with."""
    return {"type": "route", "region": ctx.region, "model_tier": ctx.model_tier, "quality_tier": ctx.quality_tier,
            "language": ctx.language}


class EventChannel:
    """Sends events to the page; holds them (up to ``backlog``) until the data channel is attached."""

    __slots__ = ("_send", "_backlog", "_seen", "dropped")

    def __init__(self, backlog: int = 256) -> None:
        self._send: Callable[[str], None] | None = None
        self._backlog: deque[str] = deque(maxlen=backlog)
        # The frames reported last: a frame seen again by a later tap is not reported twice.
        self._seen: deque[Frame] = deque(maxlen=64)
        self.dropped = 0

    @property
    def attached(self) -> bool:
        """Whether messages go out at once (the data channel is open)."""
        return self._send is not None

    def attach(self, send: Callable[[str], None]) -> None:
        """Send through ``send`` from now on, starting with what was held back."""
        self._send = send
        while self._backlog:
            if not self._deliver(self._backlog.popleft()):
                return

    def detach(self) -> None:
        """Stop sending (the channel closed); later events are held back again."""
        self._send = None

    def send(self, event: Event) -> None:
        """Send one event (JSON) or hold it until the channel is attached."""
        message = json.dumps(event, separators=(",", ":"))
        if self._send is None:
            if len(self._backlog) == self._backlog.maxlen:
                self.dropped += 1
            self._backlog.append(message)
        else:
            self._deliver(message)

    def report(self, frame: Frame) -> None:
        """Send the event for ``frame`` unless this frame was reported already."""
        for seen in self._seen:
            if seen is frame:
                return
        event = event_for(frame)
        if event is not None:
            self._seen.append(frame)
            self.send(event)

    def _deliver(self, message: str) -> bool:
        send = self._send
        if send is None:
            self._backlog.append(message)
            return False
        try:
            send(message)
        except Exception:  # the channel closed under us: keep the message for a later attach
            self._send = None
            self._backlog.appendleft(message)
            return False
        return True


class EventTap(Processor):
    """Pass-through stage that reports event frames to the page; audio costs one ``isinstance``."""

    __slots__ = ("channel",)

    name = "webrtc-events"

    def __init__(self, channel: EventChannel) -> None:
        super().__init__()
        self.channel = channel

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, EVENT_FRAMES):
            self.channel.report(frame)
        await self.push(frame)


def with_event_taps(processors: Sequence[Processor], channel: EventChannel) -> list[Processor]:
    """``processors`` with a tap after each one, all reporting to ``channel``."""
    tapped: list[Processor] = []
    for processor in processors:
        tapped += [processor, EventTap(channel)]
    return tapped
