"""Recording one call: a transport wrapper that hears both sides, and the finish that files the result.

The session wraps the call's transport in :class:`RecordedTransport` when the
call is recorded (the agent's ``record: true`` or ``AYBIZA_RECORD_CALLS``).
Wrapping the transport rather than adding pipeline stages means everything
the caller hears is recorded — replies, announcements, the apology of a
failing call, tones the agent plays — and everything the caller sends,
exactly as the transport delivered it. Caller frames carry the pause check:
while ``ctx.collecting_digits`` is up (a tool collects a card number or a
PIN) the recording is silent and the span is kept for the record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from ..errors import EndReason
from ..pipeline import CallContext, Frame, InputAudio, Interruption, OutputAudio, Processor
from ..processors.cache import WrappingProcessor
from .info import RecordingInfo
from .recorder import CallRecorder
from .storage import RecordingStore

if TYPE_CHECKING:  # the session imports this module: its transport types are for annotations only
    from ..session.transport import CallControl, CallTransport, Push

__all__ = ["CallRecording", "RecordedTransport", "RecordingOutput", "caller_rate"]


class CallRecording:
    """One call's recorder and where it will be filed."""

    def __init__(self, store: RecordingStore, ctx: CallContext) -> None:
        self.store = store
        self.ctx = ctx
        self.partial = store.partial_path(ctx.call_id)
        self.recorder = CallRecorder(self.partial, rate=caller_rate(ctx.transport))

    def wrap(self, transport: CallTransport) -> RecordedTransport:
        """``transport`` with both directions recorded."""
        return RecordedTransport(transport, self.recorder, self.ctx)

    async def finish(self) -> RecordingInfo:
        """Complete the file and file it (disk or S3, in a worker thread); what the record links."""
        recorder = self.recorder
        duration = recorder.close()
        info = RecordingInfo(storage="file", key=self.partial.name, duration_s=round(duration, 3),
                             sample_rate=recorder.rate, pauses=recorder.pause_spans_s(), error=recorder.failed)
        info = await anyio.to_thread.run_sync(self.store.finish, self.ctx.call_id, self.partial, info)
        self.ctx.log.info("recording: %.1f s, %s (%s)%s", duration, info.key, info.storage,
                          f", {len(info.pauses)} pause(s)" if info.pauses else "")
        return info


def caller_rate(transport: str) -> int:
    """The rate the transport delivers caller audio at (the recording's); 0 for one this does not know."""
    if transport == "twilio":
        from ..transports.twilio import ULAW_SAMPLE_RATE

        return ULAW_SAMPLE_RATE
    if transport == "webrtc":  # Opus at 48 kHz, resampled by the transport to the pipeline's rate
        from ..transports.webrtc_media import PIPELINE_RATE

        return PIPELINE_RATE
    return 0


class RecordingOutput(WrappingProcessor):
    """The transport's output stage, recording the agent's audio as it is sent (and barge-ins as they drop it)."""

    name = "recording-output"

    def __init__(self, inner: Processor, recorder: CallRecorder) -> None:
        super().__init__(inner)
        self.recorder = recorder

    async def process(self, frame: Frame) -> None:
        """Record, then hand to the transport's output."""
        if isinstance(frame, OutputAudio):
            self.recorder.agent(frame.pcm, frame.sample_rate, time.monotonic(), ulaw=frame.ulaw)
        elif isinstance(frame, Interruption):
            self.recorder.interrupted(time.monotonic())
        await self.inner.process(frame)


class RecordedTransport:
    """A :class:`CallTransport` that records what it carries; everything else is the wrapped transport's."""

    def __init__(self, inner: CallTransport, recorder: CallRecorder, ctx: CallContext) -> None:
        self.inner = inner
        self.recorder = recorder
        self.ctx = ctx
        self.kind = inner.kind
        self.sources = inner.sources
        self._output = RecordingOutput(inner.output, recorder)

    @property
    def output(self) -> Processor:
        """The transport's output, recording."""
        return self._output

    @property
    def control(self) -> CallControl | None:
        """The wrapped transport's call control."""
        return self.inner.control

    @property
    def open(self) -> bool:
        """Whether the caller is still connected."""
        return self.inner.open

    def arrange(self, stages: Sequence[Processor]) -> list[Processor]:
        """The wrapped transport's arrangement."""
        return self.inner.arrange(stages)

    async def pump(self, push: Push) -> EndReason:
        """The wrapped transport's input, each caller frame recorded (or silenced, while digits are collected)."""
        recorder, ctx = self.recorder, self.ctx

        async def recorded(frame: Frame) -> None:
            if isinstance(frame, InputAudio):
                if ctx.collecting_digits != recorder.paused:
                    recorder.pause(ctx.collecting_digits)
                recorder.caller(frame.pcm, frame.sample_rate, frame.captured_at)
            await push(frame)

        return await self.inner.pump(recorded)

    async def drained(self) -> None:
        """The wrapped transport's drain."""
        await self.inner.drained()

    async def close(self, reason: EndReason, detail: str) -> None:
        """Close the wrapped transport."""
        await self.inner.close(reason, detail)
