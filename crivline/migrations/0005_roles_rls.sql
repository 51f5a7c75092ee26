-- Least-privilege roles, row-level security and scoped management tokens.
--
-- The role that runs the migrations owns every table; no part of the system connects as
-- it. Each part connects as a login role that is a member of one of these group roles
-- (NOLOGIN here; `crivline migrate --roles` gives a part's login role its password and
-- membership):
--
--   crivline_control  reads and writes tenant tables, only through the RLS policies on
--                     the per-transaction setting crivline.tenant_id; INSERT only on
--                     audit_log; a few narrow SECURITY DEFINER functions for what is not
--                     tenant-authenticated (token lookup, Stripe webhook, edge usage).
--   crivline_syncd    SELECT on what snapshots, versions, keys and plans need, across
--                     tenants through its own read policies; LISTEN. No writes.
--   crivline_relay    LISTEN only (CONNECT on the database, nothing on any table).
--
-- None of them owns a table, is a superuser or has BYPASSRLS. Every tenant-owned table
-- has FORCE ROW LEVEL SECURITY: the owner's own sessions are checked too (its policy
-- lets it see everything only while no tenant is set, which is how the operator's
-- commands and the SECURITY DEFINER functions run).

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['crivline_control', 'crivline_syncd', 'crivline_relay'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            BEGIN  -- roles are per cluster: another database's migration may win the race
                EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB '
                               'NOCREATEROLE', name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        ELSE
            EXECUTE format('ALTER ROLE %I NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE',
                           name);
        END IF;
    END LOOP;
END;
$$;

-- Nothing for anyone by default: the parts get exactly the grants below.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO crivline_control, crivline_syncd, '
                   'crivline_relay', current_database());
END;
$$;
GRANT USAGE ON SCHEMA public TO crivline_control, crivline_syncd, crivline_relay;

-- Scoped management tokens: read (GETs), write (today's routes), admin (tokens, keys).
-- Tokens issued before scopes existed could do everything: they stay admin.
ALTER TABLE management_tokens
    ADD COLUMN scope text NOT NULL DEFAULT 'admin' CHECK (scope IN ('read', 'write', 'admin'));
ALTER TABLE management_tokens ALTER COLUMN scope SET DEFAULT 'read';
ALTER TABLE management_tokens
    ADD CONSTRAINT management_tokens_label_length CHECK (length(label) <= 200);

-- The tenant of the current transaction, or NULL when none is set.
CREATE FUNCTION crivline_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('crivline.tenant_id', true), '')::uuid
$$;

-- Row-level security on every tenant-owned table.
DO $$
DECLARE
    t text;
    tenant_column text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'tenants', 'management_tokens', 'projects', 'environments', 'flags',
        'flag_environments', 'segments', 'api_keys', 'audit_log', 'idempotency_keys',
        'subscriptions', 'stripe_events', 'usage'
    ] LOOP
        tenant_column := CASE WHEN t = 'tenants' THEN 'id' ELSE 'tenant_id' END;
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        -- The owner: every row while no tenant is set (migrations, operator commands,
        -- the SECURITY DEFINER functions below); only that tenant's rows once one is.
        EXECUTE format(
            'CREATE POLICY owner_unscoped ON %I TO %I '
            'USING (crivline_tenant() IS NULL OR %I = crivline_tenant()) '
            'WITH CHECK (crivline_tenant() IS NULL OR %I = crivline_tenant())',
            t, current_user, tenant_column, tenant_column);
        -- control: the current transaction's tenant, and nothing without one.
        EXECUTE format(
            'CREATE POLICY control_tenant ON %I TO crivline_control '
            'USING (%I = crivline_tenant()) WITH CHECK (%I = crivline_tenant())',
            t, tenant_column, tenant_column);
    END LOOP;
    -- syncd: reads across tenants what an edge serves, explicitly (no BYPASSRLS).
    FOREACH t IN ARRAY ARRAY[
        'tenants', 'projects', 'environments', 'flags', 'flag_environments', 'segments',
        'api_keys', 'subscriptions'
    ] LOOP
        EXECUTE format('CREATE POLICY syncd_read ON %I FOR SELECT TO crivline_syncd USING (true)',
                       t);
    END LOOP;
END;
$$;

-- control's grants. audit_log: INSERT and SELECT only (the trigger of 0001 refuses
-- UPDATE and DELETE even to the owner); management_tokens: no DELETE (revoked, kept).
GRANT SELECT ON tenants, plans, edge_credentials, schema_migrations TO crivline_control;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON projects, environments, flags, flag_environments, segments, api_keys,
       idempotency_keys, subscriptions, stripe_events, usage
    TO crivline_control;
