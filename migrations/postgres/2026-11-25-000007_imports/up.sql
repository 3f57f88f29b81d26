-- File imports of leads (CSV, JSON, NDJSON), run as jobs: progress and counts are kept here,
-- every problem of a row in import_issues, so a report survives the request that started it.
CREATE TABLE imports (
    id          TEXT PRIMARY KEY NOT NULL,
    file_name   TEXT NOT NULL,
    format      TEXT NOT NULL,
    options     TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    owner_scope TEXT,
    rows_done   INTEGER NOT NULL DEFAULT 0,
    created     INTEGER NOT NULL DEFAULT 0,
    updated     INTEGER NOT NULL DEFAULT 0,
    merged      INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    invalid     INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    runner      TEXT,
    heartbeat   TIMESTAMP,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE INDEX imports_created_idx ON imports (created_at, id);

CREATE TABLE import_issues (
    import_id TEXT NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
    row_no    INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    field     TEXT NOT NULL,
    code      TEXT NOT NULL,
    message   TEXT NOT NULL,
    PRIMARY KEY (import_id, row_no, seq)
);
