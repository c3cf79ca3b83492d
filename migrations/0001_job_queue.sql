-- The job queue and its audit trail.
-- job_queue keeps the ATUM DESK schema exactly (names, types, defaults, the four indexes);
-- the columns after the blank line are additive and serve atum_ai's features.

CREATE TABLE job_queue (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid        NOT NULL,
    job_type        text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status          text        NOT NULL DEFAULT 'PENDING',
    locked_by       uuid,
    locked_at       timestamptz,
    run_after       timestamptz NOT NULL DEFAULT now(),
    retry_count     integer     NOT NULL DEFAULT 0,
    max_retries     integer     NOT NULL DEFAULT 5,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),

    -- additive columns
    priority         integer     NOT NULL DEFAULT 0,     -- higher runs first
    dedupe_key       text,                               -- unique per org+type while unfinished
    parent_id        uuid,                               -- the job whose completion enqueued this one
    timeout_seconds  real,                               -- per-job override of the type's timeout
    lease_seconds    real,                               -- lease length the claiming worker promised
    cancel_requested boolean     NOT NULL DEFAULT false, -- RUNNING job asked to stop
    result           jsonb,                              -- handler result, stored with DONE

    CONSTRAINT job_queue_status_check
        CHECK (status IN ('PENDING', 'RUNNING', 'DONE', 'FAILED', 'DEAD')),
    CONSTRAINT job_queue_retry_check CHECK (retry_count >= 0 AND max_retries >= 0),
    CONSTRAINT job_queue_job_type_check CHECK (char_length(job_type) BETWEEN 1 AND 64),
    CONSTRAINT job_queue_lock_check
        CHECK (status <> 'RUNNING' OR (locked_by IS NOT NULL AND locked_at IS NOT NULL))
);

-- The four ATUM DESK indexes.
CREATE INDEX ix_job_queue_status_run_after ON job_queue (status, run_after);
CREATE INDEX ix_job_queue_locked_at ON job_queue (locked_at);
CREATE INDEX ix_job_queue_organization_id ON job_queue (organization_id);
CREATE INDEX ix_job_queue_job_type ON job_queue (job_type);

-- Claim path: only runnable rows, grouped by tenant for the fair claim (see queue/sql/jobs.sql).
-- Small even when millions of DONE rows sit in the table.
CREATE INDEX ix_job_queue_claimable ON job_queue (organization_id, priority DESC, run_after)
    WHERE status IN ('PENDING', 'FAILED');
-- Lease recovery and heartbeats look only at RUNNING rows.
CREATE INDEX ix_job_queue_running ON job_queue (locked_by, locked_at) WHERE status = 'RUNNING';
-- Purge walks finished rows by age.
CREATE INDEX ix_job_queue_finished ON job_queue (updated_at) WHERE status IN ('DONE', 'DEAD');
-- Dedupe: one unfinished job per (organization, type, key).
CREATE UNIQUE INDEX ux_job_queue_dedupe ON job_queue (organization_id, job_type, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('PENDING', 'RUNNING', 'FAILED');
CREATE INDEX ix_job_queue_parent_id ON job_queue (parent_id) WHERE parent_id IS NOT NULL;

-- One row per transition, written in the same statement or transaction as the transition.
-- No foreign key: events must be cheap to write on the hot path; purge removes them with
-- their job.
CREATE TABLE job_events (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id          uuid        NOT NULL,
    organization_id uuid        NOT NULL,
    event_type      text        NOT NULL,
    from_status     text,
    to_status       text,
    worker_id       uuid,
    attempt         integer,
    message         text,
    data            jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_job_events_job_id ON job_events (job_id, id);
CREATE INDEX ix_job_events_organization_created ON job_events (organization_id, created_at);

-- Periodic jobs: one row per (schedule, fire time) so that many workers fire a slot once.
-- Separate from job_queue so the key survives purging of finished jobs.
CREATE TABLE job_schedule_fires (
    schedule_name text        NOT NULL,
    fire_time     timestamptz NOT NULL,
    fired_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_name, fire_time)
);
