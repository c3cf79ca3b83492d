"""KB import and retrieval on a real PostgreSQL (the ``db`` fixture: all migrations applied).

The KB below is invented for these tests.
"""

from __future__ import annotations

import unicodedata
import uuid
from typing import Any

import pytest

from atum_ai.errors import ValidationError
from atum_ai.local.kb_search import (
    MAX_BODY_CHARS,
    KbArticleIn,
    add_article_boost,
    delete_articles,
    import_articles,
    rebuild_stats,
    search_articles,
    set_article_boost,
)

KB: list[dict[str, Any]] = [
    {
        "id": "pw-reset",
        "title": "Resetting a forgotten password",
        "body": "If you cannot sign in because you forgot your password, open the login page and "
        "click 'Forgot password'. We e-mail you a reset link that stays valid for one hour. "
        "Choose a new password with at least twelve characters.",
        "language": "en",
        "url": "https://help.example.test/pw-reset",
    },
    {
        "id": "invoice-address",
        "title": "Changing the billing address on invoices",
        "body": "Administrators can edit the company name, VAT number and postal address that "
        "appear on invoices under Settings > Billing. Changes apply to the next invoice.",
        "language": "en",
    },
    {
        "id": "export-csv",
        "title": "Exporting tickets to a spreadsheet",
        "body": "Use Reports > Export to download all tickets of a date range as a CSV file. "
        "The export includes status, priority, assignee and timestamps.",
        "language": "en",
    },
    {
        "id": "two-factor",
        "title": "Turning on two-factor authentication",
        "body": "Protect your account with an authenticator app. Scan the QR code under Profile "
        "> Security, then enter the six-digit code. Keep the recovery codes somewhere safe.",
        "language": "en",
    },
    {
        "id": "printer-offline",
        "title": "Label printer shows offline",
        "body": "When the label printer reports offline, check the USB cable, restart the print "
        "spooler service and make sure the printer driver is up to date.",
        "language": "en",
    },
    {
        "id": "cancel-plan",
        "title": "Cancelling your subscription",
        "body": "You can cancel the plan at any time from Settings > Subscription. Your data stays "
        "available until the end of the paid period; after that the workspace is deleted.",
        "language": "en",
    },
    {
        "id": "ueberweisung",
        "title": "Überweisung fehlgeschlagen",
        "body": "Wenn eine Überweisung fehlschlägt, prüfen Sie die IBAN und die Bankleitzahl. "
        "Rücküberweisungen dauern bis zu drei Werktage. Die Straße der Rechnungsadresse "
        "muss mit dem Bankkonto übereinstimmen.",
        "language": "de",
    },
    {
        "id": "contrasena",
        "title": "Cambiar la contraseña",
        "body": "Para cambiar la contraseña, abra su perfil y pulse «Seguridad». Recibirá un "
        "correo electrónico de confirmación.",
        "language": "es",
    },
]


def ids(hits: list[Any]) -> list[str]:
    return [h.article_id for h in hits]


@pytest.fixture
def org_id() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
async def kb(db: Any, org_id: uuid.UUID) -> uuid.UUID:
    assert await import_articles(db, org_id, KB) == len(KB)
    await db.commit()
    return org_id


async def test_paraphrased_query_finds_article_in_top3(db: Any, kb: uuid.UUID) -> None:
    hits = await search_articles(
        db, kb, "I can't log in, forgot my password - how do I get a new one?"
    )
    assert "pw-reset" in ids(hits)[:3]
    assert ids(hits)[0] == "pw-reset"
    top = hits[0]
    assert top.title == "Resetting a forgotten password"
    assert top.url == "https://help.example.test/pw-reset"
    assert top.score > 0
    assert "**" in top.snippet  # the matched words are marked
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_or_query_recalls_what_an_and_query_misses(db: Any, kb: uuid.UUID) -> None:
    query = "spreadsheet download of our tickets for the accountant"  # "accountant" is nowhere
    cur = await db.execute(
        "SELECT count(*) AS n FROM kb_articles WHERE organization_id = %s"
        " AND search_vector @@ websearch_to_tsquery('english', %s)",
        (kb, query),
    )
    assert (await cur.fetchone())["n"] == 0
    assert ids(await search_articles(db, kb, query, k=3))[0] == "export-csv"