GRANT SELECT, INSERT ON audit_log, usage_batches TO crivline_control;
GRANT SELECT, INSERT, UPDATE (revoked_at) ON management_tokens TO crivline_control;

-- syncd's grants: what snapshots, versions, keys and plans read.
GRANT SELECT
    ON tenants, projects, environments, flags, flag_environments, segments, api_keys,
       subscriptions, plans, schema_migrations
    TO crivline_syncd;

-- What control does before it knows a tenant, or across tenants, each as narrow as it can
-- be. They run as the owner with no tenant set; control alone may call them.

-- Authentication: the live management token with this hash.
CREATE FUNCTION crivline_management_token(token_hash bytea)
RETURNS TABLE (id uuid, tenant_id uuid, display_prefix text, label text, scope text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT m.id, m.tenant_id, m.display_prefix, m.label, m.scope
      FROM management_tokens m
     WHERE m.token_hash = crivline_management_token.token_hash AND m.revoked_at IS NULL
$$;

-- The Stripe webhook: the tenant a subscription's metadata names (by key).
CREATE FUNCTION crivline_tenant_by_key(tenant_key text) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT t.id FROM tenants t WHERE t.key = tenant_key
$$;

-- Edge usage: add a batch's counts (the tenant of each environment comes from the
-- environment, not from the edge), rows in key order so concurrent batches queue.
CREATE FUNCTION crivline_add_usage(envs uuid[], days date[], kinds text[], counts bigint[])
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO usage AS u (tenant_id, environment_id, day, kind, count)
    SELECT e.tenant_id, e.id, c.day, c.kind, sum(c.count)
      FROM unnest(envs, days, kinds, counts) AS c(env, day, kind, count)
      JOIN environments e ON e.id = c.env
     GROUP BY e.tenant_id, c.day, e.id, c.kind
     ORDER BY e.tenant_id, c.day, e.id, c.kind
    ON CONFLICT (tenant_id, day, environment_id, kind)
    DO UPDATE SET count = u.count + EXCLUDED.count
$$;

-- Edge usage: today's evaluation totals of the tenants a batch asks about.
CREATE FUNCTION crivline_usage_totals(tenants uuid[], on_day date, kinds text[])
RETURNS TABLE (tenant_id uuid, total bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT u.tenant_id, sum(u.count)::bigint
      FROM usage u
     WHERE u.tenant_id = ANY(tenants) AND u.day = on_day AND u.kind = ANY(kinds)
     GROUP BY u.tenant_id
$$;

-- Idempotency keys past their retention, across tenants; returns how many went.
CREATE FUNCTION crivline_purge_idempotency_keys(retention interval) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH gone AS (
        DELETE FROM idempotency_keys WHERE created_at < now() - retention RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

-- Housekeeping: the redelivery ledgers past their retention, across tenants.
CREATE FUNCTION crivline_purge_ledgers(retention interval)
RETURNS TABLE (usage_batches bigint, stripe_events bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH batches AS (
        DELETE FROM usage_batches WHERE received_at < now() - retention RETURNING 1
    ), events AS (
        DELETE FROM stripe_events WHERE received_at < now() - retention RETURNING 1
    )
    SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM events)
$$;

-- Housekeeping: the tenants whose subscription period ended since its last change (the
-- change itself is then made with that tenant set, under its policies).
CREATE FUNCTION crivline_ended_periods(statuses text[]) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT s.tenant_id FROM subscriptions s
     WHERE s.status = ANY(statuses) AND s.current_period_end <= now()
       AND s.updated_at < s.current_period_end
     ORDER BY s.tenant_id
$$;

REVOKE ALL ON FUNCTION crivline_management_token(bytea), crivline_tenant_by_key(text),
    crivline_add_usage(uuid[], date[], text[], bigint[]),
    crivline_usage_totals(uuid[], date, text[]),
    crivline_purge_idempotency_keys(interval), crivline_purge_ledgers(interval),
    crivline_ended_periods(text[]),
    crivline_bump_environment(uuid)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION crivline_management_token(bytea), crivline_tenant_by_key(text),
    crivline_add_usage(uuid[], date[], text[], bigint[]),
    crivline_usage_totals(uuid[], date, text[]),
    crivline_purge_idempotency_keys(interval), crivline_purge_ledgers(interval),
    crivline_ended_periods(text[]),
    crivline_bump_environment(uuid)
    TO crivline_control;
