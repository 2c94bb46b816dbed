"""The bench server's instruments: a frame clock first in every call, and the ingress probe before the STT stage."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aybiza.agents import load_agent  # noqa: E402
from aybiza.pipeline import CallContext, Frame, InputAudio, Processor  # noqa: E402
from aybiza.processors.quality import QualityProcessor  # noqa: E402
from aybiza.processors.vad import VADProcessor  # noqa: E402
from aybiza.testing.kit import run_stage  # noqa: E402
from aybiza.testing.scripted import FrameClock  # noqa: E402
from benchmarks.scripted_server import AUTH_TOKEN, BenchInstruments, bench_settings  # noqa: E402

SPEECH, SILENCE = b"\x10\x27" * 160, b"\x00\x00" * 160  # 20 ms at 8 kHz


class STT(Processor):
    """Stands for the STT stage."""

    name = "stt"


def voiced(pcm: bytes, rate: int) -> bool:
    return pcm == SPEECH


def instrumented(instruments: BenchInstruments, call_id: str = "CA1") -> list[Processor]:
    def build(ctx: CallContext, *args: Any, **kwargs: Any) -> tuple[list[Processor], list[Frame]]:
        return [QualityProcessor(), VADProcessor(classifier=voiced), STT(), Processor()], []

    stack = SimpleNamespace(build=build)
    instruments.install(SimpleNamespace(stack=stack))  # type: ignore[arg-type]
    processors, _ = stack.build(CallContext(call_id=call_id))
    return list(processors)


def test_every_call_starts_with_a_frame_clock_and_the_probe_stands_right_before_the_stt_stage() -> None:
    plain = instrumented(BenchInstruments())
    assert isinstance(plain[0], FrameClock) and [type(p) for p in plain[1:]] == [
        QualityProcessor, VADProcessor, STT, Processor]
    probed = instrumented(BenchInstruments(probe_ingress=True))
    assert [p.name for p in probed] == ["frame-clock", "bench-frame-numbers", "quality", "vad", "bench-stt-probe",
                                        "stt", "processor"]


@pytest.mark.anyio
async def test_the_probe_numbers_frames_as_the_caller_does_and_tells_held_audio_from_live() -> None:
    instruments = BenchInstruments(probe_ingress=True)
    stages = instrumented(instruments)
    pcm = [SILENCE] * 20 + [SPEECH] * 10
    frames = [InputAudio(chunk, 8000, 100.0 + 0.02 * index) for index, chunk in enumerate(pcm)]
    await run_stage(stages, frames)
    assert instruments.frames_in == 30 and instruments.lateness.count == 30
    reached = instruments.ingress["CA1"].reached
    numbers = [number for number, _, _, _ in reached]
    assert numbers == sorted(numbers) and numbers[-1] == 30, "frame n is the caller's n-th media message"
    held = [number for number, _, was_held, _ in reached if was_held]
    live = [number for number, _, was_held, _ in reached if not was_held]
    assert held and max(held) < min(live), "the pre-roll and the start of speech were held back by the VAD"
    assert live == list(range(live[0], 31)), "once speech is confirmed, every frame goes through as it arrives"


def test_bench_settings_serve_the_production_stack_with_an_agent_whose_answers_are_never_cached(tmp_path: Path) -> None:
    settings = bench_settings(8123, tmp_path)
    assert (settings.stt, settings.llm, settings.tts) == ("deepgram", "bedrock", "deepgram")
    assert not settings.health_probes and settings.twilio_auth_token == AUTH_TOKEN
    assert settings.public_url == "http://127.0.0.1:8123"
    agent = load_agent(settings.default_agent, settings.agents_dir)
    assert agent.cache_answers is False
    assert yaml.safe_load((settings.agents_dir / f"{agent.id}.yaml").read_text())["id"] == agent.id
