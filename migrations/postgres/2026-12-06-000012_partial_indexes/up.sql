-- Indexes that only ever serve rows with a value (or one status) now hold only those rows.
-- Every new job, run and lead used to add an entry to each of them (NULL, or a status the
-- index is never searched by): five index entries per imported lead for nothing. Each query
-- that uses them names the condition (`status = 'running'` as a literal, or a comparison
-- that implies NOT NULL), so PostgreSQL and SQLite still pick them.
DROP INDEX jobs_lease_idx;
CREATE INDEX jobs_lease_idx ON jobs (locked_until) WHERE status = 'running';
DROP INDEX jobs_finished_idx;
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
DROP INDEX jobs_dedupe_key_key;
CREATE UNIQUE INDEX jobs_dedupe_key_key ON jobs (dedupe_key) WHERE dedupe_key IS NOT NULL;
DROP INDEX pipeline_runs_finished_idx;
CREATE INDEX pipeline_runs_finished_idx ON pipeline_runs (finished_at) WHERE finished_at IS NOT NULL;
DROP INDEX customers_owner_idx;
CREATE INDEX customers_owner_idx ON customers (owner, created_at) WHERE owner IS NOT NULL;
