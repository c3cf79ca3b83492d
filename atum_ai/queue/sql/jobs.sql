-- Named queries of the job queue. Each block is headed `-- name: <noun_verb>` followed by one
-- description line. Parameters are psycopg %(name)s placeholders; time always comes in as
-- %(now)s from the injected clock. Every transition writes its job_events row in the same
-- statement (a data-modifying CTE), so no code path can skip the audit.

-- name: job_insert
-- Insert one job and its ENQUEUED event; a live job with the same dedupe key wins (no row back).
WITH ins AS (
    INSERT INTO job_queue (id, organization_id, job_type, payload, run_after, priority, dedupe_key,
                           max_retries, timeout_seconds, parent_id, created_at, updated_at)
    VALUES (%(id)s, %(organization_id)s, %(job_type)s, %(payload)s::jsonb,
            coalesce(%(run_after)s, %(now)s), %(priority)s, %(dedupe_key)s,
            coalesce(%(max_retries)s, 5), %(timeout_seconds)s, %(parent_id)s, %(now)s, %(now)s)
    ON CONFLICT (organization_id, job_type, dedupe_key)
        WHERE dedupe_key IS NOT NULL AND status IN ('PENDING', 'RUNNING', 'FAILED')
        DO NOTHING
    RETURNING id, organization_id, status
), ev AS (
    INSERT INTO job_events (job_id, organization_id, event_type, to_status, attempt, created_at)
    SELECT id, organization_id, 'ENQUEUED', status, 0, %(now)s FROM ins
)
SELECT ins.id, pg_notify('atum_ai_jobs', %(job_type)s) AS notified FROM ins;

-- name: job_find_live_duplicate
-- The unfinished job holding a dedupe key, if any.
SELECT id FROM job_queue
 WHERE organization_id = %(organization_id)s AND job_type = %(job_type)s
   AND dedupe_key = %(dedupe_key)s AND status IN ('PENDING', 'RUNNING', 'FAILED');

-- name: job_staging_create
-- A transaction-local staging table for bulk enqueue through COPY.
CREATE TEMP TABLE IF NOT EXISTS atum_enqueue_staging (
    ord bigint, id uuid, organization_id uuid, job_type text, payload jsonb, run_after timestamptz,
    priority integer, dedupe_key text, max_retries integer, timeout_seconds real, parent_id uuid
) ON COMMIT DELETE ROWS;

-- name: job_insert_from_staging
-- Move staged rows into job_queue (skipping live dedupe duplicates) and write ENQUEUED events.
WITH ins AS (
    INSERT INTO job_queue (id, organization_id, job_type, payload, run_after, priority, dedupe_key,
                           max_retries, timeout_seconds, parent_id, created_at, updated_at)
    SELECT id, organization_id, job_type, payload, coalesce(run_after, %(now)s), priority,
           dedupe_key, coalesce(max_retries, 5), timeout_seconds, parent_id, %(now)s, %(now)s
      FROM atum_enqueue_staging ORDER BY ord
    ON CONFLICT (organization_id, job_type, dedupe_key)
        WHERE dedupe_key IS NOT NULL AND status IN ('PENDING', 'RUNNING', 'FAILED')
        DO NOTHING
    RETURNING id, organization_id, job_type
), ev AS (
    INSERT INTO job_events (job_id, organization_id, event_type, to_status, attempt, created_at)
    SELECT id, organization_id, 'ENQUEUED', 'PENDING', 0, %(now)s FROM ins
)
SELECT id FROM ins;

-- name: job_events_enqueued_copy_binary
-- COPY target for the ENQUEUED events of a bulk enqueue without dedupe keys.
COPY job_events (job_id, organization_id, event_type, to_status, attempt, created_at)
    FROM STDIN (FORMAT BINARY);

