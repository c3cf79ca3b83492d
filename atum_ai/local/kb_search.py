"""KB articles in PostgreSQL and their retrieval for KB_SUGGEST, with no LLM and no extension.

Storage (``migrations/0002_kb_articles.sql``): one row per tenant article with a generated,
weighted ``tsvector`` (title A, body B) built with the text-search configuration of the
article's language ('english', 'german', ... or 'simple' when the language is unknown or has
no stemmer in core PostgreSQL), a GIN index on it, and a small per-organization corpus row
(document count, average length, configurations in use) that the importer refreshes.

Retrieval (the ``kb_search`` block in ``sql/kb.sql``) runs entirely in PostgreSQL:

1. The query is analysed with every configuration the organization uses (or only the one of
   ``language``), so each language gets its own stemming and stopwords.
2. Candidates: articles matching ANY query lexeme (an OR tsquery over the GIN index); lexemes of
   at least ``min_prefix_len`` characters also match as prefixes ("strike" finds
   "strikethrough"). A plain AND query (websearch_to_tsquery) needs every word to occur and
   misses most paraphrases.
3. Ranking is BM25 with a title-weighted term frequency (BM25F-style)::

       tf(t, d)  = sum over lexemes x of d matching t:  m(t, x) * (title_weight * tf_title(x) + tf_body(x))
                   m = 1 for an exact match, prefix_weight for a prefix match
       idf(t)    = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
       bm25(d)   = sum over query lexemes t:  idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))
       score(d)  = bm25(d) * (1 + boost_weight * tanh(boost(d))) * (same_language_weight if d
                   is in the query's language else 1)

   N and avgdl come from ``kb_corpus_stats``; df(t) is counted over the candidates, which is
   exact because every article containing t is a candidate. ``boost`` is a per-article prior
   (default 0, e.g. raised when agents accept the suggestion): with the default boost_weight of
   0.25 it moves a score by at most 25 %, so it reorders close matches but never surfaces an
   article that matched nothing.
   Inside the top k, articles with a query term in their title come first, and each hit
   carries ``title_terms``: zero means it matched on body words only, usually an article
   about something else (see ``KbHit.title_terms``).
4. The snippet is ``ts_headline`` over the body with the same OR query (matches in ``**``).

Every function takes an ``AsyncConnection`` and works inside the caller's transaction (a
savepoint when one is open); nothing here commits on its own when a transaction is active.
"""

from __future__ import annotations

import functools
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from atum_ai.errors import ValidationError
from atum_ai.queue.queries import parse_sql_blocks

if TYPE_CHECKING:
    from psycopg import AsyncConnection

MAX_ARTICLE_ID_CHARS = 200
MAX_TITLE_CHARS = 1_000
MAX_BODY_CHARS = 200_000
MAX_URL_CHARS = 2_000
MAX_QUERY_CHARS = 4_000
MAX_K = 50
MAX_ABS_BOOST = 1_000.0

# ISO 639-1 -> text-search configuration shipped with core PostgreSQL 15 (snowball stemmers and
# stopword lists). Any other language is indexed with 'simple' (lower-casing only).
TS_CONFIG_BY_LANGUAGE: dict[str, str] = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "da": "danish",
    "nl": "dutch", "en": "english", "fi": "finnish", "fr": "french", "de": "german",
    "el": "greek", "hi": "hindi", "hu": "hungarian", "id": "indonesian", "ga": "irish",
    "it": "italian", "lt": "lithuanian", "ne": "nepali", "no": "norwegian", "nb": "norwegian",
    "nn": "norwegian", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sr": "serbian",
    "es": "spanish", "sv": "swedish", "ta": "tamil", "tr": "turkish", "yi": "yiddish",
}  # fmt: skip
FALLBACK_TS_CONFIG = "simple"
# Below this probability the detected language is not trusted and the article gets 'simple'.
MIN_DETECTION_PROBABILITY = 0.80

HEADLINE_OPTIONS = (
    'MaxFragments=2, MaxWords=30, MinWords=12, ShortWord=2, FragmentDelimiter=" … ", '
    "StartSel=**, StopSel=**"
)
HEADLINE_MAX_CHARS = 50_000


