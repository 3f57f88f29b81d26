-- The append-only audit log. Each entry's hash covers the previous entry's hash and the
-- entry's fields; the changed values live in `payload`, which the hash covers only through
-- `payload_hash`, so that erasing personal data (GDPR) keeps the chain verifiable.
CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY NOT NULL,
    id           TEXT NOT NULL,
    at           TIMESTAMP NOT NULL,
    actor_kind   TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target_type  TEXT,
    target_id    TEXT,
    request_id   TEXT,
    payload      TEXT,
    payload_hash TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);

CREATE UNIQUE INDEX audit_log_id_key ON audit_log (id);
CREATE INDEX audit_log_target_idx ON audit_log (target_id, seq);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, seq);
