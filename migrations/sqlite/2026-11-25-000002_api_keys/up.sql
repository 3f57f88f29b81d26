-- API keys: only a SHA-256 of the key is stored; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL,
    role         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    created_by   TEXT,
    created_at   TIMESTAMP NOT NULL,
    expires_at   TIMESTAMP,
    revoked_at   TIMESTAMP
);

CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