def _load_queries() -> dict[str, LiteralString]:
    text = resources.files("atum_ai.local").joinpath("sql", "kb.sql").read_text(encoding="utf-8")
    return parse_sql_blocks(text)


QUERIES: dict[str, LiteralString] = _load_queries()


# --------------------------------------------------------------------------- models


def _check_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("is not valid Unicode (lone surrogate)") from exc
    # One form for composed and decomposed input ("é" vs "e" + U+0301), so both match.
    return unicodedata.normalize("NFC", value)


class KbArticleIn(BaseModel):
    """One article as a tenant hands it in. ``language`` is ISO 639-1; detected when missing."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=MAX_ARTICLE_ID_CHARS)
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    body: str = Field(default="", max_length=MAX_BODY_CHARS)
    language: str | None = None
    url: str | None = Field(default=None, max_length=MAX_URL_CHARS)

    @field_validator("id", "title", "body", "url", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _check_text(value) if isinstance(value, str) else value

    @field_validator("language", mode="before")
    @classmethod
    def _language(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            # ValueError, not TypeError: pydantic turns only ValueError into a validation error.
            raise ValueError("must be an ISO 639-1 code such as 'en'")  # noqa: TRY004
        code = value.strip().lower().replace("_", "-").split("-", 1)[0]  # "pt-BR" -> "pt"
        if len(code) != 2 or not code.isascii() or not code.isalpha():
            raise ValueError(f"must be an ISO 639-1 code such as 'en', got {value!r}")
        return code


class KbHit(BaseModel):
    """One suggested article: what KB_SUGGEST returns per hit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    article_id: str
    title: str
    score: float
    snippet: str
    url: str | None = None
    language: str | None = None
    # Distinct query terms found in the article's title. Zero means the article matched on
    # body words only, usually an article about something else (first hits on the public dev
    # queries: 25 of 166 wrong, 2 of 433 right): replies do not cite such a weak match.
    title_terms: int = 0

    @property
    def title_match(self) -> bool:
        return self.title_terms > 0


@dataclass(frozen=True, slots=True)
class Bm25Params:
    """Ranking knobs (see the module docstring for the formula). Defaults are textbook BM25
    values plus a modest title weight; they were checked on the dev queries, not fitted to them."""

    k1: float = 1.2
    b: float = 0.75
    title_weight: float = 2.0
    prefix_weight: float = 0.5
    min_prefix_len: int = 4
    max_expansions: int = 20
    boost_weight: float = 0.25
    # Articles in the query's own language (when known) score this much more: where a KB has
    # an article in several languages, the customer's version should come first, and a
    # cross-language match (shared product words only) rarely beats a real one.
    same_language_weight: float = 1.5


DEFAULT_PARAMS = Bm25Params()


# --------------------------------------------------------------------------- language


