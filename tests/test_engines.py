"""The process's engines: slow builds never hold up quick lookups, and warm loads what the settings select."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from aybiza.agents import load_agent
from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.processors.llm import embedding

AGENTS = Path(__file__).resolve().parents[1] / "agents"


def test_a_voice_is_handed_out_while_a_faq_matcher_is_being_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, tts="espeak", agents_dir=AGENTS)
    engines = Engines(settings)
    agent = load_agent(settings.default_agent, settings.agents_dir)
    building = threading.Event()
    packaged = embedding.SentenceEncoder.packaged

    def slow_encoder() -> embedding.SentenceEncoder:  # seconds of loading and encoding, as on a busy machine
        building.set()
        time.sleep(2.0)
        return packaged()

    monkeypatch.setattr(embedding.SentenceEncoder, "packaged", staticmethod(slow_encoder))
    builder = threading.Thread(target=engines.faq_matcher, args=(agent,))
    builder.start()
    try:
        assert building.wait(5)
        started = time.monotonic()
        voice = engines.voice("espeak")  # what a call's stage asks for on the event loop
        assert time.monotonic() - started < 1.0
        assert voice is engines.voice("espeak")
    finally:
        builder.join(30)


@pytest.mark.slow
def test_warm_loads_the_selected_engines_side_by_side(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, tts="espeak", agents_dir=AGENTS)
    engines = Engines(settings)
    agent = load_agent(settings.default_agent, settings.agents_dir)
    engines.warm(agent)
    threads = {thread.name for thread in threading.enumerate()}
    assert not any(name.startswith("aybiza-warm") for name in threads)  # the pool is gone
    assert set(engines._whisper) == {"en"} and engines._whisper["en"].loaded  # the agent's language, at once
    assert engines._matchers and engines._smart_turn is not None
    assert not engines._detectors, "language ID waits until the server is ready"
    engines.warm_in_background(agent).join(120)  # what a serving process runs once ready
    assert set(engines._whisper) == {"en", "multilingual"}  # English, and the model for other languages
    assert engines._whisper["multilingual"].loaded and engines._detectors


@pytest.mark.slow
def test_an_agent_speaking_another_language_gets_its_recogniser_before_ready(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, tts="espeak", agents_dir=AGENTS, end_of_turn="silence", llm="openai")
    engines = Engines(settings)
    agent = load_agent(settings.default_agent, settings.agents_dir).model_copy(
        update={"language": "es-ES", "languages": ("es", "en")})
    engines.warm(agent)
    assert set(engines._whisper) == {"multilingual"} and engines._whisper["multilingual"].loaded


def test_a_failure_while_warming_in_the_background_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, stt="sphinx", agents_dir=AGENTS)
    engines = Engines(settings)

    def broken(languages: frozenset[str] = frozenset()) -> None:
        raise RuntimeError("no language models")

    monkeypatch.setattr(engines, "language_detector", broken)
    engines.warm_in_background(load_agent(settings.default_agent, settings.agents_dir)).join(30)
    assert "loading the models calls need later failed" in caplog.text and "no language models" in caplog.text
