"""The call's language: a prior from who is calling, then evidence from what they say.

Before the call's stages start, its session sets the language from, in
order: a ``language`` custom parameter (Twilio ``<Parameter>``), the
caller's number (``phonenumbers``: +44 -> GB -> ``en-GB``, +49 -> ``de``),
the caller country the transport knows, else the agent's language
(:func:`prior_language`). Only languages the deployment speaks are chosen.
Every stage then starts in that language: the recogniser listens in it from
the first word.

Then the first final transcripts are checked with text language ID
(``lingua``, restricted to the configured languages); a transcript the
recogniser already made in another language (its audio language ID heard
one) counts as that language unless the text clearly says otherwise. When
another language wins with at least ``threshold`` confidence, the stage sets
``ctx.language``, steers ``LanguageChanged`` up the control path (the
recogniser switches) and pushes it downstream before the transcript that
revealed it (the model and the voice follow).

A language the agent does not speak (``speaks``) is not switched to: the
caller hears, in their language where a voice speaks it, which languages
the agent speaks (:func:`only_speaks`), and the transcript that revealed it
is not answered (no confident answer to a question the model could not read).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import anyio.to_thread
import phonenumbers
from anyio.abc import TaskGroup
from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

from ..errors import ConfigError
from ..pipeline.context import CallContext
from ..pipeline.frames import AgentText, AgentTurnDone, Frame, LanguageChanged, Transcript
from ..pipeline.processor import Processor

__all__ = [
    "COUNTRY_LANGUAGE",
    "only_speaks",
    "DEFAULT_LANGUAGES",
    "LanguageProcessor",
    "detect_language",
    "detector_for",
    "language_for_country",
    "language_for_number",
    "prior_language",
]

DEFAULT_LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "de")
"""Languages the embedded and production stacks speak end to end."""

COUNTRY_LANGUAGE: dict[str, str] = {
    "GB": "en-GB", "IE": "en-IE", "US": "en-US", "CA": "en-CA", "AU": "en-AU", "NZ": "en-NZ",
    "IN": "en-IN", "ZA": "en-ZA", "SG": "en-SG", "PH": "en-PH", "NG": "en-NG", "KE": "en-KE",
    "DE": "de", "AT": "de-AT", "CH": "de-CH", "LI": "de-LI", "LU": "fr-LU",
    "FR": "fr", "BE": "fr-BE", "MC": "fr-MC", "SN": "fr-SN", "CI": "fr-CI",
    "ES": "es", "MX": "es-MX", "AR": "es-AR", "CO": "es-CO", "CL": "es-CL", "PE": "es-PE",
    "VE": "es-VE", "EC": "es-EC", "GT": "es-GT", "CU": "es-CU", "BO": "es-BO", "DO": "es-DO",
    "HN": "es-HN", "PY": "es-PY", "SV": "es-SV", "NI": "es-NI", "CR": "es-CR", "PA": "es-PA",
    "UY": "es-UY", "PR": "es-PR",
    "IT": "it", "PT": "pt-PT", "BR": "pt-BR", "NL": "nl", "PL": "pl", "SE": "sv", "DK": "da",
    "NO": "nb", "FI": "fi", "JP": "ja", "KR": "ko", "CN": "zh", "TR": "tr", "RU": "ru",
}  # fmt: skip
"""Main language of a country (ISO 3166 alpha-2) as a BCP-47 tag."""


_NAMES: dict[str, dict[str, str]] = {
    "en": {"en": "English", "es": "Spanish", "fr": "French", "de": "German"},
    "es": {"en": "inglés", "es": "español", "fr": "francés", "de": "alemán"},
    "fr": {"en": "anglais", "es": "espagnol", "fr": "français", "de": "allemand"},
    "de": {"en": "Englisch", "es": "Spanisch", "fr": "Französisch", "de": "Deutsch"},
}
_ONLY = {
    "en": ("Sorry, I can only help you in {names}.", " and "),
    "es": ("Lo siento, solo puedo atenderle en {names}.", " y "),
    "fr": ("Désolé, je ne peux vous répondre qu'en {names}.", " et "),
    "de": ("Entschuldigung, ich kann Ihnen nur auf {names} helfen.", " und "),
}


def only_speaks(caller_language: str, agent_languages: Iterable[str]) -> tuple[str, str]:
    """What to tell a caller in ``caller_language`` that the agent speaks only ``agent_languages``, and in which
    language (theirs when we have the words for it, else English): ``(text, language)``."""
    language = _base(caller_language) if _base(caller_language) in _ONLY else "en"
    template, joiner = _ONLY[language]
    names = [_NAMES[language].get(code, code) for code in agent_languages]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + joiner + names[-1]
    return template.format(names=listed), language


def _base(tag: str) -> str:
    return tag.split("-", 1)[0].lower()


def language_for_country(country: str, languages: Iterable[str] = DEFAULT_LANGUAGES) -> str | None:
    """The country's language tag when it is one of ``languages`` (by base language), else None."""
    tag = COUNTRY_LANGUAGE.get(country.upper())
    return tag if tag is not None and _base(tag) in set(languages) else None


def language_for_number(number: str, languages: Iterable[str] = DEFAULT_LANGUAGES) -> str | None:
    """Language prior from an E.164 caller number (+44... -> en-GB); None when unknown or unparsable."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    country = phonenumbers.region_code_for_number(parsed) or phonenumbers.region_code_for_country_code(
        parsed.country_code or 0
    )
    if not country or country == phonenumbers.UNKNOWN_REGION:
        return None
    return language_for_country(country, languages)


def prior_language(ctx: CallContext, languages: Iterable[str] = DEFAULT_LANGUAGES) -> str | None:
    """The call's language before anyone speaks: custom parameter, caller number, caller country."""
    allowed = set(languages)
    explicit = ctx.custom.get("language", "").strip()
    if explicit and _base(explicit) in allowed:
        return explicit
    from_number = language_for_number(ctx.caller, allowed) if ctx.caller else None
    if from_number is not None:
        return from_number
    return language_for_country(ctx.caller_country, allowed) if ctx.caller_country else None