-- name: job_queue_copy_binary
-- COPY target for a bulk enqueue without dedupe keys (the fastest path).
COPY job_queue (id, organization_id, job_type, payload, run_after, priority, max_retries,
                timeout_seconds, parent_id, created_at, updated_at) FROM STDIN (FORMAT BINARY);

-- name: job_notify
-- Wake idle workers; PostgreSQL folds identical notifications of one transaction into one.
SELECT pg_notify('atum_ai_jobs', %(job_type)s);

-- name: job_claim
-- Claim up to %(limit)s runnable jobs for one worker, fairly across organizations.
-- Fairness is a round robin over the organizations with runnable work, in organization-id
-- order from %(start)s, wrapping around: a loose index scan lists up to max(32, 4 * limit)
-- of them (the window), each contributes its k most urgent jobs (by priority, then
-- run_after; k = ceil(4 * limit / organizations), at most limit), and the candidates are
-- taken round by round (every organization's 1st job, then every 2nd ...), by priority and
-- then by place in the window inside a round. The store starts the next claim's window just
-- after the last organization this one served (JobStore._window_start), so one worker's
-- claims visit every busy organization in turn. Age across organizations deliberately does
-- not order a round: oldest-first let a tenant whose 10,000-job backlog was enqueued
-- earlier win every claim of 1 (a worker running slow LLM jobs frees one slot at a time)
-- until its backlog drained; and with windows of 32 organizations, random starts left up
-- to 1 in 15 of them waiting for a second turn. The window bounds a claim's cost (two index
-- probes per organization: 9 ms with 1,000 of them) and lets a round skip organizations
-- whose jobs are all locked by other claimers or scheduled later. Rows are locked with
-- SKIP LOCKED, so concurrent claimers never wait on or double-claim a row.
WITH RECURSIVE orgs_up AS (
    (SELECT organization_id, 1 AS n FROM job_queue
      WHERE status IN ('PENDING', 'FAILED') AND organization_id >= %(start)s
      ORDER BY organization_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.organization_id FROM job_queue j
             WHERE j.status IN ('PENDING', 'FAILED') AND j.organization_id > o.organization_id
             ORDER BY j.organization_id LIMIT 1), o.n + 1
      FROM orgs_up o
     WHERE o.organization_id IS NOT NULL AND o.n < greatest(32, 4 * %(limit)s)
), orgs_wrap AS (
    (SELECT organization_id, 1 AS n FROM job_queue
      WHERE status IN ('PENDING', 'FAILED') AND organization_id < %(start)s
      ORDER BY organization_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.organization_id FROM job_queue j
             WHERE j.status IN ('PENDING', 'FAILED') AND j.organization_id > o.organization_id
               AND j.organization_id < %(start)s
             ORDER BY j.organization_id LIMIT 1), o.n + 1
      FROM orgs_wrap o
     WHERE o.organization_id IS NOT NULL AND o.n < greatest(32, 4 * %(limit)s)
), live_orgs AS (
    -- The wrapped part is only read (and so only scanned) while the window is not full.
    -- pos: the organization's place in the window (the wrapped part after the rest).
    SELECT organization_id, pos FROM (
        SELECT organization_id, n AS pos FROM orgs_up WHERE organization_id IS NOT NULL
        UNION ALL
        SELECT organization_id, 1073741824 + n FROM orgs_wrap WHERE organization_id IS NOT NULL
    ) w
    LIMIT greatest(32, 4 * %(limit)s)
), per_org AS (
    SELECT least(%(limit)s, greatest(1, ceil(4.0 * %(limit)s / greatest(count(*), 1))))::int AS k
      FROM live_orgs
), candidates AS (
    -- rn is computed out here: a window inside the LATERAL would read every peer row of
    -- equal (priority, run_after), i.e. a whole bulk-enqueued backlog.
    SELECT c.id, c.priority, o.pos,
           row_number() OVER (PARTITION BY o.organization_id
                              ORDER BY c.priority DESC, c.run_after, c.id) AS rn
      FROM live_orgs o
     CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_after
          FROM job_queue j
         WHERE j.organization_id = o.organization_id
           AND j.status IN ('PENDING', 'FAILED')
           AND j.run_after <= %(now)s
           AND (%(job_types)s::text[] IS NULL OR j.job_type = ANY(%(job_types)s::text[]))
         ORDER BY j.priority DESC, j.run_after
         LIMIT (SELECT k FROM per_org)
     ) c
), picked AS (
    -- Re-read each candidate by primary key and lock it, in candidate order, until
    -- %(limit)s rows are locked. The LATERAL makes the planner look rows up one by one;
    -- a plain join was planned as a hash join over every runnable row whenever the
    -- statistics lagged behind a burst (an empty table just analysed, then 20,000 jobs).
    -- Rows that another claimer holds are skipped; the status/run_after conditions are
    -- re-checked on the locked row, so a job claimed and committed meanwhile is not taken.
    SELECT l.id, l.status AS old_status, c.rn, c.priority AS c_priority, c.pos AS c_pos
      FROM (SELECT * FROM candidates ORDER BY rn, priority DESC, pos LIMIT 2 * %(limit)s) c
     CROSS JOIN LATERAL (
        SELECT j.id, j.status FROM job_queue j
         WHERE j.id = c.id AND j.status IN ('PENDING', 'FAILED') AND j.run_after <= %(now)s
           FOR UPDATE SKIP LOCKED
     ) l
     LIMIT %(limit)s
), claimed AS (
    UPDATE job_queue j
       SET status = 'RUNNING', locked_by = %(worker_id)s, locked_at = %(now)s,
           lease_seconds = %(lease_seconds)s, cancel_requested = false, updated_at = %(now)s
      FROM picked p
     WHERE j.id = p.id
    RETURNING j.*, p.old_status, p.rn, p.c_priority, p.c_pos
), ev AS (
    INSERT INTO job_events (job_id, organization_id, event_type, from_status, to_status, worker_id,
                            attempt, created_at)
    SELECT id, organization_id, 'CLAIMED', old_status, 'RUNNING', %(worker_id)s, retry_count + 1,
           %(now)s
      FROM claimed
)
-- The columns in the order of queue.models.CLAIM_COLUMNS (the worker builds Job from tuples).
SELECT id, organization_id, job_type, payload, status, locked_by, locked_at, run_after,
       retry_count, max_retries, last_error, created_at, updated_at, priority, dedupe_key,
       parent_id, timeout_seconds, cancel_requested
  FROM claimed ORDER BY rn, c_priority DESC, c_pos;