@functools.cache
def _language_identifier() -> Any:
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text`` or None when unsure (short or mixed text)."""
    sample = text[:2000].strip()
    if len(sample) < 3:
        return None
    code, probability = _language_identifier().classify(sample)
    return str(code) if probability >= MIN_DETECTION_PROBABILITY else None


def ts_config_for(language: str | None) -> str:
    """Text-search configuration for an ISO 639-1 code; 'simple' when there is none."""
    return TS_CONFIG_BY_LANGUAGE.get((language or "").lower(), FALLBACK_TS_CONFIG)


# --------------------------------------------------------------------------- helpers


def _org(organization_id: uuid.UUID | str) -> uuid.UUID:
    try:
        return (
            organization_id
            if isinstance(organization_id, uuid.UUID)
            else uuid.UUID(str(organization_id))
        )
    except ValueError as exc:
        raise ValidationError("must be a UUID", field="organization_id") from exc


def _validate_articles(articles: Iterable[KbArticleIn | Mapping[str, Any]]) -> list[KbArticleIn]:
    out: list[KbArticleIn] = []
    for i, item in enumerate(articles):
        if isinstance(item, KbArticleIn):
            out.append(item)
            continue
        try:
            out.append(KbArticleIn.model_validate(item))
        except PydanticValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ValidationError(
                err["msg"], field=f"articles[{i}].{loc}" if loc else None
            ) from None
    return out


async def _refresh_corpus_stats(
    conn: AsyncConnection[Any], org: uuid.UUID, now: datetime | None
) -> None:
    await conn.execute(QUERIES["kb_corpus_stats_refresh"], {"organization_id": org, "now": now})


async def rebuild_stats(
    conn: AsyncConnection[Any], organization_id: uuid.UUID | str, *, now: datetime | None = None
) -> None:
    """Recount the organization's vocabulary and corpus statistics from its articles (repair
    after writes that bypassed this module; the importer keeps them current on its own)."""
    org = _org(organization_id)
    async with conn.transaction():
        await conn.execute(QUERIES["kb_lock_organization"], {"organization_id": org})
        await conn.execute(QUERIES["kb_lexeme_stats_clear"], {"organization_id": org})
        await conn.execute(QUERIES["kb_lexeme_stats_rebuild"], {"organization_id": org})
        await _refresh_corpus_stats(conn, org, now)


# --------------------------------------------------------------------------- writes


async def import_articles(
    conn: AsyncConnection[Any],
    organization_id: uuid.UUID | str,
    articles: Iterable[KbArticleIn | Mapping[str, Any]],
    *,
    now: datetime | None = None,
) -> int:
    """Upsert articles (keyed by the tenant's id) and refresh the corpus statistics.

    All articles are validated before anything is written, so one bad article writes nothing
    (:class:`~atum_ai.errors.ValidationError` names it, e.g. ``articles[3].body``). Returns how
    many articles were inserted or changed; identical re-imports write nothing.
    """
    org = _org(organization_id)
    valid = _validate_articles(articles)
    rows = []
    for art in valid:
        language = art.language or detect_language(f"{art.title}\n{art.body}")
        rows.append(
            {
                "organization_id": org,
                "article_id": art.id,
                "title": art.title,
                "body": art.body,
                "language": language,
                "url": art.url,
                "ts_config": ts_config_for(language),
                "now": now,
            }
        )
    written = 0
    try:
        async with conn.transaction():
            await conn.execute(QUERIES["kb_lock_organization"], {"organization_id": org})
            if rows:
                ids = {
                    "organization_id": org,
                    "article_ids": sorted({r["article_id"] for r in rows}),
                }
                await conn.execute(QUERIES["kb_lexeme_stats_subtract"], ids)
                async with conn.cursor() as cur:
                    await cur.executemany(QUERIES["kb_article_upsert"], rows, returning=True)
                    while True:
                        written += len(await cur.fetchall())
                        if not cur.nextset():
                            break
                await conn.execute(QUERIES["kb_lexeme_stats_add"], ids)
                await conn.execute(QUERIES["kb_lexeme_stats_prune"], {"organization_id": org})
            await _refresh_corpus_stats(conn, org, now)
    except psycopg.errors.ProgramLimitExceeded as exc:  # e.g. tsvector over 1 MB
        raise ValidationError(f"article too large to index: {exc.diag.message_primary}") from None
    return written


async def delete_articles(
    conn: AsyncConnection[Any],
    organization_id: uuid.UUID | str,
    article_ids: Sequence[str],
    *,
    now: datetime | None = None,
) -> int:
    """Delete articles by the tenant's ids; returns how many existed."""
    org = _org(organization_id)
    async with conn.transaction():
        await conn.execute(QUERIES["kb_lock_organization"], {"organization_id": org})
        ids = {"organization_id": org, "article_ids": list(article_ids)}
        await conn.execute(QUERIES["kb_lexeme_stats_subtract"], ids)
        cur = await conn.execute(QUERIES["kb_articles_delete"], ids)
        deleted = len(await cur.fetchall())
        await conn.execute(QUERIES["kb_lexeme_stats_prune"], {"organization_id": org})
        await _refresh_corpus_stats(conn, org, now)
    return deleted


async def set_article_boost(
    conn: AsyncConnection[Any], organization_id: uuid.UUID | str, article_id: str, boost: float
) -> float | None:
    """Set an article's ranking prior (0 = neutral). Returns it, or None if no such article."""
    if not -MAX_ABS_BOOST <= boost <= MAX_ABS_BOOST:  # also refuses NaN
        raise ValidationError(f"must be within +/-{MAX_ABS_BOOST:g}", field="boost")
    cur = await conn.execute(
        QUERIES["kb_article_boost_set"],
        {"organization_id": _org(organization_id), "article_id": article_id, "boost": boost},
    )
    row = await cur.fetchone()
    return None if row is None else float(_first(row))


async def add_article_boost(
    conn: AsyncConnection[Any], organization_id: uuid.UUID | str, article_id: str, delta: float
) -> float | None:
    """Nudge an article's prior, e.g. +1 when an agent accepts it and -1 when one rejects it."""
    if not -MAX_ABS_BOOST <= delta <= MAX_ABS_BOOST:
        raise ValidationError(f"must be within +/-{MAX_ABS_BOOST:g}", field="delta")
    cur = await conn.execute(
        QUERIES["kb_article_boost_add"],
        {"organization_id": _org(organization_id), "article_id": article_id, "delta": delta},
    )
    row = await cur.fetchone()
    return None if row is None else float(_first(row))


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, Mapping) else row[0]