async def test_prefix_matches_longer_words(db: Any, kb: uuid.UUID) -> None:
    # "spool" is a prefix of the lexeme "spooler" (which the stemmer leaves alone).
    assert ids(await search_articles(db, kb, "spool", k=1)) == ["printer-offline"]


async def test_tenant_isolation(db: Any, kb: uuid.UUID) -> None:
    other = uuid.uuid4()
    # Same article id, same words: org B must only ever see its own copy.
    await import_articles(
        db,
        other,
        [
            {
                "id": "pw-reset",
                "title": "Resetting a forgotten password",
                "body": "Org B: ask your team lead to reset the password.",
                "language": "en",
            }
        ],
    )
    await db.commit()
    hits_b = await search_articles(db, other, "forgot password reset")
    assert ids(hits_b) == ["pw-reset"]
    assert "Org B" in hits_b[0].snippet or "team lead" in hits_b[0].snippet
    hits_a = await search_articles(db, kb, "ask your team lead")
    assert all("team lead" not in h.snippet for h in hits_a)
    assert await search_articles(db, uuid.uuid4(), "forgot password reset") == []
    cur = await db.execute(
        "SELECT organization_id, doc_count FROM kb_corpus_stats ORDER BY doc_count"
    )
    assert {r["organization_id"]: r["doc_count"] for r in await cur.fetchall()} == {
        other: 1,
        kb: len(KB),
    }
    # Deleting in B leaves A alone.
    assert await delete_articles(db, other, ["pw-reset"]) == 1
    await db.commit()
    assert await search_articles(db, other, "forgot password reset") == []
    assert ids(await search_articles(db, kb, "forgot password reset"))[0] == "pw-reset"


async def test_upsert_updates_and_keeps_stats_consistent(db: Any, kb: uuid.UUID) -> None:
    # Identical re-import writes nothing.
    assert await import_articles(db, kb, KB) == 0
    changed = dict(
        KB[4],
        title="Receipt printer shows offline",
        body="Power-cycle the receipt printer and reinstall its driver.",
    )
    assert await import_articles(db, kb, [changed]) == 1
    await db.commit()
    assert ids(await search_articles(db, kb, "receipt printer power-cycle", k=1)) == [
        "printer-offline"
    ]
    assert "printer-offline" not in ids(await search_articles(db, kb, "USB cable spooler"))

    cur = await db.execute(
        "SELECT lexeme, doc_freq FROM kb_lexeme_stats WHERE organization_id = %s ORDER BY 1", (kb,)
    )
    incremental = await cur.fetchall()
    await rebuild_stats(db, kb)
    cur = await db.execute(
        "SELECT lexeme, doc_freq FROM kb_lexeme_stats WHERE organization_id = %s ORDER BY 1", (kb,)
    )
    assert await cur.fetchall() == incremental
    assert not any(r["lexeme"] == "spooler" for r in incremental)


@pytest.mark.parametrize(
    ("article", "field"),
    [
        ({"id": "a", "title": "Bad\x00title", "body": "x"}, "articles[1].title"),
        ({"id": "a", "title": "t", "body": "nul \x00 inside"}, "articles[1].body"),
        ({"id": "a", "title": "t", "body": "x" * (MAX_BODY_CHARS + 1)}, "articles[1].body"),
        ({"id": "a" * 201, "title": "t"}, "articles[1].id"),
        ({"id": "a", "title": "   "}, "articles[1].title"),
        ({"id": "a", "title": "t", "language": "english"}, "articles[1].language"),
        ({"id": "a", "title": "t", "surprise": 1}, "articles[1].surprise"),
    ],
)
async def test_bad_input_is_rejected_and_nothing_written(
    db: Any, org_id: uuid.UUID, article: dict[str, Any], field: str
) -> None:
    good = {"id": "good", "title": "A valid article", "body": "fine"}
    with pytest.raises(ValidationError) as err:
        await import_articles(db, org_id, [good, article])
    assert err.value.field == field
    cur = await db.execute(
        "SELECT count(*) AS n FROM kb_articles WHERE organization_id = %s", (org_id,)
    )
    assert (await cur.fetchone())["n"] == 0


