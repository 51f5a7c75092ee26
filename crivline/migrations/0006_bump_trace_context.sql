-- A bump can carry the trace context of the write that made it (a W3C traceparent,
-- "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"), so the edges' spans for
-- applying the change join the writer's trace. The notification then has a "tp" key
-- besides {"e", "v", "t", "p", "at"}; without a trace context (NULL, or a value that is
-- not a well-formed traceparent) the payload is exactly what it was before.
CREATE FUNCTION crivline_bump_environment(env uuid, traceparent text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    row environments%ROWTYPE;
    payload json;
BEGIN
    UPDATE environments
       SET version = version + 1, updated_at = now()
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

-- The one-argument form (the CLI's plan changes, the seed) is a bump without a trace.
CREATE OR REPLACE FUNCTION crivline_bump_environment(env uuid) RETURNS bigint
LANGUAGE sql AS $$ SELECT crivline_bump_environment(env, NULL::text) $$;

-- Like the one-argument form (migration 0005): control's role may bump, nobody else.
REVOKE ALL ON FUNCTION crivline_bump_environment(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION crivline_bump_environment(uuid, text) TO crivline_control;
