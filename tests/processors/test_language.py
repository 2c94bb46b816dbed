"""LanguageProcessor: the caller-number prior, custom parameters and text language ID on transcripts."""

from __future__ import annotations

import pytest

from aybiza.errors import ConfigError
from aybiza.pipeline.context import CallContext
from aybiza.pipeline.frames import DTMF, AgentText, Frame, LanguageChanged, Transcript
from aybiza.processors.language import (
    LanguageProcessor,
    detect_language,
    detector_for,
    language_for_number,
    only_speaks,
    prior_language,
)


class Sink:
    """Collects what the processor pushes (or, as its ``steer``, sends up the control path)."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    async def __call__(self, frame: Frame) -> None:
        self.frames.append(frame)


async def started(ctx: CallContext, **options: object) -> tuple[LanguageProcessor, Sink, Sink]:
    """A started processor with the language its call's session chose (the prior), and its two sinks."""
    ctx.language = prior_language(ctx) or ctx.language  # what the call's session does before the stages start
    processor = LanguageProcessor(**options)  # type: ignore[arg-type]
    sink, steered = Sink(), Sink()
    processor.push = sink
    processor.steer = steered
    await processor.start(ctx, None)  # type: ignore[arg-type]  # spawns no task
    return processor, sink, steered


@pytest.mark.parametrize(
    ("number", "language"),
    [
        ("+442079460000", "en-GB"),
        ("+441632960123", "en-GB"),  # a drama range with no region: the country code still says GB
        ("+4930123456", "de"),
        ("+33123456789", "fr"),
        ("+34912345678", "es"),
        ("+525512345678", "es-MX"),
        ("+12025550123", "en-US"),
        ("+81312345678", None),  # Japanese is not configured
        ("anonymous", None),
        ("", None),
    ],
)
def test_caller_number_gives_the_language_prior(number: str, language: str | None) -> None:
    assert language_for_number(number) == language


def test_custom_parameter_beats_the_number_and_unknown_languages_are_ignored() -> None:
    ctx = CallContext(call_id="c", caller="+442079460000", custom={"language": "fr"})
    assert prior_language(ctx) == "fr"
    ctx.custom["language"] = "ja"
    assert prior_language(ctx) == "en-GB"
    assert prior_language(CallContext(call_id="c", caller_country="DE")) == "de"
    assert prior_language(CallContext(call_id="c")) is None


@pytest.mark.anyio
async def test_start_keeps_the_language_the_call_began_in() -> None:
    ctx = CallContext(call_id="c", caller="+4930123456", language="fr")
    processor = LanguageProcessor()
    await processor.start(ctx, None)  # type: ignore[arg-type]  # spawns no task
    assert ctx.language == "fr", "the prior is the session's; the stage only judges transcripts"


@pytest.mark.anyio
async def test_a_transcript_in_another_language_changes_the_call_language_first() -> None:
    ctx = CallContext(call_id="c", caller="+442079460000")
    processor, sink, steered = await started(ctx)
    interim = Transcript("Guten Tag", final=False)
    await processor.process(interim)
    assert sink.frames == [interim] and ctx.language == "en-GB", "interim transcripts are not judged"
    await processor.process(Transcript("Guten Tag, ich möchte meinen Kontostand wissen", final=True))
    changed, transcript = sink.frames[1:]
    assert isinstance(changed, LanguageChanged) and changed.language == "de"
    assert changed.confidence >= 0.75
    assert isinstance(transcript, Transcript) and transcript.language == "de"
    assert ctx.language == "de"
    assert steered.frames == [changed], "the recogniser upstream is steered to the new language"


@pytest.mark.anyio
async def test_the_detected_language_takes_the_callers_region() -> None:
    ctx = CallContext(call_id="c", caller="+525512345678", custom={"language": "en"})
    processor, sink, steered = await started(ctx)
    await processor.process(Transcript("Hola, quisiera saber el saldo de mi cuenta", final=True))
    assert ctx.language == "es-MX"
    assert isinstance(sink.frames[0], LanguageChanged) and sink.frames[0].language == "es-MX"
    assert steered.frames == [sink.frames[0]]


