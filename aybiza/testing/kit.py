"""A small kit for testing processors: a frame recorder, a virtual clock, a stage runner, a conformance check.

    recorder = FrameRecorder()
    frames = await run_stage(VADProcessor(), audio_frames, recorder=recorder)
    assert recorder.of(SpeechStarted)

:func:`check_conformance` drives any stage through the contract every stage
keeps (see :mod:`aybiza.pipeline.processor`): frames it does not consume go
through unchanged and in order, control frames it does not act on go further
up, an ``Interruption`` is forwarded, ``stop()`` may be called twice, and
its declared frame types are frame types. The test suite runs it on every
stage the product ships.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import anyio
from anyio.abc import TaskGroup

from ..errors import EndReason
from ..pipeline import CallContext, CallLedger, Frame, Interruption, Pipeline, Processor

if TYPE_CHECKING:
    from ..session.transport import CallControl, Push

__all__ = ["FrameRecorder", "StubTransport", "VirtualClock", "check_conformance", "run_stage"]

F = TypeVar("F", bound=Frame)


class VirtualClock:
    """A monotonic clock that moves only when told (for ledgers, health trackers, caches)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        if seconds < 0:
            raise ValueError("time does not go back")
        self.now += seconds


class FrameRecorder(Processor):
    """The last stage of a test pipeline: records every frame it receives (and when), passes nothing on."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.times: list[float] = []
        self.controls: list[Frame] = []
        self._arrived = anyio.Event()

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)
        self.times.append(time.monotonic())
        self._arrived.set()

    async def control(self, frame: Frame) -> None:
        self.controls.append(frame)

    def of(self, kind: type[F]) -> list[F]:
        """The recorded frames of ``kind``, in order."""
        return [frame for frame in self.frames if isinstance(frame, kind)]

    async def arrival(self) -> None:
        """Wait for the next frame to arrive."""
        self._arrived = anyio.Event()
        await self._arrived.wait()

    async def wait_for(self, kind: type[Frame], count: int = 1, timeout_s: float = 5.0) -> None:
        """Wait until ``count`` frames of ``kind`` arrived (TimeoutError otherwise)."""
        with anyio.fail_after(timeout_s):
            while len(self.of(kind)) < count:
                await self.arrival()


class StubTransport:
    """A call's transport with no caller behind it, for testing a session's parts.

    What the agent sends ends in :attr:`recorder`; call control is whatever the
    test gives (a :class:`~aybiza.transports.twilio_rest.TwilioCallControl` at
    the fake Twilio, say); the caller never speaks and the line stays open.
    """

    sources: frozenset[type[Frame]] = frozenset()

    def __init__(self, control: CallControl | None = None, kind: str = "twilio") -> None:
        self.kind = kind
        self._control = control
        self.recorder = FrameRecorder()

    @property
    def output(self) -> Processor:
        """The recorder."""
        return self.recorder

    @property
    def control(self) -> CallControl | None:
        """The control the test gave."""
        return self._control

    @property
    def open(self) -> bool:
        """Always: nobody hangs up."""
        return True

    def arrange(self, stages: Sequence[Processor]) -> list[Processor]:
        """The stages as they are."""
        return list(stages)

    async def pump(self, push: Push) -> EndReason:
        """No caller input: the caller hung up."""
        return EndReason.HANGUP

    async def drained(self) -> None:
        """Nothing is played, so nothing is waited for."""
        return None

    async def close(self, reason: EndReason, detail: str) -> None:
        """Nothing to close."""
        return None


class _ControlSink(Processor):
    """The first stage of a test pipeline: records the control frames that reach the top."""

    name = "control-sink"

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[Frame] = []

    async def control(self, frame: Frame) -> None:
        self.controls.append(frame)


async def run_stage(
    stage: Processor | Sequence[Processor],
    frames: Iterable[Frame],
    *,
    recorder: FrameRecorder | None = None,
    ctx: CallContext | None = None,
    settle_s: float = 0.0,
    until: Callable[[FrameRecorder], bool] | None = None,
    timeout_s: float = 10.0,
) -> FrameRecorder:
    """Run ``stage`` (or a chain) for one call, push ``frames``, then wait ``settle_s`` or until ``until``.

    Returns the recorder holding what came out (and, in ``controls``, what was steered up to the top).
    """
    recorder = recorder or FrameRecorder()
    top = _ControlSink()
    stages = [stage] if isinstance(stage, Processor) else list(stage)
    pipeline = Pipeline([top, *stages, recorder])
    context = ctx or CallContext(call_id="CAtest", ledger=CallLedger())

    async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
        for frame in frames:
            await pipe.push(frame)
        if until is not None:
            with anyio.fail_after(timeout_s):
                while not until(recorder):
                    await recorder.arrival()
        elif settle_s:
            await anyio.sleep(settle_s)

    await pipeline.run(context, feed)
    recorder.controls[:0] = top.controls
    return recorder


@dataclass(frozen=True, slots=True)
class _Probe(Frame):
    """A frame no stage consumes."""

    n: int


@dataclass(frozen=True, slots=True)
class _ControlProbe(Frame):
    """A control frame no stage acts on."""

    n: int


async def check_conformance(make: Callable[[], Processor | Awaitable[Processor]]) -> None:
    """Assert the Processor contract on a fresh stage from ``make()``; raises AssertionError saying what broke."""
    built = make()
    stage = built if isinstance(built, Processor) else await built
    name = stage.name
    for declared in (*stage.consumes, *stage.produces, *stage.steers):
        assert isinstance(declared, type) and issubclass(declared, Frame), f"{name} declares {declared!r}"
    probes = [_Probe(n) for n in range(3)]
    recorder = FrameRecorder()
    top = _ControlSink()
    pipeline = Pipeline([top, stage, recorder])

    async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
        for probe in probes:
            await pipe.push(probe)
        await stage.control(_ControlProbe(7))
        await pipe.push(Interruption(at=time.monotonic()))
        with anyio.move_on_after(2.0):
            await recorder.wait_for(Interruption)

    await pipeline.run(CallContext(call_id="CAconformance", ledger=CallLedger()), feed)
    await stage.stop()  # a second stop (the pipeline stopped it once) must be harmless
    passed = [frame for frame in recorder.frames if isinstance(frame, _Probe)]
    assert passed == probes, f"{name} did not forward unknown frames unchanged and in order: {passed}"
    assert [c for c in top.controls if isinstance(c, _ControlProbe)] == [_ControlProbe(7)], (
        f"{name} did not pass an unknown control frame up")
    assert recorder.of(Interruption), f"{name} did not forward Interruption"
