"""Text language ID on short caller transcripts (1-5 words) in en/es/fr/de, clean and misrecognised.

Each phrase is what a caller says early in a call. Every phrase is also
scored in three damaged forms a recogniser produces: accents dropped,
one letter of the longest word changed (a misheard phoneme) and one word
swapped for a near-homophone in the same language. Reported: accuracy of
the detector's top answer (lingua restricted to the four languages, as
:func:`aybiza.processors.language.detect_language` runs it), and for the
processor's 0.75 confidence threshold how often it decides and how often
those decisions are right (a wrong decision switches the call's language;
no decision keeps the prior).

Run: ``.venv/bin/python benchmarks/accuracy/lid_accuracy.py`` (prints the figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json
import time
import unicodedata
from typing import Any

import numpy as np

from aybiza.processors.language import DEFAULT_LANGUAGES, detect_language, detector_for

__all__ = ["PHRASES", "damaged", "run"]

THRESHOLD = 0.75

PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "yes please", "I need help", "check my balance", "my card was declined", "talk to an agent",
        "what are your opening hours", "I want to cancel", "where is my order", "thank you very much",
        "can you repeat that", "I lost my password", "the payment failed", "book an appointment",
        "that is wrong", "I would like a refund", "how much does it cost", "change my address",
        "nobody called me back", "is anyone there", "sorry I did not understand",
    ),
    "es": (
        "sí por favor", "necesito ayuda", "consultar mi saldo", "mi tarjeta fue rechazada",
        "hablar con un agente", "cuál es el horario", "quiero cancelar", "dónde está mi pedido",
        "muchas gracias", "puede repetir", "perdí mi contraseña", "el pago falló", "pedir una cita",
        "eso está mal", "quiero un reembolso", "cuánto cuesta", "cambiar mi dirección",
        "nadie me llamó", "hay alguien ahí", "perdón no entendí",
    ),
    "fr": (
        "oui s'il vous plaît", "j'ai besoin d'aide", "consulter mon solde", "ma carte a été refusée",
        "parler à un conseiller", "quels sont vos horaires", "je veux annuler", "où est ma commande",
        "merci beaucoup", "pouvez-vous répéter", "j'ai perdu mon mot de passe", "le paiement a échoué",
        "prendre rendez-vous", "c'est faux", "je voudrais un remboursement", "combien ça coûte",
        "changer mon adresse", "personne ne m'a rappelé", "il y a quelqu'un", "pardon je n'ai pas compris",
    ),
    "de": (
        "ja bitte", "ich brauche Hilfe", "meinen Kontostand prüfen", "meine Karte wurde abgelehnt",
        "mit einem Mitarbeiter sprechen", "wann haben Sie geöffnet", "ich möchte kündigen",
        "wo ist meine Bestellung", "vielen Dank", "können Sie das wiederholen", "ich habe mein Passwort vergessen",
        "die Zahlung ist fehlgeschlagen", "einen Termin vereinbaren", "das ist falsch",
        "ich möchte eine Rückerstattung", "wie viel kostet das", "meine Adresse ändern",
        "niemand hat mich zurückgerufen", "ist da jemand", "Entschuldigung ich habe nicht verstanden",
    ),
}  # fmt: skip

# Near-homophones a recogniser confuses, per language (word -> what it hears).
_MISHEARD: dict[str, dict[str, str]] = {
    "en": {"my": "might", "to": "two", "I": "eye", "the": "a", "you": "new", "is": "his", "that": "cat"},
    "es": {"mi": "me", "el": "al", "que": "qué", "un": "en", "está": "esta", "no": "lo"},
    "fr": {"mon": "ma", "ma": "mon", "le": "les", "un": "une", "je": "jeu", "à": "a", "est": "et"},
    "de": {"ich": "mich", "meine": "deine", "das": "dass", "ist": "isst", "die": "der", "mit": "mir"},
}


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).replace("ß", "ss")


def damaged(text: str, language: str, rng: np.random.Generator) -> dict[str, str]:
    """The phrase as a recogniser might return it: accents lost, a letter wrong, a word misheard."""
    words = text.split()
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    word = words[longest]
    position = int(rng.integers(len(word)))
    letter = "aeiounrst"[int(rng.integers(9))]
    typo = words.copy()
    typo[longest] = word[:position] + letter + word[position + 1 :]
    swaps = _MISHEARD[language]
    misheard = [swaps.get(w, w) for w in words]
    if misheard == words:  # nothing to swap: drop the last word instead (a clipped ending)
        misheard = words[:-1] or words
    return {
        "no_accents": _strip_accents(text).lower(),
        "typo": " ".join(typo).lower(),
        "misheard": " ".join(misheard).lower(),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Score clean and damaged phrases; returns the JSON-able result."""
    started = time.perf_counter()
    languages = frozenset(DEFAULT_LANGUAGES)
    detector = detector_for(languages)
    rng = np.random.default_rng(3)
    rows: list[tuple[str, str, str, str, float]] = []  # variant, truth, text, guess, confidence
    for truth, phrases in PHRASES.items():
        for phrase in phrases:
            variants = {"clean": phrase, **damaged(phrase, truth, rng)}
            for variant, text in variants.items():
                guess, confidence = detect_language(detector, text)
                rows.append((variant, truth, text, guess, confidence))
    per_variant: dict[str, dict[str, float]] = {}
    for variant in ("clean", "no_accents", "typo", "misheard", "all"):
        subset = [r for r in rows if variant in ("all", r[0])]
        correct = sum(r[3] == r[1] for r in subset)
        decided = [r for r in subset if r[4] >= THRESHOLD]
        per_variant[variant] = {
            "phrases": len(subset),
            "accuracy": round(correct / len(subset), 4),
            "decided_at_threshold": round(len(decided) / len(subset), 4),
            "accuracy_when_decided": round(sum(r[3] == r[1] for r in decided) / len(decided), 4) if decided else 0.0,
        }
    per_language = {
        language: round(
            sum(r[3] == r[1] for r in rows if r[1] == language) / sum(1 for r in rows if r[1] == language), 4
        )
        for language in PHRASES
    }
    errors = [
        {"variant": r[0], "truth": r[1], "text": r[2], "guess": r[3], "confidence": round(r[4], 3)}
        for r in rows
        if r[3] != r[1]
    ]
    return {
        "benchmark": "lid_accuracy",
        "quick": quick,
        "detector": "lingua-language-detector, restricted to " + "/".join(sorted(languages)),
        "threshold": THRESHOLD,
        "by_variant": per_variant,
        "by_language": per_language,
        "errors": errors,
        "seconds": round(time.perf_counter() - started, 2),
    }


def main() -> None:
    """Run standalone and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    result = run(quick=parser.parse_args().quick)
    print(json.dumps({k: v for k, v in result.items() if k != "errors"}, indent=2, ensure_ascii=False))
    for error in result["errors"]:
        print(f"  wrong: {error}")


if __name__ == "__main__":
    main()