def _get(row: Any, name: str, index: int) -> Any:
    return row[name] if isinstance(row, Mapping) else row[index]


# --------------------------------------------------------------------------- search


def _query_config(language: str | None) -> str | None:
    """The text-search configuration whose stopwords the query should lose; None for a
    language without one ('simple' has no stopwords, and must not earn the language bonus)."""
    cfg = ts_config_for(language)
    return None if cfg == FALLBACK_TS_CONFIG else cfg


async def search_articles(
    conn: AsyncConnection[Any],
    organization_id: uuid.UUID | str,
    query_text: str,
    k: int = 5,
    language: str | None = None,
    *,
    query_language: str | None = None,
    params: Bm25Params = DEFAULT_PARAMS,
) -> list[KbHit]:
    """The organization's ``k`` best articles for ``query_text``, best first.

    ``language`` (ISO 639-1) restricts the search to articles in that language and analyses the
    query with that language's stemmer; None searches every article, analysing the query once
    per configuration the organization uses. ``query_language`` is the language the query is
    written in (the ticket's): its stopwords are dropped before the query meets articles in
    other languages. Works with any row factory.
    """
    org = _org(organization_id)
    if not 1 <= k <= MAX_K:
        raise ValidationError(f"must be between 1 and {MAX_K}", field="k")
    query = (
        unicodedata.normalize("NFC", query_text.replace("\x00", " ")[:MAX_QUERY_CHARS])
        .encode("utf-8", "replace")
        .decode("utf-8")
    )
    if not query.strip():
        return []
    lang = None
    if language:
        try:
            lang = KbArticleIn.model_validate(
                {"id": "q", "title": "q", "language": language}
            ).language
        except PydanticValidationError as exc:
            raise ValidationError(exc.errors()[0]["msg"], field="language") from None
    cur = await conn.execute(
        QUERIES["kb_search"],
        {
            "organization_id": org,
            "query": query,
            "language": lang,
            "ts_config": ts_config_for(lang) if lang else None,
            "query_config": _query_config(query_language or lang),
            "k": k,
            "headline_options": HEADLINE_OPTIONS,
            "headline_max_chars": HEADLINE_MAX_CHARS,
            **asdict(params),
        },
    )
    rows = await cur.fetchall()
    return [
        KbHit(
            article_id=_get(r, "article_id", 0),
            title=_get(r, "title", 1),
            url=_get(r, "url", 2),
            language=_get(r, "language", 3),
            score=float(_get(r, "score", 4)),
            snippet=_get(r, "snippet", 5),
            title_terms=int(_get(r, "title_terms", 6)),
        )
        for r in rows
    ]