-- name: job_heartbeat
-- Renew the lease of the jobs this worker holds; rows not returned are no longer ours.
-- Rows are locked in id order, as job_complete and job_release lock them: the same worker's
-- heartbeat and batch completion touch the same rows at once, and locking them in two
-- different orders deadlocked (the completion batch was rolled back and retried).
WITH mine AS MATERIALIZED (
    SELECT id FROM job_queue
     WHERE id = ANY(%(ids)s::uuid[]) AND locked_by = %(worker_id)s AND status = 'RUNNING'
     ORDER BY id
       FOR UPDATE
)
UPDATE job_queue j SET locked_at = %(now)s
  FROM mine m
 WHERE j.id = m.id AND j.locked_by = %(worker_id)s AND j.status = 'RUNNING'
RETURNING j.id, j.cancel_requested;

-- name: job_complete
-- Fenced batch completion: DONE + result + SUCCEEDED event for the rows this worker still holds.
WITH input AS (
    -- One JSON array [{"id", "result", "audit"}, ...]: a single parameter the client encodes
    -- in one call, instead of three arrays dumped element by element.
    SELECT * FROM jsonb_to_recordset(%(batch)s::jsonb) AS t(id uuid, result jsonb, audit jsonb)
), mine AS MATERIALIZED (
    -- Lock in id order first (see job_heartbeat): no deadlock with our own heartbeat.
    SELECT id FROM job_queue
     WHERE id = ANY (ARRAY(SELECT id FROM input)) AND locked_by = %(worker_id)s AND status = 'RUNNING'
     ORDER BY id
       FOR UPDATE
), done AS (
    UPDATE job_queue j
       SET status = 'DONE', result = i.result, locked_at = NULL, cancel_requested = false,
           updated_at = %(now)s
      FROM input i JOIN mine m ON m.id = i.id
     WHERE j.id = i.id AND j.locked_by = %(worker_id)s AND j.status = 'RUNNING'
    RETURNING j.id, j.organization_id, j.retry_count
), ev AS (
    INSERT INTO job_events (job_id, organization_id, event_type, from_status, to_status, worker_id,
                            attempt, data, created_at)
    SELECT d.id, d.organization_id, 'SUCCEEDED', 'RUNNING', 'DONE', %(worker_id)s,
           d.retry_count + 1, i.audit, %(now)s
      FROM done d JOIN input i ON i.id = d.id
)
SELECT id FROM done;

