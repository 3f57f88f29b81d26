-- Customers and their interactions (SQLite dialect; keep in step with migrations/postgres).
-- Portable types only: TEXT ids (UUIDv7), TIMESTAMP in UTC, BOOLEAN, INTEGER.

CREATE TABLE customers (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    email         TEXT,
    phone         TEXT,
    company       TEXT,
    status        TEXT NOT NULL,
    source        TEXT,
    language      TEXT,
    country       TEXT,
    time_zone     TEXT,
    owner         TEXT,
    tags          TEXT NOT NULL DEFAULT '[]',
    consent_email BOOLEAN NOT NULL DEFAULT FALSE,
    consent_call  BOOLEAN NOT NULL DEFAULT FALSE,
    consent_sms   BOOLEAN NOT NULL DEFAULT FALSE,
    notes         TEXT,
    search_text   TEXT NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    deleted_at    TIMESTAMP
);

CREATE UNIQUE INDEX customers_email_key ON customers (email);
CREATE UNIQUE INDEX customers_phone_key ON customers (phone);
CREATE INDEX customers_created_at_idx ON customers (created_at, id);
CREATE INDEX customers_updated_at_idx ON customers (updated_at, id);
CREATE INDEX customers_name_idx ON customers (name, id);
CREATE INDEX customers_owner_idx ON customers (owner, created_at);
CREATE INDEX customers_status_idx ON customers (status, created_at);

-- One row per tag of a customer, so that the tag filter is an index lookup.
CREATE TABLE customer_tags (
    tag         TEXT NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    PRIMARY KEY (tag, customer_id)
);
CREATE INDEX customer_tags_customer_idx ON customer_tags (customer_id);

CREATE TABLE interactions (
    id               TEXT PRIMARY KEY NOT NULL,
    customer_id      TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    direction        TEXT,
    subject          TEXT,
    body             TEXT,
    outcome          TEXT,
    occurred_at      TIMESTAMP NOT NULL,
    duration_seconds INTEGER,
    author           TEXT,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL
);

-- Newest first per customer: the order `Customer.interactions` reads, so no sort is needed.
CREATE INDEX interactions_customer_idx ON interactions (customer_id, occurred_at DESC, id DESC);
CREATE INDEX interactions_occurred_at_idx ON interactions (occurred_at, id);
