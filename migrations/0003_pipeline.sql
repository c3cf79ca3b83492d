-- The helpdesk pipeline: organizations, the ticket mirror fed by ingest, taxonomies, SLA
-- policies, suggestions with agent feedback, metrics snapshots, trained models, LLM usage.
-- Every table is keyed by organization_id first: every query is tenant-scoped.

CREATE TABLE organizations (
    id          uuid        PRIMARY KEY,
    name        text,
    settings    jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- e.g. {"pii_masking": "on"}
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tickets (
    organization_id   uuid        NOT NULL,
    ticket_id         text        NOT NULL,
    subject           text        NOT NULL DEFAULT '',
    body              text        NOT NULL DEFAULT '',
    status            text        NOT NULL DEFAULT 'open',
    priority          text,
    queue             text,
    ticket_type       text,
    language          text,
    tags              text[]      NOT NULL DEFAULT '{}',
    channel           text,
    labels            jsonb,       -- gold labels from a labelled import (training only)
    created_at        timestamptz NOT NULL,
    first_response_at timestamptz,
    resolved_at       timestamptz,
    last_customer_at  timestamptz,
    message_count     integer     NOT NULL DEFAULT 1,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, ticket_id),
    CONSTRAINT tickets_status_check CHECK (status IN ('open', 'pending', 'resolved'))
);
CREATE INDEX ix_tickets_org_created ON tickets (organization_id, created_at);
CREATE INDEX ix_tickets_org_resolved ON tickets (organization_id, resolved_at)
    WHERE resolved_at IS NOT NULL;
CREATE INDEX ix_tickets_updated ON tickets (updated_at);

-- One row per ingested event: replaying a file finds the key and enqueues nothing.
CREATE TABLE ticket_events (
    organization_id uuid        NOT NULL,
    event_key       text        NOT NULL,
    ticket_id       text        NOT NULL,
    event_type      text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    body            text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, event_key)
);
CREATE INDEX ix_ticket_events_ticket ON ticket_events (organization_id, ticket_id, occurred_at);

CREATE TABLE taxonomy_labels (
    organization_id uuid NOT NULL,
    field           text NOT NULL,   -- queue | type | priority | intent
    label           text NOT NULL,
    description     text NOT NULL DEFAULT '',
    PRIMARY KEY (organization_id, field, label),
    CONSTRAINT taxonomy_field_check CHECK (field IN ('queue', 'type', 'priority', 'intent'))
);

CREATE TABLE sla_policies (
    organization_id        uuid    NOT NULL,
    priority               text    NOT NULL,
    first_response_minutes integer NOT NULL CHECK (first_response_minutes > 0),
    resolution_minutes     integer NOT NULL CHECK (resolution_minutes > 0),
    PRIMARY KEY (organization_id, priority)
);

CREATE TABLE suggestions (
    id              uuid        PRIMARY KEY,
    organization_id uuid        NOT NULL,
    ticket_id       text        NOT NULL,
    kind            text        NOT NULL,   -- triage | kb | reply | sla
    job_id          uuid        NOT NULL,
    content         jsonb       NOT NULL,
    model           text,
    prompt_version  text,
    confidence      real,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    feedback        text,
    feedback_text   text,
    feedback_at     timestamptz,
    UNIQUE (organization_id, ticket_id, kind),
    CONSTRAINT suggestions_kind_check CHECK (kind IN ('triage', 'kb', 'reply', 'sla')),
    CONSTRAINT suggestions_feedback_check
        CHECK (feedback IS NULL OR feedback IN ('accepted', 'edited', 'rejected'))
);
CREATE INDEX ix_suggestions_org_updated ON suggestions (organization_id, updated_at);

-- Agents learn about new suggestions on this channel; a trigger so no writer can forget it.
-- Payload: {"organization_id", "ticket_id", "kind", "suggestion_id"} (well under 8000 bytes:
-- ticket ids are bounded at ingest).
CREATE FUNCTION atum_notify_suggestion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('atum_ai_suggestions', json_build_object(
        'organization_id', NEW.organization_id, 'ticket_id', NEW.ticket_id,
        'kind', NEW.kind, 'suggestion_id', NEW.id)::text);
    RETURN NEW;
END $$;
CREATE TRIGGER suggestions_notify AFTER INSERT OR UPDATE OF content ON suggestions
    FOR EACH ROW EXECUTE FUNCTION atum_notify_suggestion();

CREATE TABLE metrics_snapshots (
    organization_id uuid        NOT NULL,
    day             date        NOT NULL,
    metrics         jsonb       NOT NULL,
    computed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, day)
);

CREATE TABLE trained_models (
    organization_id uuid        NOT NULL,
    kind            text        NOT NULL,   -- triage | sla
    version         integer     NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    model           bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, kind, version)
);

CREATE TABLE llm_usage (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id   uuid        NOT NULL,
    job_id            uuid,
    job_type          text        NOT NULL,
    model             text        NOT NULL,
    prompt_tokens     integer     NOT NULL DEFAULT 0,
    completion_tokens integer     NOT NULL DEFAULT 0,
    cost_usd          numeric(14, 6) NOT NULL DEFAULT 0,
    latency_ms        real,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_llm_usage_org_created ON llm_usage (organization_id, created_at);