-- name: job_fail
-- Fenced failure: FAILED with run_after = %(retry_at)s, or DEAD when permanent or exhausted.
WITH upd AS (
    UPDATE job_queue j
       SET retry_count = j.retry_count + 1,
           status = CASE WHEN %(permanent)s OR j.retry_count + 1 >= j.max_retries
                         THEN 'DEAD' ELSE 'FAILED' END,
           run_after = CASE WHEN %(permanent)s OR j.retry_count + 1 >= j.max_retries
                            THEN j.run_after ELSE %(retry_at)s END,
           last_error = %(error)s, locked_at = NULL, cancel_requested = false,
           updated_at = %(now)s
     WHERE j.id = %(id)s AND j.locked_by = %(worker_id)s AND j.status = 'RUNNING'
    RETURNING j.id, j.organization_id, j.status, j.retry_count, j.run_after
), ev AS (
    INSERT INTO job_events (job_id, organization_id, event_type, from_status, to_status, worker_id,
                            attempt, message, data, created_at)
    SELECT id, organization_id,
           CASE WHEN status = 'DEAD' THEN %(dead_event)s ELSE 'RETRY_SCHEDULED' END,
           'RUNNING', status, %(worker_id)s, retry_count, %(error)s, %(data)s::jsonb, %(now)s
      FROM upd
)
SELECT id, status, retry_count, run_after FROM upd;

-- name: job_release
-- Fenced release at shutdown: back to PENDING without counting an attempt (RELEASED).
WITH mine AS MATERIALIZED (
    -- Lock in id order first (see job_heartbeat).
    SELECT id FROM job_queue
     WHERE id = ANY(%(ids)s::uuid[]) AND locked_by = %(worker_id)s AND status = 'RUNNING'
     ORDER BY id
       FOR UPDATE
), upd AS (
    UPDATE job_queue j
       SET status = 'PENDING', locked_by = NULL, locked_at = NULL, cancel_requested = false,
           updated_at = %(now)s
      FROM mine m
     WHERE j.id = m.id AND j.locked_by = %(worker_id)s AND j.status = 'RUNNING'
    RETURNING j.id, j.organization_id, j.retry_count, j.job_type
), ev AS (
    INSERT INTO job_events (job_id, organization_id, event_type, from_status, to_status, worker_id,
                            attempt, message, created_at)
    SELECT id, organization_id, 'RELEASED', 'RUNNING', 'PENDING', %(worker_id)s, retry_count + 1,
           %(message)s, %(now)s
      FROM upd
)
SELECT id, pg_notify('atum_ai_jobs', job_type) AS notified FROM upd;

