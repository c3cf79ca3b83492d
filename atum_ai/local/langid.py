"""Language identification without a network or an LLM (py3langid, which ships its model).

Restricting the candidates to the languages a helpdesk actually receives matters more than
the classifier: over all 97 languages langid confuses short German or Spanish texts with
Luxembourgish or Galician, while over a dozen plausible languages it is right almost always.
The restriction is configurable per call, and probabilities are renormalised over the
candidates so that the confidence means "how sure among the languages we consider".

The model is loaded once per process (about 0.3 s); one identifier is kept per candidate set,
because py3langid's ``set_languages`` mutates the identifier and so cannot be shared between
threads with different sets. ``classify`` itself only reads, so the cached identifiers are
safe to use from several threads (e.g. via ``asyncio.to_thread``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

from py3langid.langid import MODEL_FILE, LanguageIdentifier

# The five languages of the ticket data plus the other large European helpdesk languages.
DEFAULT_LANGUAGES: tuple[str, ...] = (
    "en", "de", "es", "fr", "pt", "it", "nl", "pl", "sv", "da", "no", "fi", "cs", "tr", "ru",
)  # fmt: skip
# Relative base rates: English is the lingua franca of support mail, the next four are the
# languages this project's tenants serve. Only near-ties (very short texts) feel it.
DEFAULT_PRIOR: Mapping[str, float] = {"en": 3.0, "de": 2.0, "es": 2.0, "fr": 2.0, "pt": 2.0}
UNDETERMINED = "und"  # ISO 639-2 "undetermined": no letters to judge by
MAX_CHARS = 4000  # the first few thousand characters decide; longer input only costs time
OPENING_CHARS = 400  # "the language the customer opened with" (see _posterior)

_identifiers: dict[frozenset[str], LanguageIdentifier] = {}
_lock = threading.Lock()
_LETTER_RE = re.compile(r"[^\W\d_]")
# Dataset-style placeholders (<name>, <tel_num>) and URLs/e-mails carry no language signal but
# plenty of English-looking n-grams; they are removed before scoring.
_QUOTED_LINE_RE = re.compile(r"(?m)^[ \t]*>.*$")
_NOISE_RE = re.compile(r"<[A-Za-z_]{1,30}>|\bhttps?://\S+|\S+@\S+")


def _identifier(languages: frozenset[str]) -> LanguageIdentifier:
    ident = _identifiers.get(languages)
    if ident is None:
        with _lock:
            ident = _identifiers.get(languages)
            if ident is None:
                ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
                ident.set_languages(sorted(languages))  # raises ValueError for unknown codes
                _identifiers[languages] = ident
    return ident


def _posterior(
    text: str, candidates: frozenset[str], prior: Mapping[str, float]
) -> dict[str, float]:
    """Normalised probabilities over ``candidates``, best first.

    Two adjustments on top of langid's own scores, both for cases its bag of n-grams gets
    wrong rather than for any data set:

    * the opening counts twice in long texts: a reply written above a quoted thread, or a
      message that drifts into a second language, should be answered in the language the
      customer opened with;
    * a prior (base rates of the helpdesk's languages) breaks near-ties in one- or two-word
      tickets ("Help" is also Dutch); it cannot outvote clear evidence, because langid's
      probabilities for a sentence of real text are within a hair of 0 or 1.
    """
    ident = _identifier(candidates)
    scores = dict(ident.rank(text))
    if len(text) > 2 * OPENING_CHARS:
        for lang, p in ident.rank(text[:OPENING_CHARS]):
            scores[lang] *= p
    for lang in scores:
        scores[lang] *= prior.get(lang, 1.0)
    total = sum(scores.values())
    if total <= 0.0:  # underflow in the product: fall back to the whole-text scores
        scores, total = dict(ident.rank(text)), 1.0
    return dict(sorted(((k, v / total) for k, v in scores.items()), key=lambda kv: -kv[1]))


def _clean(text: str) -> str:
    """Drop what carries no signal about the customer's language: e-mail-quoted lines
    ("> ..." history of the thread, often in the agent's language), placeholders, URLs."""
    text = text[:MAX_CHARS]
    unquoted = _QUOTED_LINE_RE.sub("", text)
    if _LETTER_RE.search(unquoted):  # a message that is *only* a quote keeps it
        text = unquoted
    return _NOISE_RE.sub(" ", text)


def detect_language(
    text: str,
    languages: Iterable[str] | None = None,
    *,
    prior: Mapping[str, float] | None = None,
) -> tuple[str, float]:
    """Return (ISO 639-1 code, confidence 0-1) for ``text``, chosen among ``languages``.

    Give subject and body together (``f"{subject}\\n{body}"``): the body carries most of the
    signal, but for a one-line ticket the subject is all there is. ``prior`` weighs languages
    by how common they are for this helpdesk (default :data:`DEFAULT_PRIOR`). Text without
    any letters gives ``("und", 0.0)``.

    >>> detect_language("Bitte setzen Sie mein Passwort zurück, danke.")[0]
    'de'
    """
    candidates = _candidates(languages)
    cleaned = _clean(text)
    if not _LETTER_RE.search(cleaned):
        return UNDETERMINED, 0.0
    if len(candidates) == 1:
        (only,) = candidates
        return only, 1.0
    lang, confidence = next(iter(_posterior(cleaned, candidates, prior or DEFAULT_PRIOR).items()))
    return lang, max(0.0, min(1.0, confidence))


def rank_languages(
    text: str,
    languages: Iterable[str] | None = None,
    *,
    prior: Mapping[str, float] | None = None,
    top: int = 3,
) -> list[tuple[str, float]]:
    """The ``top`` candidate languages with their normalised probabilities, best first."""
    cleaned = _clean(text)
    if not _LETTER_RE.search(cleaned):
        return []
    posterior = _posterior(cleaned, _candidates(languages), prior or DEFAULT_PRIOR)
    return list(posterior.items())[:top]


def _candidates(languages: Iterable[str] | None) -> frozenset[str]:
    candidates = frozenset(languages) if languages is not None else frozenset(DEFAULT_LANGUAGES)
    if not candidates:
        raise ValueError("language detection needs at least one candidate language")
    return candidates