async def test_search_input_is_sanitised(db: Any, kb: uuid.UUID) -> None:
    assert ids(await search_articles(db, kb, "forgot\x00 password"))[0] == "pw-reset"
    assert await search_articles(db, kb, "   ") == []
    assert await search_articles(db, kb, "the and of") == []  # only stopwords
    assert await search_articles(db, kb, "x" * 100_000) == []  # bounded, no error
    with pytest.raises(ValidationError):
        await search_articles(db, kb, "password", k=0)
    with pytest.raises(ValidationError):
        await search_articles(db, kb, "password", language="not a language")


async def test_unicode_and_accents(db: Any, kb: uuid.UUID) -> None:
    hits = await search_articles(db, kb, "Meine Überweisung ist fehlgeschlagen", language="de")
    assert ids(hits)[0] == "ueberweisung"
    assert "Überweisung" in hits[0].snippet
    # German stemming: "Überweisungen" finds "Überweisung"; ß survives.
    assert ids(await search_articles(db, kb, "Überweisungen Straße", k=1)) == ["ueberweisung"]
    # A decomposed query (e + combining accent, as some keyboards send it) matches too.
    decomposed = unicodedata.normalize("NFD", "contraseña")
    assert decomposed != "contraseña"
    assert ids(await search_articles(db, kb, decomposed, k=1)) == ["contrasena"]
    # Quotes and backslashes in words are safe in the generated tsquery.
    await import_articles(
        db,
        kb,
        [
            {
                "id": "odd",
                "title": "O'Reilly's C:\\temp\\ path",
                "body": "It's a back\\slash test.",
                "language": "en",
            }
        ],
    )
    assert "odd" in ids(await search_articles(db, kb, "O'Reilly back\\slash C:\\temp\\"))


async def test_language_filter_and_per_language_analysis(db: Any, kb: uuid.UUID) -> None:
    hits = await search_articles(db, kb, "contraseña", language="es")
    assert ids(hits) == ["contrasena"]
    assert await search_articles(db, kb, "contraseña", language="de") == []
    # pt-BR style tags are reduced to ISO 639-1.
    assert await search_articles(db, kb, "password", language="EN-us")


async def test_language_detection_and_simple_fallback(db: Any, org_id: uuid.UUID) -> None:
    articles = [
        KbArticleIn(
            id="de",
            title="Drucker druckt nicht",
            body="Wenn der Drucker nicht druckt, starten Sie ihn bitte neu und prüfen "
            "Sie das Papierfach und die Verbindung zum Netzwerk.",
        ),
        KbArticleIn(
            id="ja",
            title="パスワードの再設定",
            body="ログイン画面でリンクを押してください。",
            language="ja",
        ),
        KbArticleIn(id="short", title="zx9 qq7"),
    ]
    assert await import_articles(db, org_id, articles) == 3
    cur = await db.execute(
        "SELECT article_id, language, ts_config::text AS cfg FROM kb_articles"
        " WHERE organization_id = %s ORDER BY article_id",
        (org_id,),
    )
    rows = {r["article_id"]: (r["language"], r["cfg"]) for r in await cur.fetchall()}
    assert rows["de"] == ("de", "german")
    assert rows["ja"] == ("ja", "simple")  # no stemmer for Japanese in core PostgreSQL
    assert rows["short"][1] == "simple"
    assert ids(await search_articles(db, org_id, "zx9", k=1)) == ["short"]
    assert ids(await search_articles(db, org_id, "Drucker druckt", k=1)) == ["de"]


