"""Streaming text → spoken sentences, and the conversation's normalisation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aybiza.processors.llm.sentences import ChatMessage, SentenceSplitter, normalise_messages


def split(deltas: list[str], max_chars: int = 240) -> list[str]:
    splitter = SentenceSplitter(max_chars)
    out: list[str] = []
    for delta in deltas:
        out.extend(splitter.push(delta))
    rest = splitter.flush()
    return out + ([rest] if rest else [])


def test_a_sentence_is_released_as_soon_as_the_next_word_begins() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Hello the") == []
    assert splitter.push("re.") == []  # could still be "there.com"
    assert splitter.push(" How") == ["Hello there."]
    assert splitter.push(" are you?") == []
    assert splitter.flush() == "How are you?"
    assert splitter.flush() is None


def test_abbreviations_initials_decimals_and_list_numbers_do_not_end_a_sentence() -> None:
    text = "Dr. Smith sees J. Doe at 9.30 a.m. on Friday. It costs 3.50 dollars. 1. Bring your card. Thanks!"
    assert split([text]) == [
        "Dr. Smith sees J. Doe at 9.30 a.m. on Friday.",
        "It costs 3.50 dollars.",
        "1. Bring your card.",
        "Thanks!",
    ]


def test_a_number_can_end_a_sentence() -> None:
    assert split(["Your code is 4821. Write it down."]) == ["Your code is 4821.", "Write it down."]


def test_runs_of_terminators_quotes_line_breaks_and_cjk() -> None:
    assert split(['He said "wait!" Then left. Really?! Yes…', " ok"]) == [
        'He said "wait!"',
        "Then left.",
        "Really?!",
        "Yes…",
        "ok",
    ]
    assert split(["First line\nSecond line"]) == ["First line", "Second line"]
    assert split(["你好。今天怎么样？好"]) == ["你好。", "今天怎么样？", "好"]


def test_a_long_run_without_a_full_stop_is_cut_at_a_clause() -> None:
    text = "well, " * 30 + "that is all"
    pieces = split([text], max_chars=50)
    assert all(len(p) <= 50 for p in pieces)
    assert pieces[0].endswith(",")
    assert " ".join(pieces).split() == text.split()


@given(st.text(alphabet=st.sampled_from(list("aaaaaaaaaab .!?,\n")), max_size=200), st.data())
def test_no_text_is_lost_or_reordered_however_it_is_streamed(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    pieces = split(deltas, max_chars=40)
    assert "".join(pieces).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
    assert all(p == p.strip() and p for p in pieces)
    assert pieces == split([text], max_chars=40), "the result does not depend on how deltas are cut"


def test_messages_are_normalised_for_providers_that_reject_blank_and_repeated_roles() -> None:
    messages = [
        ChatMessage("assistant", "Hello, bookings."),
        ChatMessage("user", " "),
        ChatMessage("user", "Hi"),
        ChatMessage("user", "a table please"),
        ChatMessage("assistant", ""),
    ]
    assert normalise_messages(messages) == [
        ChatMessage("user", "(the call connected)"),
        ChatMessage("assistant", "Hello, bookings."),
        ChatMessage("user", "Hi\na table please"),
    ]
