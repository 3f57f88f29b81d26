-- GDPR: the consent ledger (every grant and withdrawal, per channel and purpose, with its lawful
-- basis, source and evidence), erasures (one per erased customer), the salted hashes of erased
-- emails and phones (so the person is never re-imported or re-contacted), and provider-side
-- deletions of their calls. The installation's hashing key is kept in gdpr_keys.
CREATE TABLE consents (
    id          TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    channel     TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    basis       TEXT NOT NULL,
    granted     BOOLEAN NOT NULL,
    source      TEXT NOT NULL,
    evidence    TEXT,
    recorded_by TEXT NOT NULL,
    at          TIMESTAMP NOT NULL
);
CREATE INDEX consents_customer_idx ON consents (customer_id, id);

CREATE TABLE erasures (
    customer_id TEXT PRIMARY KEY NOT NULL REFERENCES customers (id),
    reason      TEXT NOT NULL,
    erased_by   TEXT NOT NULL,
    erased_at   TIMESTAMP NOT NULL
);

CREATE TABLE erased_identities (
    hash      TEXT PRIMARY KEY NOT NULL,
    kind      TEXT NOT NULL,
    erased_at TIMESTAMP NOT NULL
);

CREATE TABLE provider_deletions (
    call_id          TEXT PRIMARY KEY NOT NULL,
    customer_id      TEXT NOT NULL,
    provider         TEXT NOT NULL,
    provider_call_id TEXT,
    status           TEXT NOT NULL,
    error            TEXT,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL
);

CREATE TABLE gdpr_keys (
    name       TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