async def test_boost_nudges_ranking(db: Any, org_id: uuid.UUID) -> None:
    twins = [
        {
            "id": "vpn-a",
            "title": "VPN connection drops",
            "body": "Reconnect the VPN client.",
            "language": "en",
        },
        {
            "id": "vpn-b",
            "title": "VPN connection drops",
            "body": "Reconnect the VPN client.",
            "language": "en",
        },
        {"id": "other", "title": "Mailbox full", "body": "Archive old mail.", "language": "en"},
    ]
    await import_articles(db, org_id, twins)
    assert ids(await search_articles(db, org_id, "vpn drops", k=2)) == ["vpn-a", "vpn-b"]
    assert await add_article_boost(db, org_id, "vpn-b", 1.0) == 1.0
    hits = await search_articles(db, org_id, "vpn drops", k=3)
    assert ids(hits) == ["vpn-b", "vpn-a"]  # an unmatched article is never surfaced
    assert hits[0].score == pytest.approx(hits[1].score * (1 + 0.25 * 0.7615941559557649))
    assert await set_article_boost(db, org_id, "vpn-b", 0) == 0.0
    assert await set_article_boost(db, org_id, "missing", 1) is None
    with pytest.raises(ValidationError):
        await set_article_boost(db, org_id, "vpn-a", float("nan"))


async def test_same_id_twice_in_one_batch_keeps_the_last(db: Any, org_id: uuid.UUID) -> None:
    first = {"id": "dup", "title": "Old heading", "body": "obsolete words", "language": "en"}
    last = {"id": "dup", "title": "New heading", "body": "current words", "language": "en"}
    await import_articles(db, org_id, [first, last])
    await delete_articles(db, org_id, ["nothing-here"])
    assert await search_articles(db, org_id, "obsolete") == []
    assert ids(await search_articles(db, org_id, "current")) == ["dup"]
    cur = await db.execute(
        "SELECT lexeme, doc_freq FROM kb_lexeme_stats WHERE organization_id = %s ORDER BY 1",
        (org_id,),
    )
    assert [(r["lexeme"], r["doc_freq"]) for r in await cur.fetchall()] == [
        ("current", 1),
        ("head", 1),
        ("new", 1),
        ("word", 1),
    ]


async def test_stopwords_of_the_query_language_do_not_match_other_languages(db: Any) -> None:
    """German "die" (the) is an English word: without the query's language, a German billing
    ticket matched an English article about dying users on it alone."""
    org = uuid.uuid4()
    await import_articles(db, org, [
        {"id": "died", "title": "What happens to your account when you die?",
         "body": "When a user dies, relatives can ask us to memorialise or close the account.",
         "language": "en"},
        {"id": "invoice", "title": "Invoices and billing", "body": "Download every invoice as PDF.",
         "language": "en"},
    ])
    await db.commit()
    ticket = "Die Rechnung ist falsch. Die Abbuchung war doppelt, die Summe stimmt nicht."
    assert ids(await search_articles(db, org, ticket, k=2)) == ["died"]  # the failure, shown
    assert await search_articles(db, org, ticket, k=2, query_language="de") == []
    # English queries keep their meaning: only English stopwords go.
    assert ids(await search_articles(db, org, "the user died", k=1, query_language="en")) == ["died"]
    assert ids(await search_articles(db, org, "Rechnung invoice", k=1, query_language="de")) == ["invoice"]


async def test_title_matches_come_first_and_body_only_matches_are_flagged(db: Any, org_id: uuid.UUID) -> None:
    """An article that mentions the query's words many times in its body but never in its
    title scores higher by BM25, yet is usually about something else: inside the top k the
    title match comes first, and the other carries title_terms == 0 (a weak match)."""
    await import_articles(db, org_id, [
        {"id": "passwords", "title": "Reset your password",
         "body": "Missing invoice? Invoice e-mails, invoice reminders and invoice copies go to"
                 " the billing contact; a missing password reset e-mail is a different matter:"
                 " missing e-mails are often in spam.", "language": "en"},
        {"id": "invoices", "title": "Download an invoice", "body": "Open Billing, then Documents.",
         "language": "en"},
    ])
    raw = {h.article_id: h for h in await search_articles(db, org_id, "missing invoice", k=2)}
    assert raw["passwords"].score > raw["invoices"].score  # BM25 alone would put it first
    hits = await search_articles(db, org_id, "missing invoice", k=2)
    assert ids(hits) == ["invoices", "passwords"]
    assert (hits[0].title_terms, hits[0].title_match) == (1, True)
    assert (hits[1].title_terms, hits[1].title_match) == (0, False)
