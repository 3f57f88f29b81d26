-- The durable job queue (DESIGN.md §4). A job is claimed by taking a lease (locked_by,
-- locked_until); a lease that runs out makes the job claimable again. Dedupe keys are
-- permanent: put a period or version into the key (`report:daily:2026-11-25`).
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    dedupe_key   TEXT,
    priority     INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL,
    run_at       TIMESTAMP NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    locked_by    TEXT,
    locked_until TIMESTAMP,
    last_error   TEXT,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP
);

CREATE UNIQUE INDEX jobs_dedupe_key_key ON jobs (dedupe_key);
-- Claim order: due jobs by priority, then by due time.
CREATE INDEX jobs_ready_idx ON jobs (status, priority DESC, run_at);
CREATE INDEX jobs_lease_idx ON jobs (status, locked_until);
