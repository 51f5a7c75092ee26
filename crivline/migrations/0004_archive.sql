-- Archived projects and environments. DELETE on the API archives: the row stays (the
-- audit log, usage already counted and the keys it held still name it), the edges stop
-- serving it, and every read of the control API, the seed and the snapshot skips it.
-- An environment of an archived project counts as archived, whatever its own column.
-- A key is unique among live rows only, so a deleted project or environment's key can
-- be used again.
ALTER TABLE projects ADD COLUMN archived_at timestamptz;
ALTER TABLE environments ADD COLUMN archived_at timestamptz;

ALTER TABLE projects DROP CONSTRAINT projects_tenant_id_key_key;
CREATE UNIQUE INDEX projects_live_key ON projects (tenant_id, key) WHERE archived_at IS NULL;
ALTER TABLE environments DROP CONSTRAINT environments_project_id_key_key;
CREATE UNIQUE INDEX environments_live_key ON environments (project_id, key)
    WHERE archived_at IS NULL;

-- The retention clean-up deletes by age: these make its scans cheap.
CREATE INDEX usage_batches_received ON usage_batches (received_at);
CREATE INDEX stripe_events_received ON stripe_events (received_at);
