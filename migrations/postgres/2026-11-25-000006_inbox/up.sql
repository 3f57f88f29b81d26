-- The intake inbox (/import-lead): every lead delivery is stored raw here, in the transaction
-- that also queues its processing, before the sender gets its 2xx — so a crash after the ack
-- loses nothing. `idempotency_key` (the webhook-id, per source) makes a repeated delivery
-- return the first result instead of creating anything.
CREATE TABLE inbox (
    id              TEXT PRIMARY KEY NOT NULL,
    channel         TEXT NOT NULL,
    source          TEXT NOT NULL,
    idempotency_key TEXT,
    content_type    TEXT,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    result          TEXT,
    received_at     TIMESTAMP NOT NULL,
    processed_at    TIMESTAMP
);

CREATE UNIQUE INDEX inbox_idempotency_key ON inbox (idempotency_key);
CREATE INDEX inbox_status_idx ON inbox (status, received_at);
