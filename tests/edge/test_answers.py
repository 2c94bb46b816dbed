"""Which turns may be answered from the cache, and the keys and encodings of cached answers and audio."""

from __future__ import annotations

import pytest

from aybiza.agents import FAQ, AgentConfig
from aybiza.edge.answers import (
    AnswerPolicy,
    CachedAnswer,
    decode_audio,
    encode_audio,
    has_personal_data,
    normalize_transcript,
    tts_key,
)


def _agent(**overrides: object) -> AgentConfig:
    fields: dict[str, object] = {
        "id": "dental",
        "name": "Dental",
        "greeting": "Hello.",
        "system_prompt": "Be brief.",
        "fallback": "Sorry?",
        "faqs": (FAQ(id="hours", answer="Nine to five.", questions=("What are your opening hours?",)),),
    }
    fields.update(overrides)
    return AgentConfig.model_validate(fields)


@pytest.mark.parametrize(
    ("spoken", "normalized"),
    [
        ("Um, hi! What are your opening hours, please?", "what are your opening hours"),
        ("WHAT are your   opening hours", "what are your opening hours"),
        ("Uh... so, where do I park? Thank you.", "where do i park"),
        ("hello", "hello"),
        ("", ""),
        ("Café au lait?", "café au lait"),
    ],
)
def test_normalization_removes_what_does_not_change_the_question(spoken: str, normalized: str) -> None:
    assert normalize_transcript(spoken) == normalized


@pytest.mark.parametrize(
    "text",
    ["my number is 07700 900123", "card 4111-1111-1111-1111", "born 12 03 1980 1234", "mail me at a@b.example"],
)
def test_personal_data_is_recognised(text: str) -> None:
    assert has_personal_data(text)


def test_short_numbers_are_not_personal() -> None:
    assert not has_personal_data("Do you open at 9 on Saturday? Is parking 2 pounds?")


def test_first_turn_is_cacheable_later_turns_only_if_faq_like() -> None:
    policy = AnswerPolicy(_agent())
    assert policy.key_for("Do you take new patients?", "en", first_turn=True) is not None
    assert policy.key_for("Do you take new patients?", "en", first_turn=False) is None
    assert policy.key_for("Um, what are your opening hours?", "en", first_turn=False) is not None


def test_stateless_model_makes_every_turn_cacheable() -> None:
    policy = AnswerPolicy(_agent(), stateless_model=True)
    assert policy.key_for("And on Sundays?", "en", first_turn=False) is not None


def test_never_cached() -> None:
    policy = AnswerPolicy(_agent(), stateless_model=True, max_words=6)
    assert policy.key_for("my account is 12345678", "en", first_turn=True) is None
    assert policy.key_for("um", "en", first_turn=True) is None
    assert policy.key_for("one two three four five six seven", "en", first_turn=True) is None
    off = AnswerPolicy(_agent(cache_answers=False), stateless_model=True)
    assert off.key_for("What are your opening hours?", "en", first_turn=True) is None


def test_key_depends_on_question_agent_version_tier_and_language() -> None:
    base = AnswerPolicy(_agent()).key_for("What are your opening hours?", "en", first_turn=True)
    same = AnswerPolicy(_agent()).key_for("what are your opening hours", "en", first_turn=True)
    assert base == same
    others = {
        AnswerPolicy(_agent()).key_for("Where do I park?", "en", first_turn=True),
        AnswerPolicy(_agent()).key_for("What are your opening hours?", "de", first_turn=True),
        AnswerPolicy(_agent(), tier="premium").key_for("What are your opening hours?", "en", first_turn=True),
        AnswerPolicy(_agent(id="other")).key_for("What are your opening hours?", "en", first_turn=True),
        AnswerPolicy(_agent(fallback="Pardon?")).key_for("What are your opening hours?", "en", first_turn=True),
    }
    assert base not in others and len(others) == 5


def test_cached_answer_round_trip() -> None:
    answer = CachedAnswer(("Nine to five.", "Closed on Sundays."), "en-GB")
    assert CachedAnswer.decode(answer.encode()) == answer
    assert CachedAnswer.decode(b"junk") is None
    assert CachedAnswer.decode(b'{"s": [], "l": "en"}') is None


def test_audio_round_trip_keeps_chunk_boundaries() -> None:
    chunks = [b"\x01\x00" * 10, b"", b"\x02\x00" * 3]
    assert decode_audio(encode_audio(chunks, 22050)) == (chunks, 22050)
    packed = encode_audio(chunks, 16000)
    assert decode_audio(packed[:-1]) is None
    assert decode_audio(b"RIFF....") is None


def test_tts_key_depends_on_text_voice_language_and_format() -> None:
    key = tts_key("Hello there.", "piper:joe", "en")
    assert key == tts_key("Hello  there.", "piper:joe", "EN")
    assert len({key, tts_key("Hello there!", "piper:joe", "en"), tts_key("Hello there.", "espeak-ng", "en"),
                tts_key("Hello there.", "piper:joe", "de"), tts_key("Hello there.", "piper:joe", "en", "ulaw")}) == 5
