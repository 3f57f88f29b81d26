-- The lead chain (DESIGN.md §4): every scoring, every pipeline run with its steps, and the
-- persisted event stream that subscriptions read (resumable by seq, fanned out by NOTIFY).

-- Every scoring of a lead, newest first; the newest is the lead's current score.
CREATE TABLE lead_scores (
    id             TEXT PRIMARY KEY NOT NULL,
    customer_id    TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    score          INTEGER NOT NULL,
    priority       TEXT NOT NULL,
    tags           TEXT NOT NULL,
    next_action    TEXT NOT NULL,
    reasons        TEXT NOT NULL,
    config_version TEXT NOT NULL,
    cause          TEXT NOT NULL,
    scored_at      TIMESTAMP NOT NULL
);
CREATE INDEX lead_scores_customer_idx ON lead_scores (customer_id, id DESC);

CREATE TABLE pipeline_runs (
    id          TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    cause       TEXT NOT NULL,
    status      TEXT NOT NULL,
    branch      TEXT,
    error       TEXT,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE INDEX pipeline_runs_customer_idx ON pipeline_runs (customer_id, id DESC);
CREATE INDEX pipeline_runs_status_idx ON pipeline_runs (status, id DESC);

-- A step's attempts and last error live on its job (job_id).
CREATE TABLE pipeline_steps (
    id          TEXT PRIMARY KEY NOT NULL,
    run_id      TEXT NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    job_id      TEXT,
    detail      TEXT,
    created_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE UNIQUE INDEX pipeline_steps_run_idx ON pipeline_steps (run_id, position);

-- Events for subscribers, in commit order (writers take a lock on PostgreSQL, SQLite has one
-- writer), so that a reader that saw seq n never later sees a smaller one.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    topic        TEXT NOT NULL,
    customer_id  TEXT,
    payload      TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL
);
CREATE INDEX events_topic_idx ON events (topic, seq);