@pytest.mark.anyio
async def test_matching_or_ambiguous_transcripts_change_nothing() -> None:
    ctx = CallContext(call_id="c", caller="+442079460000")
    processor, sink, steered = await started(ctx)
    frames: list[Frame] = [
        Transcript("ok", final=True),
        DTMF("1"),
        Transcript("I would like to check my balance please", final=True),
        Transcript("Bonjour je voudrais parler à quelqu'un", final=True),  # after confirmation: not judged
    ]
    for frame in frames:
        await processor.process(frame)
    assert sink.frames == frames
    assert steered.frames == []
    assert ctx.language == "en-GB"


@pytest.mark.anyio
async def test_only_the_first_transcripts_are_checked() -> None:
    ctx = CallContext(call_id="c", language="en")
    processor, sink, steered = await started(ctx, transcripts=1)
    await processor.process(Transcript("yes", final=True))
    await processor.process(Transcript("Je voudrais connaître le solde de mon compte", final=True))
    assert not any(isinstance(f, LanguageChanged) for f in sink.frames + steered.frames)
    assert ctx.language == "en"


def test_detection_is_restricted_to_the_configured_languages() -> None:
    detector = detector_for(frozenset({"en", "de"}))
    language, confidence = detect_language(detector, "Hola, quisiera saber el saldo de mi cuenta")
    assert language in {"en", "de"} and 0.0 <= confidence <= 1.0
    with pytest.raises(ConfigError):
        detector_for(frozenset({"en", "xx"}))


@pytest.mark.anyio
async def test_the_detector_comes_from_the_factory_once_the_call_starts() -> None:
    built: list[frozenset[str]] = []

    def factory() -> object:
        languages = frozenset({"en", "de"})
        built.append(languages)
        return detector_for(languages)

    ctx = CallContext(call_id="c", language="en")
    processor, sink, _ = await started(ctx, detector=factory)
    assert len(built) == 1, "built once, when the call starts"
    await processor.process(Transcript("Guten Tag, ich möchte meinen Kontostand wissen", final=True))
    assert ctx.language == "de"


@pytest.mark.anyio
async def test_a_caller_in_a_language_the_agent_lacks_hears_so_in_that_language_and_gets_no_answer() -> None:
    ctx = CallContext(call_id="c", caller="+34912345678", language="en")
    processor, sink, steered = await started(ctx, speaks=("en",))
    ctx.language = "en"  # an English-only agent: the session does not take Spanish from the number
    await processor.process(Transcript("¿A qué hora abren los sábados?", final=True, language="es"))
    notices = [f for f in sink.frames if isinstance(f, AgentText)]
    assert [(n.text, n.language) for n in notices] == [("Lo siento, solo puedo atenderle en inglés.", "es")]
    assert not [f for f in sink.frames if isinstance(f, Transcript)], "the Spanish question is not answered"
    assert ctx.language == "en" and steered.frames == []


@pytest.mark.anyio
async def test_audio_language_id_in_the_transcript_switches_an_agent_that_speaks_it() -> None:
    ctx = CallContext(call_id="c", caller="+15555550123", language="en")
    processor, sink, steered = await started(ctx, speaks=("en", "es"))
    await processor.process(Transcript("a qué hora abren", final=True, language="es"))
    assert ctx.language == "es"
    assert [f.language for f in steered.frames if isinstance(f, LanguageChanged)] == ["es"]


def test_the_language_notice_names_the_agents_languages_in_the_callers() -> None:
    assert only_speaks("fr-FR", ("en", "es")) == ("Désolé, je ne peux vous répondre qu'en anglais et espagnol.", "fr")
    assert only_speaks("ja", ("en",)) == ("Sorry, I can only help you in English.", "en")
