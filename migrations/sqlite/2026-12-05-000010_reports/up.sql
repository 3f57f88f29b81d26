-- Reports: each generated report with its figures and both renderings (HTML and PDF), for the
-- scope of customers it was made for; and the deliveries of scheduled reports by email, one row
-- per (report, recipient), claimed before sending so a retried job never mails twice.
CREATE TABLE reports (
    id           TEXT PRIMARY KEY NOT NULL,
    period       TEXT NOT NULL,
    first_day    TEXT NOT NULL,
    last_day     TEXT NOT NULL,
    time_zone    TEXT NOT NULL,
    range_start  TIMESTAMP NOT NULL,
    range_end    TIMESTAMP NOT NULL,
    scope        TEXT NOT NULL,
    language     TEXT NOT NULL,
    trigger_name TEXT NOT NULL,
    dedupe_key   TEXT,
    requested_by TEXT NOT NULL,
    figures      TEXT NOT NULL,
    html         TEXT NOT NULL,
    pdf          BLOB NOT NULL,
    created_at   TIMESTAMP NOT NULL
);
CREATE INDEX reports_created_idx ON reports (created_at, id);
CREATE INDEX reports_scope_idx ON reports (scope, id);
CREATE UNIQUE INDEX reports_dedupe_idx ON reports (dedupe_key);

CREATE TABLE report_deliveries (
    report_id  TEXT NOT NULL REFERENCES reports (id),
    recipient  TEXT NOT NULL,
    status     TEXT NOT NULL,
    error      TEXT,
    created_at TIMESTAMP NOT NULL,
    sent_at    TIMESTAMP,
    PRIMARY KEY (report_id, recipient)
);

-- Report figures count by these instants.
CREATE INDEX lead_scores_scored_idx ON lead_scores (scored_at);
CREATE INDEX calls_dialed_idx ON calls (dialed_at);
CREATE INDEX calls_ended_idx ON calls (ended_at);
CREATE INDEX emails_sent_idx ON emails (sent_at);
CREATE INDEX email_events_at_idx ON email_events (at);
CREATE INDEX nurture_enrolled_idx ON nurture_enrollments (enrolled_at);
CREATE INDEX pipeline_runs_finished_idx ON pipeline_runs (finished_at);
CREATE INDEX jobs_finished_idx ON jobs (finished_at);
CREATE INDEX customers_status_updated_idx ON customers (status, updated_at);
