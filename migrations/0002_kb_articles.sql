-- KB articles for KB_SUGGEST's local retrieval: full-text search in PostgreSQL, ranked BM25-style.
--
-- Tenant-scoped throughout: every table leads with organization_id and every query filters on it.
-- Only core PostgreSQL 15 (no extensions). The migration runner wraps this file in its transaction.
--
-- kb_articles          one row per tenant article; search_vector is generated from title (weight A)
--                      and body (weight B) with the article's own text-search configuration.
-- kb_lexeme_stats      per-organization vocabulary with document frequencies (prefix expansion).
-- kb_corpus_stats      per-organization document count, average document length and the set of
--                      text-search configurations in use (how a query is analysed).
-- The two stats tables are maintained by the importer (atum_ai.local.kb_search) in the same
-- transaction as the article writes, under a per-organization advisory lock.

-- Number of tokens (positions) in a tsvector: BM25's document length. IMMUTABLE so it can feed a
-- generated column. A lexeme keeps at most 256 positions, so very repetitive text is undercounted,
-- which is harmless for length normalisation.
CREATE FUNCTION kb_tsvector_token_count(v tsvector) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (SELECT coalesce(sum(cardinality(u.positions)), 0)::integer FROM unnest(v) AS u);

CREATE TABLE kb_articles (
    organization_id uuid        NOT NULL,
    article_id      text        NOT NULL,           -- the tenant's own id
    title           text        NOT NULL,
    body            text        NOT NULL,
    language        text,                           -- ISO 639-1 (given or detected); NULL = unknown
    url             text,
    ts_config       regconfig   NOT NULL DEFAULT 'simple',  -- chosen from language; 'simple' fallback
    search_vector   tsvector    GENERATED ALWAYS AS (
                        setweight(to_tsvector(ts_config, title), 'A')
                        || setweight(to_tsvector(ts_config, body), 'B')) STORED,
    doc_length      integer     GENERATED ALWAYS AS (
                        kb_tsvector_token_count(to_tsvector(ts_config, title))
                        + kb_tsvector_token_count(to_tsvector(ts_config, body))) STORED,
    -- Ranking prior, e.g. from agent feedback (accepted suggestions). 0 = neutral. The final score
    -- is bm25 * (1 + 0.25 * tanh(boost)): at most +/-25 %, it reorders close matches but cannot
    -- surface an article that matched nothing.
    boost           real        NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, article_id),
    CONSTRAINT kb_articles_article_id_len CHECK (length(article_id) BETWEEN 1 AND 200),
    CONSTRAINT kb_articles_title_len CHECK (length(title) <= 1000),
    CONSTRAINT kb_articles_body_len CHECK (length(body) <= 200000),
    CONSTRAINT kb_articles_language_iso CHECK (language IS NULL OR language ~ '^[a-z]{2}$'),
    CONSTRAINT kb_articles_url_len CHECK (url IS NULL OR length(url) <= 2000),
    CONSTRAINT kb_articles_boost_finite CHECK (boost BETWEEN -1000 AND 1000)
);

-- Candidate generation: OR-ed lexemes (with prefix matching) over this index. The organization
-- filter is applied on the heap rows; a GIN on (organization_id, search_vector) would need btree_gin.
CREATE INDEX ix_kb_articles_search_vector ON kb_articles USING gin (search_vector);

-- The organization's vocabulary: which lexemes its articles contain and in how many. Query
-- lexemes are expanded through it by prefix ("strike" -> "strikethrough"); C collation lets the
-- primary key serve those prefix range scans. Maintained incrementally by the importer.
CREATE TABLE kb_lexeme_stats (
    organization_id uuid    NOT NULL,
    lexeme          text    COLLATE "C" NOT NULL,
    doc_freq        integer NOT NULL CHECK (doc_freq >= 0),
    PRIMARY KEY (organization_id, lexeme)
);

CREATE TABLE kb_corpus_stats (
    organization_id uuid        PRIMARY KEY,
    doc_count       integer     NOT NULL,
    avg_doc_length  real        NOT NULL,
    ts_configs      regconfig[] NOT NULL,   -- configurations in use: a query is analysed with each
    refreshed_at    timestamptz NOT NULL DEFAULT now()
);