def _regional(ctx: CallContext, language: str) -> str:
    """``language`` with the caller's region when the caller's country speaks it (es + +52 -> es-MX)."""
    tag = language_for_number(ctx.caller, {language}) if ctx.caller else None
    if tag is None and ctx.caller_country:
        tag = language_for_country(ctx.caller_country, {language})
    return tag or language


def detector_for(languages: frozenset[str]) -> LanguageDetector:
    """A lingua detector for exactly these languages, models preloaded (blocking; engines keep one)."""
    try:
        chosen = [Language.from_iso_code_639_1(IsoCode639_1.from_str(code)) for code in sorted(languages)]
    except ValueError as error:
        raise ConfigError(f"unsupported language in {sorted(languages)}: {error}") from error
    if len(chosen) < 2:
        raise ConfigError("text language ID needs at least two languages")
    return LanguageDetectorBuilder.from_languages(*chosen).with_preloaded_language_models().build()


def detect_language(detector: LanguageDetector, text: str) -> tuple[str, float]:
    """Most likely language of ``text`` (ISO 639-1, lower case) and its confidence in [0, 1]."""
    values = detector.compute_language_confidence_values(text)
    if not values:
        return "", 0.0
    best = values[0]
    return best.language.iso_code_639_1.name.lower(), float(best.value)


class LanguageProcessor(Processor):
    """Confirms or changes ``ctx.language`` from the first transcripts; steers the recogniser when it changes."""

    __slots__ = ("_languages", "_speaks", "_threshold", "_checks", "_checks_left", "_text", "_detector", "_build",
                 "_told")

    name = "language"
    consumes = frozenset({Transcript})
    produces = frozenset({LanguageChanged, AgentText, AgentTurnDone})
    steers = frozenset({LanguageChanged})

    def __init__(
        self,
        detector: LanguageDetector | Callable[[], LanguageDetector] | None = None,
        *,
        languages: Iterable[str] = DEFAULT_LANGUAGES,
        threshold: float = 0.75,
        transcripts: int = 3,
        speaks: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        self._languages = frozenset(_base(code) for code in languages)
        self._speaks = tuple(_base(code) for code in speaks) if speaks is not None else None
        self._told = False
        if not self._languages:
            raise ConfigError("LanguageProcessor needs at least one language")
        self._threshold = threshold
        self._checks = transcripts
        self._checks_left = transcripts
        self._text = ""
        self._detector: LanguageDetector | None = None
        self._build: Callable[[], LanguageDetector] | None = None
        if isinstance(detector, LanguageDetector):
            self._detector = detector
        elif detector is not None:
            self._build = detector
        else:
            languages_ = self._languages
            self._build = lambda: detector_for(languages_)

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Load the detector if it is not (in a thread: ~0.5 s the first time)."""
        await super().start(ctx, tg)
        self._checks_left = self._checks
        self._text = ""
        if self._detector is None and self._build is not None and len(self._languages) > 1 and self._checks > 0:
            self._detector = await anyio.to_thread.run_sync(self._build)

    async def process(self, frame: Frame) -> None:
        """Check the first final transcripts; everything else passes straight on."""
        if type(frame) is not Transcript or not frame.final or self._checks_left <= 0:
            await self.push(frame)
            return
        await self._check(frame)

    async def _check(self, frame: Transcript) -> None:
        detector, ctx = self._detector, self.ctx
        text = frame.text.strip()
        if detector is None or ctx is None or not text:
            await self.push(frame)
            return
        self._checks_left -= 1
        # Evidence adds up over the first transcripts: one word rarely decides.
        self._text = f"{self._text} {text}".strip()
        language, confidence = await anyio.to_thread.run_sync(detect_language, detector, self._text)
        current = _base(ctx.language)
        heard = _base(frame.language)
        if heard != current and heard in self._languages and (language == heard or confidence < self._threshold):
            language, confidence = heard, max(confidence, self._threshold)  # the recogniser's audio LID heard it
        if language and language != current and confidence >= self._threshold and self._speaks is not None \
                and language not in self._speaks:
            await self._not_spoken(language)
            return
        if language and language != current and confidence >= self._threshold:
            tag = _regional(ctx, language)
            ctx.log.info("language changed %s -> %s (confidence %.2f)", ctx.language, tag, confidence)
            ctx.language = tag
            self._text = ""  # from here on, transcripts come from the new language's recogniser
            changed = LanguageChanged(language=tag, confidence=round(confidence, 3))
            await self.steer(changed)
            await self.push(changed)
            frame = dataclasses.replace(frame, language=tag)
        elif language == current and confidence >= self._threshold:
            self._checks_left = 0  # confirmed: stop spending on it
        await self.push(frame)

    async def _not_spoken(self, language: str) -> None:
        """The caller speaks a language the agent does not: say so (once), in theirs; do not answer the words."""
        ctx = self.ctx
        assert ctx is not None and self._speaks is not None
        self._text = ""
        ctx.log.info("caller speaks %s; the agent speaks %s", language, "/".join(self._speaks))
        if self._told:
            return
        self._told = True
        text, spoken_in = only_speaks(language, self._speaks)
        await self.push(AgentText(text, turn_id=0, language=spoken_in))
        await self.push(AgentTurnDone(turn_id=0))
