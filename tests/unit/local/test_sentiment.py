"""Local sentiment: VADER for English, an honest 'unknown' elsewhere. Invented texts only."""

from __future__ import annotations

import pytest

from atum_ai.local import sentiment as sentiment_mod
from atum_ai.local.sentiment import Sentiment, analyze_sentiment, register_analyzer


def test_english_negative() -> None:
    s = analyze_sentiment(
        "Dear Support,\n\nI hope this message finds you well. The export crashed again and "
        "I lost a whole day of work. This is unacceptable and I am very frustrated.\n\n"
        "Best regards,\nSam",
        "en",
    )
    assert s.label == "negative"
    assert -1.0 <= s.score < -0.05
    assert s.method.startswith("vader-")
    assert 0.5 <= s.confidence <= 0.9


def test_english_positive() -> None:
    s = analyze_sentiment("The new dashboard is great, it saved us hours. Awesome work!", "en")
    assert s.label == "positive"
    assert s.score > 0.05


def test_politeness_alone_is_neutral() -> None:
    # VADER alone would call this positive ("thank", "help", "like", "please", "hope").
    s = analyze_sentiment(
        "Hello team, I hope you are doing well. I would like to request an invoice copy, "
        "please. Thank you for your help. Kind regards, Ana",
        "EN",
    )
    assert s.label == "neutral"
    assert s.score == 0.0
    assert s.band == "Medium"


@pytest.mark.parametrize("language", ["de", "es", "fr", "pt", "xx", "", None])
def test_unsupported_languages_are_unknown(language: str | None) -> None:
    s = analyze_sentiment("Das ist leider schon wieder kaputt, sehr ärgerlich!", language)
    assert s == Sentiment(label="unknown", score=0.0, confidence=0.0,
                          method="unsupported-language")
    assert s.band == "Low"


@pytest.mark.parametrize(
    "text",
    ["", None, "\x00" * 50, "🔥😡💥" * 10, "a" * 2_000_000, "bad \ud800 surrogate. awful!",
     "no punctuation at all just a long run of words " * 5_000],
)
def test_weird_input_does_not_crash(text: str | None) -> None:
    s = analyze_sentiment(text, "en")
    assert s.label in {"negative", "neutral", "positive"}
    assert -1.0 <= s.score <= 1.0
    assert 0.0 <= s.confidence <= 1.0


def test_register_analyzer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sentiment_mod, "_ANALYZERS", {})
    register_analyzer("fr", "test-lexicon", lambda text: -0.7 if "mauvais" in text else None)
    assert "fr" in sentiment_mod.supported_languages()
    bad = analyze_sentiment("Le service est mauvais.", "fr")
    assert (bad.label, bad.score, bad.method) == ("negative", -0.7, "test-lexicon")
    assert analyze_sentiment("Rien à dire.", "fr").label == "neutral"
    register_analyzer("pt", "broken", lambda text: float("nan"))
    assert analyze_sentiment("texto", "pt").label == "neutral"
