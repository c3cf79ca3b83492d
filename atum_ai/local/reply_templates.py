"""Local reply drafts: a jinja2 template per language filled from the triage result and the
top article. Drafts only; nothing here sends anything.

Templates live in ``local/replies/<lang>.j2`` (en, de, es, fr, pt); other languages fall back
to English and say so, rather than pretend.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

REPLY_LANGUAGES = ("en", "de", "es", "fr", "pt")
_DIR = Path(__file__).resolve().parent / "replies"
_HIGHLIGHT = re.compile(r"\*\*")


@lru_cache(maxsize=1)
def _env() -> SandboxedEnvironment:
    return SandboxedEnvironment(loader=jinja2.FileSystemLoader(_DIR), undefined=jinja2.StrictUndefined,
                                autoescape=False, trim_blocks=True, lstrip_blocks=True)


def _excerpt(snippet: str | None, limit: int = 280) -> str:
    if not snippet:
        return ""
    text = " ".join(_HIGHLIGHT.sub("", snippet).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _summary(body: str | None, limit: int = 280) -> str:
    """The article's opening sentences, whole, up to ``limit`` characters: what an agent would
    quote as "in short". (The search snippet is a fragment cut around matched words, often
    from mid-sentence; it is the fallback when the body is missing.)"""
    text = " ".join((body or "").split())
    if not text:
        return ""
    out = ""
    for sentence in _SENTENCE_END.split(text):
        if out and len(out) + 1 + len(sentence) > limit:
            break
        out = f"{out} {sentence}".strip()
    return out if len(out) <= limit else out[: limit - 1].rstrip() + "…"


# "(in English)" and friends, for an article that is not in the draft's language.
_LANGUAGE_NAMES: dict[str, dict[str, str]] = {
    "en": {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "pt": "Portuguese"},
    "de": {"en": "Englisch", "de": "Deutsch", "fr": "Französisch", "es": "Spanisch", "pt": "Portugiesisch"},
    "fr": {"en": "anglais", "de": "allemand", "fr": "français", "es": "espagnol", "pt": "portugais"},
    "es": {"en": "inglés", "de": "alemán", "fr": "francés", "es": "español", "pt": "portugués"},
    "pt": {"en": "inglês", "de": "alemão", "fr": "francês", "es": "espanhol", "pt": "português"},
}
_IN_LANGUAGE = {"en": "in {}", "de": "auf {}", "fr": "en {}", "es": "en {}", "pt": "em {}"}


def foreign_note(draft_language: str, article_language: str | None) -> str:
    """Empty when the article is in the draft's language (or unknown); else e.g. "auf Englisch"."""
    if not article_language or article_language == draft_language:
        return ""
    name = _LANGUAGE_NAMES.get(draft_language, {}).get(article_language, article_language.upper())
    return _IN_LANGUAGE.get(draft_language, "in {}").format(name)


def render_reply(language: str | None, *, subject: str, article: dict[str, Any] | None,
                 urgent: bool = False, team: str | None = None) -> tuple[str, str]:
    """Return (draft, language used). ``team`` signs the draft; by default the template's own
    words for "the support team" in its language. An article in another language is named
    with its language and not quoted: a German draft should not paste English sentences."""
    lang = language if language in REPLY_LANGUAGES else "en"
    art = None
    if article:
        note = foreign_note(lang, article.get("language"))
        art = {"title": article.get("title", ""), "url": article.get("url"), "note": note,
               "excerpt": "" if note else (_summary(article.get("body")) or _excerpt(article.get("snippet")))}
    subject = " ".join((subject or "").split())[:160]
    text = _env().get_template(f"{lang}.j2").render(subject=subject, article=art, urgent=urgent, team=team)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n", lang
