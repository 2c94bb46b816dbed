"""WhisperRecognizer / WhisperSTT: telephone speech in, final transcripts out, tampered models refused."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from anyio.abc import TaskGroup

from aybiza.errors import ConfigError, ModelIntegrityError
from aybiza.pipeline.context import CallContext
from aybiza.pipeline.frames import (
    DTMF,
    Frame,
    InputAudio,
    Interruption,
    LanguageChanged,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from aybiza.pipeline.ledger import Stage
from aybiza.pipeline.pipeline import Pipeline
from aybiza.processors.packaged import WHISPER_TINY_EN, PackagedModel, verified_dir
from aybiza.processors.stt.whisper import WhisperRecognizer, WhisperSTT
from aybiza.testing import wait_until

from .helpers import RATE, Collector, audio_frames, needs_espeak, run_stage, telephone_speech, utterance


def finals(frames: list[Frame]) -> list[Transcript]:
    return [f for f in frames if isinstance(f, Transcript) and f.final]


class ScriptedRecognizer(WhisperRecognizer):
    """Answers from a script instead of a model; records what it was asked to transcribe."""

    def __init__(self, *answers: str, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.answers = list(answers)
        self.heard: list[tuple[int, int]] = []  # (bytes, sample rate)
        self.languages: list[str] = []
        self.gate = gate

    def load(self) -> None:
        return None

    @property
    def loaded(self) -> bool:
        return True

    def transcribe(self, pcm16: bytes, sample_rate: int, language: str = "en") -> str:
        if self.gate is not None:
            self.gate.wait(10)
        self.heard.append((len(pcm16), sample_rate))
        self.languages.append(language)
        return self.answers.pop(0) if self.answers else ""


# --- the real model -------------------------------------------------------------------------


@needs_espeak
@pytest.mark.parametrize(
    ("sentence", "key_words"),
    [
        ("I want to cancel my order", {"cancel", "order"}),
        ("what time do you open on saturday", {"open", "saturday"}),
    ],
)
def test_whisper_understands_telephone_band_speech(sentence: str, key_words: set[str]) -> None:
    text = WhisperRecognizer().transcribe(telephone_speech(sentence), RATE)
    words = set(text.lower().replace("?", " ").replace(".", " ").replace(",", " ").split())
    assert key_words <= words, text


@needs_espeak
@pytest.mark.anyio
async def test_whisper_stage_turns_an_utterance_into_a_final_transcript() -> None:
    speech = telephone_speech("I want to cancel my order")
    before_speech: list[Frame] = [InputAudio(bytes(320), RATE, time.monotonic(), voiced=False)]
    frames = before_speech + utterance(speech)  # audio before SpeechStarted is not transcribed
    stopped = next(f for f in frames if isinstance(f, SpeechStopped))
    ctx = CallContext(call_id="whisper-e2e", language="en-GB")

    out, ctx = await run_stage(WhisperSTT(WhisperRecognizer()), frames, lambda got, _: bool(finals(got)), ctx)

    assert [type(f) for f in out] == [SpeechStarted, SpeechStopped, Transcript]
    (transcript,) = finals(out)
    assert "cancel" in transcript.text.lower() and "order" in transcript.text.lower()
    assert transcript.language == "en-GB"
    assert transcript.speech_ended_at == stopped.at
    assert ctx.ledger.usage().stt_seconds == {"whisper": pytest.approx(0.1 + len(speech) / (2 * RATE), abs=1e-3)}
    assert [(stage, turn) for stage, _, turn in ctx.ledger.samples] == [(Stage.STT_FINAL, 1)]


def test_a_user_model_directory_is_loaded_without_a_pin(tmp_path: Path) -> None:
    assert WhisperRecognizer(model_dir=verified_dir(WHISPER_TINY_EN)).transcribe(bytes(16000), 8000) == ""
    with pytest.raises(ConfigError, match="not a faster-whisper model directory"):
        WhisperRecognizer(model_dir=tmp_path).load()


# --- model integrity ------------------------------------------------------------------------


@pytest.fixture
def tampered_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PackagedModel:
    """A package holding a copy of tiny.en with one byte of its weights flipped."""
    package = tmp_path / "tampered_whisper_pkg"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for relative, _ in WHISPER_TINY_EN.files:
        shutil.copyfile(WHISPER_TINY_EN.directory() / relative, package / "model" / relative)
    weights = package / "model" / "model.bin"
    with weights.open("r+b") as f:
        f.seek(weights.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x01]))
    monkeypatch.syspath_prepend(str(tmp_path))
    return PackagedModel(
        name="tampered tiny.en", package="tampered_whisper_pkg", subdir="model", files=WHISPER_TINY_EN.files
    )


def test_a_tampered_packaged_model_is_refused(tampered_model: PackagedModel) -> None:
    with pytest.raises(ModelIntegrityError, match=r"model\.bin has SHA-256 .* expected 1a5afae0"):
        WhisperRecognizer(packaged=tampered_model).load()


@pytest.mark.anyio
async def test_a_tampered_model_ends_the_call_at_start(tampered_model: PackagedModel) -> None:
    stage = WhisperSTT(WhisperRecognizer(packaged=tampered_model))
    with pytest.raises(ExceptionGroup) as caught:
        await run_stage(stage, [], lambda got, _: False)
    assert caught.group_contains(ModelIntegrityError)


# --- the stage's behaviour, with a scripted recogniser -----------------------------------------


@pytest.mark.anyio
async def test_interruption_is_forwarded_and_the_utterance_still_transcribed() -> None:
    gate = threading.Event()
    recognizer = ScriptedRecognizer("what are your opening hours", gate=gate)
    frames = [*utterance(bytes(16000)), Interruption(time.monotonic()), DTMF("5")]

    def barge_in_seen_then_transcript(got: list[Frame], _: CallContext) -> bool:
        if any(isinstance(f, Interruption) for f in got):
            gate.set()  # transcription finishes only after the barge-in went downstream
        return bool(finals(got))

    out, _ = await run_stage(WhisperSTT(recognizer), frames, barge_in_seen_then_transcript)
    assert [type(f) for f in out] == [SpeechStarted, SpeechStopped, Interruption, DTMF, Transcript]
    assert finals(out)[0].text == "what are your opening hours"


@pytest.mark.anyio
async def test_a_long_utterance_is_transcribed_in_capped_pieces() -> None:
    recognizer = ScriptedRecognizer("one", "two", "three")
    frames = utterance(bytes(2 * int(1.1 * RATE)), pre_roll=0.1)  # 1.2 s in 20 ms frames
    stopped = next(f for f in frames if isinstance(f, SpeechStopped))
    stage = WhisperSTT(recognizer, max_utterance_seconds=0.5)

    out, ctx = await run_stage(stage, frames, lambda got, _: len(finals(got)) == 3)

    assert [t.text for t in finals(out)] == ["one", "two", "three"]
    assert [t.speech_ended_at for t in finals(out)] == [None, None, stopped.at]
    assert recognizer.heard == [(8000, RATE), (8000, RATE), (3200, RATE)]
    assert ctx.ledger.usage().stt_seconds == {"whisper": pytest.approx(1.2)}


@pytest.mark.anyio
async def test_silence_and_blips_give_no_transcript() -> None:
    recognizer = ScriptedRecognizer("")
    frames = [*utterance(b"", pre_roll=0.04), *utterance(bytes(16000), pre_roll=0.0)]

    def transcribed(_: list[Frame], call: CallContext) -> bool:
        return "whisper" in call.ledger.usage().stt_seconds

    out, ctx = await run_stage(WhisperSTT(recognizer), frames, transcribed)

    assert recognizer.heard == [(16000, RATE)]  # the 40 ms blip is not worth a transcription
    assert not any(isinstance(f, (Transcript, InputAudio)) for f in out)
    assert [type(f) for f in out] == [SpeechStarted, SpeechStopped] * 2


@pytest.mark.anyio
async def test_utterances_at_16k_are_collected_at_their_own_rate() -> None:
    recognizer = ScriptedRecognizer("hello")
    frames = [SpeechStarted(0.0), *audio_frames(bytes(6400), 16000), SpeechStopped(1.0)]

    out, _ = await run_stage(WhisperSTT(recognizer), frames, lambda got, _: bool(finals(got)))

    assert recognizer.heard == [(6400, 16000)]
    assert finals(out)[0].speech_ended_at == 1.0


@pytest.mark.anyio
async def test_a_language_steered_up_switches_the_recogniser_for_the_next_utterance() -> None:
    english, german = ScriptedRecognizer("hello"), ScriptedRecognizer("guten tag")
    stage = WhisperSTT(lambda language: german if language.startswith("de") else english)
    sink = Collector()
    steered: list[Frame] = []

    async def on_control(frame: Frame) -> None:
        steered.append(frame)

    async def feed(pipeline: Pipeline, tg: TaskGroup) -> None:
        for frame in utterance(bytes(3200)):
            await pipeline.push(frame)
        await wait_until(lambda: len(finals(sink.frames)) == 1)
        await sink.steer(LanguageChanged("de"))  # what the language stage downstream steers up
        for frame in utterance(bytes(3200)):
            await pipeline.push(frame)
        await wait_until(lambda: len(finals(sink.frames)) == 2)

    await Pipeline([stage, sink], on_control=on_control).run(CallContext(call_id="lang", language="en"), feed)
    assert [(t.text, t.language) for t in finals(sink.frames)] == [("hello", "en"), ("guten tag", "de")]
    assert english.languages == ["en"] and german.languages == ["de"]
    assert steered == [LanguageChanged("de")], "the language change goes on up"
