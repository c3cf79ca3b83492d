-- ix_job_queue_running (locked_by, locked_at) WHERE status = 'RUNNING' duplicated what other
-- indexes already give: heartbeat, completion and release find their rows by primary key
-- (id = ANY(...)), and lease recovery by ix_job_queue_locked_at, which holds a value only for
-- RUNNING rows (every other transition sets locked_at to NULL). Every claim paid for it with
-- one more index entry per job, and at a million rows that is one more random page write.
DROP INDEX IF EXISTS ix_job_queue_running;
