-- Emails: one row per message, recorded (queued) before it is sent, so a retried job never
-- sends a second copy; its events (SendGrid's event webhook), the suppression list checked
-- before every send, and follow-up tasks.
CREATE TABLE emails (
    id                  TEXT PRIMARY KEY NOT NULL,
    customer_id         TEXT NOT NULL REFERENCES customers (id),
    template            TEXT NOT NULL,
    language            TEXT NOT NULL,
    category            TEXT NOT NULL,
    to_email            TEXT NOT NULL,
    subject             TEXT NOT NULL,
    status              TEXT NOT NULL,
    sender              TEXT NOT NULL,
    provider_message_id TEXT,
    error               TEXT,
    last_event          TEXT,
    variables           TEXT NOT NULL,
    run_id              TEXT,
    step_id             TEXT,
    call_id             TEXT,
    interaction_id      TEXT,
    requested_by        TEXT NOT NULL,
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL,
    sent_at             TIMESTAMP
);
CREATE INDEX emails_customer_idx ON emails (customer_id, created_at);
CREATE UNIQUE INDEX emails_step_idx ON emails (step_id, template);

CREATE TABLE email_events (
    event_id    TEXT PRIMARY KEY NOT NULL,
    email_id    TEXT,
    kind        TEXT NOT NULL,
    email       TEXT NOT NULL,
    reason      TEXT,
    url         TEXT,
    at          TIMESTAMP NOT NULL,
    received_at TIMESTAMP NOT NULL
);
CREATE INDEX email_events_email_idx ON email_events (email_id, at);

-- Addresses never emailed again (normalized): unsubscribed, bounced, complained, manual.
CREATE TABLE suppressions (
    email      TEXT PRIMARY KEY NOT NULL,
    reason     TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY NOT NULL,
    customer_id  TEXT NOT NULL REFERENCES customers (id),
    title        TEXT NOT NULL,
    notes        TEXT,
    due_at       TIMESTAMP,
    assignee     TEXT,
    status       TEXT NOT NULL,
    call_id      TEXT,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL,
    completed_at TIMESTAMP
);
CREATE INDEX tasks_assignee_idx ON tasks (assignee, status, due_at);
CREATE INDEX tasks_customer_idx ON tasks (customer_id, created_at);
-- One follow-up task per call: a replayed follow-up step creates none.
CREATE UNIQUE INDEX tasks_call_idx ON tasks (call_id);

-- Leads in the nurture sequence: where each one is, and why it left.
CREATE TABLE nurture_enrollments (
    customer_id TEXT NOT NULL REFERENCES customers (id),
    run_id      TEXT NOT NULL,
    position    INTEGER NOT NULL,
    status      TEXT NOT NULL,
    exit_reason TEXT,
    next_at     TIMESTAMP,
    enrolled_at TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (customer_id, run_id)
);
CREATE INDEX nurture_status_idx ON nurture_enrollments (status, updated_at);