-- name: job_recover_expired
-- Rescue RUNNING jobs whose lease expired (dead or frozen worker): FAILED with backoff, the
-- lost attempt counted, or DEAD when exhausted (CANCELLED when a cancel was pending).
WITH expired AS (
    SELECT id, locked_by AS old_worker, cancel_requested AS was_cancelled
      FROM job_queue
     WHERE status = 'RUNNING'
       -- least(): a lease of NaN/Infinity written before the range check existed must not
       -- make this statement fail for every row (PostgreSQL orders NaN above all numbers).
       AND locked_at < %(now)s - make_interval(
               secs => least(coalesce(lease_seconds, %(default_lease)s), 604800))
     ORDER BY locked_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE job_queue j
       SET retry_count = j.retry_count + 1,
           status = CASE WHEN e.was_cancelled OR j.retry_count + 1 >= j.max_retries
                         THEN 'DEAD' ELSE 'FAILED' END,
           run_after = %(now)s + make_interval(secs =>
               least(%(cap)s::float8, %(base)s::float8 * power(2.0, least(j.retry_count, 60)))
               * (1 + %(jitter)s::float8 * (2 * random() - 1))),
           last_error = CASE WHEN e.was_cancelled THEN 'cancelled'
                             ELSE 'lease expired: worker ' || e.old_worker::text
                                  || ' stopped renewing its lease' END,
           locked_by = NULL, locked_at = NULL, cancel_requested = false, updated_at = %(now)s
      FROM expired e
     WHERE j.id = e.id
    RETURNING j.id, j.organization_id, j.status, j.retry_count, j.job_type, j.last_error,
              e.old_worker, e.was_cancelled
), ev AS (
    INSERT INTO job_events (job_id, organization_id, event_type, from_status, to_status, worker_id,
                            attempt, message, created_at)
    SELECT id, organization_id, CASE WHEN was_cancelled THEN 'CANCELLED' ELSE 'RECOVERED' END,
           'RUNNING', status, old_worker, retry_count, last_error, %(now)s
      FROM upd
)
SELECT id, status, job_type, pg_notify('atum_ai_jobs', job_type) AS notified FROM upd;

-- name: job_cancel
-- PENDING/FAILED -> DEAD ('cancelled'); RUNNING -> cancel_requested for its worker to act on.
WITH target AS (
    SELECT id, status FROM job_queue
     WHERE id = %(id)s AND (%(organization_id)s::uuid IS NULL OR organization_id = %(organization_id)s)
     FOR UPDATE
), upd AS (
    -- Decide on j.status (the row version being updated) and require it to equal what the
    -- CTE read: under a concurrent claim/release the two can differ, and deciding on a stale
    -- t.status once made a released row 'RUNNING' without a lock (a CHECK violation). On a
    -- mismatch nothing changes and JobStore.cancel tries again.
    UPDATE job_queue j
       SET status = CASE WHEN j.status = 'RUNNING' THEN 'RUNNING' ELSE 'DEAD' END,
           cancel_requested = (j.status = 'RUNNING'),
           last_error = CASE WHEN j.status = 'RUNNING' THEN j.last_error ELSE 'cancelled' END,
           updated_at = %(now)s
      FROM target t
     WHERE j.id = t.id AND j.status = t.status AND j.status IN ('PENDING', 'FAILED', 'RUNNING')
       AND NOT (j.status = 'RUNNING' AND j.cancel_requested)  -- asked already: no second event
    RETURNING j.id, j.organization_id, t.status AS from_status, j.status AS to_status,
              j.retry_count
), ev AS (
    INSERT INTO job_events (job_id, organization_id, event_type, from_status, to_status, attempt,
                            message, created_at)
    SELECT id, organization_id,
           CASE WHEN to_status = 'DEAD' THEN 'CANCELLED' ELSE 'CANCEL_REQUESTED' END,
           from_status, to_status, retry_count, %(reason)s, %(now)s
      FROM upd
)
SELECT id, from_status, to_status FROM upd;

