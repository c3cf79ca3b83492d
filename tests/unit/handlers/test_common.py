"""Pure helpers of the built-in handlers: confidence bands, summaries, reply templates,
and the triage needs-review decision."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest

from atum_ai.clock import FrozenClock
from atum_ai.config import Settings
from atum_ai.handlers.base import HandlerContext
from atum_ai.handlers.common import band_for, scored
from atum_ai.handlers.smart_reply import ReplyResult
from atum_ai.handlers.triage import TriageHandler, summarize
from atum_ai.local.reply_templates import REPLY_LANGUAGES, render_reply
from atum_ai.pipeline.repository import TicketView


# ------------------------------------------------------------------------------ band_for
@pytest.mark.parametrize(
    ("confidence", "band"),
    [(1.0, "High"), (0.8, "High"), (0.79999, "Medium"), (0.5, "Medium"), (0.49999, "Low"), (0.0, "Low")],
)
def test_band_for_thresholds(confidence, band):
    assert band_for(confidence) == band


def test_scored_clamps_rounds_and_bands():
    assert scored("Billing", 1.7).model_dump() == {"label": "Billing", "confidence": 1.0, "band": "High"}
    assert scored("Billing", -0.2).model_dump() == {"label": "Billing", "confidence": 0.0, "band": "Low"}
    assert scored("Billing", 0.123456).confidence == 0.1235
    # The band agrees with the confidence that is stored and shown, also at a rounding edge.
    assert scored("x", 0.79996).model_dump() == {"label": "x", "confidence": 0.8, "band": "High"}
    for value in (0.49996, 0.5, 0.79994, 0.79996, 0.99999):
        s = scored("x", value)
        assert s.band == band_for(s.confidence), value


# ----------------------------------------------------------------------------- summarize
def test_summarize_subject_then_first_sentence():
    assert summarize("Printer broken", "It shows error 5. Then it stops.") == "Printer broken — It shows error 5."


def test_summarize_skips_a_first_sentence_the_subject_already_says():
    assert summarize("Refund please", "refund please") == "Refund please"
    assert summarize("Sync stuck", "") == "Sync stuck"


def test_summarize_without_subject_and_with_messy_whitespace():
    assert summarize("", "  Nothing\nsyncs   today!  Help.") == "Nothing syncs today!"
    assert summarize("  Two \n lines ", "Body here.") == "Two lines — Body here."


def test_summarize_is_bounded():
    text = summarize("Subject", "word " * 200, limit=50)
    assert len(text) == 50 and text.endswith("…") and text.startswith("Subject — word")


# ------------------------------------------------------------------------ reply templates
GREETING = {"en": "Hello,", "de": "Guten Tag,", "es": "Hola:", "fr": "Bonjour,", "pt": "Olá,"}
ARTICLE = {"article_id": "KB-01", "title": "Reset your password", "url": "https://help.example.com/kb-01",
           "snippet": "Click **Forgot password?** and   follow the link."}


@pytest.mark.parametrize("language", REPLY_LANGUAGES)
def test_reply_template_renders_in_every_language(language):
    draft, used = render_reply(language, subject="Locked   out", article=ARTICLE)
    assert used == language
    assert draft.startswith(GREETING[language])
    assert "Locked out" in draft  # subject quoted, whitespace collapsed
    assert "Reset your password" in draft and "https://help.example.com/kb-01" in draft
    assert "Click Forgot password? and follow the link." in draft  # highlight marks dropped
    assert "**" not in draft and "\n\n\n" not in draft and draft.endswith("\n")
    urgent, _ = render_reply(language, subject="Locked out", article=ARTICLE, urgent=True)
    assert urgent != draft and len(urgent) > len(draft)
    plain, _ = render_reply(language, subject="Locked out", article=None)
    assert plain.startswith(GREETING[language]) and "Reset your password" not in plain
    # Whatever the language, a template draft is a draft.
    assert ReplyResult(ticket_id="T", draft=draft, language=used, cited_article_ids=["KB-01"],
                       confidence=0.5, source="local").auto_send is False


@pytest.mark.parametrize("language", ["it", None, "und"])
def test_reply_template_falls_back_to_english_and_says_so(language):
    draft, used = render_reply(language, subject="Hi", article=None)
    assert used == "en" and draft.startswith("Hello,")


def test_reply_draft_can_never_be_marked_for_auto_send():
    with pytest.raises(ValueError):
        ReplyResult(ticket_id="T", draft="x", language="en", cited_article_ids=[], confidence=0.5,
                    source="local", auto_send=True)


# -------------------------------------------------------------------- triage needs_review
def _ctx(threshold: float = 0.55) -> HandlerContext:
    return HandlerContext(job_id=uuid.uuid4(), organization_id=uuid.uuid4(), job_type="TRIAGE_TICKET",
                          attempt=1, clock=FrozenClock(), logger=logging.LoggerAdapter(logging.getLogger("t")),
                          settings=Settings(review_threshold=threshold), repo=None,  # type: ignore[arg-type]
                          prompts=None)  # type: ignore[arg-type]


TICKET = TicketView(ticket_id="T-1", subject="Charged twice", body="Refund the duplicate. Thanks.",
                    status="open", priority=None, queue=None, ticket_type=None, language=None, tags=[],
                    channel=None, created_at=datetime(2026, 1, 1, tzinfo=UTC), first_response_at=None,
                    resolved_at=None, message_count=1)


def test_triage_needs_review_lists_every_reason():
    fields = {"queue": scored("Billing", 0.9), "type": scored("Incident", 0.3), "priority": None}
    result = TriageHandler()._assemble(_ctx(), TICKET, fields, "und", 0.2, "negative", -0.5, 0.9, [], "local")
    assert result.needs_review is True
    assert result.review_reasons == ["type: low confidence 0.30", "priority: no prediction",
                                     "language: undetermined"]
    assert result.summary == "Charged twice — Refund the duplicate."
    assert result.sentiment.band == "High" and result.language.band == "Low"


def test_triage_confident_result_needs_no_review():
    fields = {f: scored(label, 0.9) for f, label in (("queue", "Billing"), ("type", "Incident"),
                                                      ("priority", "high"))}
    result = TriageHandler()._assemble(_ctx(), TICKET, fields, "en", 0.99, "neutral", 0.0, 0.6, [], "llm",
                                       summary="Duplicate charge.")
    assert (result.needs_review, result.review_reasons, result.summary) == (False, [], "Duplicate charge.")
    assert result.intent is None and result.source == "llm"


SIGN_OFF = {"en": "The support team", "de": "Ihr Support-Team", "es": "El equipo de soporte",
            "fr": "L'équipe support", "pt": "A equipa de suporte"}


@pytest.mark.parametrize("language", REPLY_LANGUAGES)
def test_reply_quotes_the_articles_opening_sentences_and_signs_off_in_its_language(language):
    article = {**ARTICLE, "body": "Open the sign-in page and click Forgot password. We send a link "
                                  "that stays valid for one hour. " + "More detail follows. " * 30}
    draft, _ = render_reply(language, subject="", article=article)
    assert "Open the sign-in page and click Forgot password. We send a link that stays valid" in draft
    assert "More detail follows" in draft and len(draft) < 900
    assert draft.rstrip().endswith(SIGN_OFF[language])
    assert '""' not in draft and "«»" not in draft and "„“" not in draft and '"-"' not in draft
    signed, _ = render_reply(language, subject="x", article=None, team="Acme Care")
    assert signed.rstrip().endswith("Acme Care")


@pytest.mark.parametrize(("language", "note"), [("de", "(auf Englisch)"), ("fr", "(en anglais)"),
                                                ("es", "(en inglés)"), ("pt", "(em inglês)")])
def test_an_article_in_another_language_is_named_not_quoted(language, note):
    article = {**ARTICLE, "language": "en", "body": "Open the sign-in page and click Forgot password."}
    draft, used = render_reply(language, subject="x", article=article)
    assert used == language and note in draft and "Reset your password" in draft
    assert "Open the sign-in page" not in draft and "Forgot password" not in draft
    same, _ = render_reply("en", subject="x", article=article)
    assert "Open the sign-in page" in same and "(in " not in same
