-- Bounds the application already enforces, kept by the database too, because one bad row
-- can hurt every worker: a run_after outside years 1..9999 in UTC is stored by PostgreSQL
-- but cannot be read back by drivers (the claim that picks it fails after committing), and
-- a lease of Infinity/NaN makes the lease-recovery statement fail for all rows at once.
-- NOT VALID: rows written before this migration are not checked (validating could make the
-- migration itself fail on an old bad row); every insert and update from now on is.
ALTER TABLE job_queue
    ADD CONSTRAINT job_queue_run_after_range
        CHECK (run_after >= '1970-01-01 00:00:00+00' AND run_after < '9000-01-01 00:00:00+00') NOT VALID,
    ADD CONSTRAINT job_queue_lease_range
        CHECK (lease_seconds IS NULL OR (lease_seconds >= 1 AND lease_seconds <= 604800)) NOT VALID,
    ADD CONSTRAINT job_queue_timeout_range
        CHECK (timeout_seconds IS NULL OR (timeout_seconds >= 0.001 AND timeout_seconds <= 86400)) NOT VALID;
