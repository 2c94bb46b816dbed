"""Words a turn cannot end on: the text half of the end of turn.

On phone audio the end-of-turn model hears a pause after "the", "de", "and"
much like the end of a question (``endpoint.py``'s calibration note). The
words heard so far settle many of those pauses: an utterance does not end on
an article, a possessive or a conjunction, nor (in Spanish and French, which
do not strand them) on a preposition. :func:`ends_open` says whether the
recogniser's text of the turn so far stops on such a word; the end of turn
then waits for the silence limit instead of ending the turn.

The sets are kept small on purpose: a word that *can* end an utterance
("with" in "what can you help me with", "to" in "do I have to") is left
out, because a wrong "open" costs the caller the silence limit on a finished
question, while a missing word only costs what the audio alone decides.
"""

from __future__ import annotations

import re

__all__ = ["OPEN_ENDINGS", "ends_open"]

OPEN_ENDINGS: dict[str, frozenset[str]] = {
    "en": frozenset("a an the my your our their of and or but because if than i'm we're you're they're".split()),
    "es": frozenset(
        "el la los las un una unos unas mi mis tu tus su sus nuestro nuestra nuestros nuestras de del al a y e o u "
        "pero porque que con en por para sin sobre entre hasta desde hacia".split()
    ),
    "fr": frozenset(
        "le la les un une des du de au aux mon ma mes ton ta tes son sa ses notre nos votre vos et ou mais que "
        "dans sur à par pour".split()
    ),
    "de": frozenset(
        "der die das den dem des ein eine einen einem einer eines mein meine dein deine und oder aber weil dass "
        "zu zum zur mit von für".split()
    ),
}
"""Per primary language tag: words after which the caller's sentence goes on."""

_WORD = re.compile(r"[\w']+")


def ends_open(text: str, language: str = "en") -> bool:
    """Whether ``text`` (a recogniser's words of the turn so far) stops on a word a sentence cannot end on."""
    words = _WORD.findall(text.lower().replace("’", "'"))
    if not words:
        return False
    return words[-1] in OPEN_ENDINGS.get(language.split("-", 1)[0].lower(), frozenset())
