-- The flag set's own version: environments.flags_version is the version of the last bump
-- that changed what SDKs are served (flags, segments, the flag set's metadata, the
-- bucketing scheme). A bump that changes only what the edge enforces (API keys, the
-- tenant's plan) moves `version` — the replication clock, which the edges still need —
-- and leaves `flags_version` where it was. SDKs are shown flags_version (ETags, stream
-- ids): a key-only change then tells no poller and no stream anything. Every edge reads
-- it from here with the snapshot, so every edge names one flag set the same way.
--
-- Invariant: 1 <= flags_version <= version, and flags_version is a version whose bump
-- changed the flag set (so the flag set of version flags_version is the current one).
-- Existing rows start at their version: every bump before this migration counted as a
-- change of the flag set, so the ETags SDKs hold today stay valid and never go back.

ALTER TABLE environments ADD COLUMN flags_version bigint;
UPDATE environments SET flags_version = version;
ALTER TABLE environments ALTER COLUMN flags_version SET DEFAULT 1;
ALTER TABLE environments ALTER COLUMN flags_version SET NOT NULL;
ALTER TABLE environments ADD CONSTRAINT environments_flags_version_range
    CHECK (flags_version > 0 AND flags_version <= version);

-- The bump, told whether the write changed the flag set (flags_changed; NULL counts as
-- true: a caller that cannot say must not leave SDKs holding an old flag set). The
-- notification's payload is exactly that of the two-argument form (migration 0006).
CREATE FUNCTION crivline_bump_environment(env uuid, traceparent text, flags_changed boolean)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    row environments%ROWTYPE;
    payload json;
BEGIN
    UPDATE environments
       SET version = version + 1,
           flags_version = CASE WHEN coalesce(flags_changed, true) THEN version + 1
                                ELSE flags_version END,
           updated_at = now()
     WHERE id = env
    RETURNING * INTO row;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'environment % does not exist', env USING ERRCODE = 'no_data_found';
    END IF;
    IF traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$' THEN
        payload := json_build_object(
            'e', row.id, 'v', row.version, 't', row.tenant_id, 'p', row.project_id,
            'at', extract(epoch FROM clock_timestamp()), 'tp', traceparent
        );
    ELSE
        payload := json_build_object(
            'e', row.id, 'v', row.version, 't', row.tenant_id, 'p', row.project_id,
            'at', extract(epoch FROM clock_timestamp())
        );
    END IF;
    PERFORM pg_notify('crivline_changes', payload::text);
    RETURN row.version;
END;
$$;

-- The older forms keep working, as bumps that changed the flag set: a caller that does
-- not say (an older control, a script) moves what SDKs see, as it always did.
CREATE OR REPLACE FUNCTION crivline_bump_environment(env uuid, traceparent text)
RETURNS bigint
LANGUAGE sql AS $$ SELECT crivline_bump_environment(env, traceparent, true) $$;

-- Like the other forms (migrations 0005, 0006): control's role may bump, nobody else.
REVOKE ALL ON FUNCTION crivline_bump_environment(uuid, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION crivline_bump_environment(uuid, text, boolean) TO crivline_control;