-- name: job_requeue
-- DEAD -> PENDING with fresh attempts (REQUEUED, keeping the old error in the event).
WITH upd AS (
    UPDATE job_queue
       SET status = 'PENDING', retry_count = 0, run_after = %(now)s, last_error = NULL,
           locked_by = NULL, locked_at = NULL, cancel_requested = false, result = NULL,
           updated_at = %(now)s
     WHERE id = %(id)s AND status = 'DEAD'
       AND (%(organization_id)s::uuid IS NULL OR organization_id = %(organization_id)s)
    RETURNING id, organization_id, job_type
), ev AS (
    INSERT INTO job_events (job_id, organization_id, event_type, from_status, to_status, attempt,
                            message, created_at)
    SELECT id, organization_id, 'REQUEUED', 'DEAD', 'PENDING', 0, %(message)s, %(now)s FROM upd
)
SELECT id, pg_notify('atum_ai_jobs', job_type) AS notified FROM upd;

-- name: job_purge_batch
-- Delete one batch of DONE/DEAD jobs older than %(before)s, with their events.
WITH victims AS (
    SELECT id FROM job_queue
     WHERE status IN ('DONE', 'DEAD') AND updated_at < %(before)s
     ORDER BY updated_at
     LIMIT %(batch)s
       FOR UPDATE SKIP LOCKED
), del_events AS (
    DELETE FROM job_events e USING victims v WHERE e.job_id = v.id
), del AS (
    DELETE FROM job_queue j USING victims v WHERE j.id = v.id RETURNING j.id
)
SELECT count(*) AS purged FROM del;

-- name: job_get
-- One job by id, optionally scoped to an organization.
SELECT * FROM job_queue
 WHERE id = %(id)s AND (%(organization_id)s::uuid IS NULL OR organization_id = %(organization_id)s);

-- name: job_events_list
-- The audit trail of one job, oldest first.
SELECT * FROM job_events WHERE job_id = %(id)s ORDER BY id;

-- name: job_status_counts
-- Counts by job type and status (optionally for one organization).
SELECT job_type, status, count(*) AS count FROM job_queue
 WHERE (%(organization_id)s::uuid IS NULL OR organization_id = %(organization_id)s)
 GROUP BY 1, 2 ORDER BY 1, 2;

-- name: job_list
-- Recent jobs, filtered by status/type/organization.
SELECT id, organization_id, job_type, status, retry_count, max_retries, run_after, updated_at,
       last_error
  FROM job_queue
 WHERE (%(organization_id)s::uuid IS NULL OR organization_id = %(organization_id)s)
   AND (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(job_type)s::text IS NULL OR job_type = %(job_type)s)
 ORDER BY updated_at DESC
 LIMIT %(limit)s;

-- name: job_orphan_types
-- Job types with runnable jobs that waited since before %(before)s and are not in %(job_types)s.
SELECT job_type, count(*) AS waiting FROM job_queue
 WHERE status IN ('PENDING', 'FAILED') AND run_after < %(before)s
   AND job_type <> ALL(%(job_types)s::text[])
 GROUP BY job_type ORDER BY 2 DESC;

-- name: job_runnable_exists
-- Is anything runnable now (for --burst)? Includes RUNNING rows of other workers.
SELECT EXISTS (
    SELECT 1 FROM job_queue
     WHERE (status IN ('PENDING', 'FAILED') AND run_after <= %(now)s
            AND (%(job_types)s::text[] IS NULL OR job_type = ANY(%(job_types)s::text[])))
) AS runnable;

-- name: schedule_fire_claim
-- Record that a periodic schedule fired for a slot; only the first worker gets a row back.
INSERT INTO job_schedule_fires (schedule_name, fire_time, fired_at)
VALUES (%(schedule_name)s, %(fire_time)s, %(now)s)
ON CONFLICT DO NOTHING
RETURNING schedule_name;

-- name: schedule_last_fire
-- The latest slot a schedule fired for.
SELECT max(fire_time) AS last_fire FROM job_schedule_fires WHERE schedule_name = %(schedule_name)s;
