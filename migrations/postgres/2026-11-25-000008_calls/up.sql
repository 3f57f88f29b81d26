-- Voice calls: one row per attempt. The first attempt's id names the queue entry; a retry
-- after no answer, busy or voicemail is a new row with attempt + 1. Queued rows are the call
-- queue (dialled by their voice-dial job, which checks policy again at dial time).
CREATE TABLE calls (
    id               TEXT PRIMARY KEY NOT NULL,
    customer_id      TEXT NOT NULL REFERENCES customers (id),
    first_call_id    TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    agent            TEXT NOT NULL,
    provider         TEXT NOT NULL,
    provider_call_id TEXT,
    to_number        TEXT NOT NULL,
    language         TEXT NOT NULL,
    status           TEXT NOT NULL,
    disposition      TEXT,
    outcome          TEXT,
    ended_reason     TEXT,
    reason           TEXT,
    final_attempt    BOOLEAN NOT NULL DEFAULT FALSE,
    priority         INTEGER NOT NULL,
    not_before       TIMESTAMP NOT NULL,
    run_id           TEXT,
    step_id          TEXT,
    requested_by     TEXT NOT NULL,
    dialed_at        TIMESTAMP,
    started_at       TIMESTAMP,
    ended_at         TIMESTAMP,
    duration_secs    DOUBLE PRECISION,
    cost_usd         DOUBLE PRECISION,
    summary          TEXT,
    sentiment        TEXT,
    recording_url    TEXT,
    transcript       TEXT,
    interaction_id   TEXT,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX calls_provider_idx ON calls (provider, provider_call_id);
CREATE UNIQUE INDEX calls_step_idx ON calls (step_id, attempt);
CREATE INDEX calls_status_idx ON calls (status, provider);
CREATE INDEX calls_customer_idx ON calls (customer_id, created_at);
CREATE INDEX calls_number_idx ON calls (to_number, dialed_at);
CREATE INDEX calls_created_idx ON calls (created_at, id);

-- Transcript segments in the order they arrived (seq from 1 per call); dedupe makes a
-- repeated delivery a no-op.
CREATE TABLE call_segments (
    call_id    TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    dedupe     TEXT NOT NULL,
    role       TEXT NOT NULL,
    text       TEXT NOT NULL,
    offset_ms  BIGINT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (call_id, seq)
);
CREATE UNIQUE INDEX call_segments_dedupe_idx ON call_segments (call_id, dedupe);

-- Provider deliveries already ingested (providers repeat them).
CREATE TABLE call_deliveries (
    call_id     TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    dedupe      TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (call_id, dedupe)
);

-- Numbers that must never be called (E.164).
CREATE TABLE do_not_call (
    phone      TEXT PRIMARY KEY NOT NULL,
    reason     TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
