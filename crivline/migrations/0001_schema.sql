-- Crivline central schema. Forward-only: never edit an applied migration, add a new one.
--
-- Tenant -> Project -> Environment; a Flag belongs to a project and has per-environment
-- state in flag_environments. Every tenant-owned row carries tenant_id, and child rows
-- reference their parent through (tenant_id, id) so a row can never point across tenants.
-- environments.version is the replication clock: bumped under the row lock by every
-- committed change to what an edge serves for that environment.

CREATE TABLE tenants (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    key         text        NOT NULL UNIQUE
                            CHECK (key ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE management_tokens (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid        NOT NULL REFERENCES tenants (id),
    token_hash      bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    display_prefix  text        NOT NULL CHECK (length(display_prefix) = 8),
    label           text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
-- Hot path of every control request: live token by hash.
CREATE INDEX management_tokens_live ON management_tokens (token_hash) WHERE revoked_at IS NULL;

CREATE TABLE projects (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    key         text        NOT NULL CHECK (key ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, key),
    UNIQUE (tenant_id, id)
);

CREATE TABLE environments (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL,
    project_id  uuid        NOT NULL,
    key         text        NOT NULL CHECK (key ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    version     bigint      NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, key),
    UNIQUE (tenant_id, id),
    UNIQUE (project_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id)
);
-- Reconciliation reads (id, version) for a whole scope.
CREATE INDEX environments_tenant ON environments (tenant_id, project_id);

CREATE TABLE flags (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid        NOT NULL,
    project_id   uuid        NOT NULL,
    key          text        NOT NULL CHECK (key ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    name         text        NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    description  text        NOT NULL DEFAULT '' CHECK (length(description) <= 4000),
    type         text        NOT NULL
                             CHECK (type IN ('boolean', 'string', 'integer', 'float', 'object')),
    variants     jsonb       NOT NULL CHECK (jsonb_typeof(variants) = 'object'),
    metadata     jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    is_archived  boolean     NOT NULL DEFAULT false,
    revision     integer     NOT NULL DEFAULT 1 CHECK (revision > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, key),
    UNIQUE (tenant_id, id),
    UNIQUE (project_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id)
);
-- The edge snapshot reads only live flags; the dashboard list uses the unique index.
CREATE INDEX flags_live ON flags (project_id) WHERE NOT is_archived;

CREATE TABLE flag_environments (
    tenant_id        uuid        NOT NULL,
    project_id       uuid        NOT NULL,
    flag_id          uuid        NOT NULL,
    environment_id   uuid        NOT NULL,
    state            text        NOT NULL DEFAULT 'DISABLED'
                                 CHECK (state IN ('ENABLED', 'DISABLED')),
    default_variant  text,
    targeting        jsonb,
    revision         integer     NOT NULL DEFAULT 1 CHECK (revision > 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by       text        NOT NULL DEFAULT '',
    PRIMARY KEY (flag_id, environment_id),
    FOREIGN KEY (tenant_id, flag_id) REFERENCES flags (tenant_id, id),
    FOREIGN KEY (tenant_id, environment_id) REFERENCES environments (tenant_id, id),
    FOREIGN KEY (project_id, flag_id) REFERENCES flags (project_id, id),
    FOREIGN KEY (project_id, environment_id) REFERENCES environments (project_id, id)
);
-- The snapshot query: every flag state of one environment.
CREATE INDEX flag_environments_environment ON flag_environments (environment_id);

CREATE TABLE segments (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL,
    project_id  uuid        NOT NULL,
    key         text        NOT NULL CHECK (key ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    definition  jsonb       NOT NULL,
    revision    integer     NOT NULL DEFAULT 1 CHECK (revision > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, key),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id)
);

CREATE TABLE api_keys (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid        NOT NULL,
    project_id      uuid        NOT NULL,
    environment_id  uuid        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('server', 'client')),
    key_hash        bytea       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    display_prefix  text        NOT NULL CHECK (length(display_prefix) = 8),
    label           text        NOT NULL DEFAULT '' CHECK (length(label) <= 200),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    FOREIGN KEY (tenant_id, environment_id) REFERENCES environments (tenant_id, id),
    FOREIGN KEY (project_id, environment_id) REFERENCES environments (project_id, id)
);
-- The edge copies the live keys of an environment; lookups by hash use the unique index.
CREATE INDEX api_keys_live ON api_keys (environment_id) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    project_id   uuid,
    actor        text        NOT NULL,
    action       text        NOT NULL,
    entity_type  text        NOT NULL,
    entity_id    uuid,
    entity_key   text        NOT NULL DEFAULT '',
    before       jsonb,
    after        jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, created_at DESC, id DESC);
CREATE INDEX audit_log_project ON audit_log (project_id, created_at DESC, id DESC)
    WHERE project_id IS NOT NULL;

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- Idempotency-Key replay store for control POSTs (scoped per tenant).
CREATE TABLE idempotency_keys (
    tenant_id        uuid        NOT NULL REFERENCES tenants (id),
    key              text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash     bytea       NOT NULL,
    response_status  integer     NOT NULL,
    response_body    jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

-- The one way to bump an environment's replication clock. Call it inside the write's
-- transaction: the row lock orders concurrent writers, and the notification is only
-- delivered if the transaction commits. Payload: {"e": environment id, "v": version,
-- "t": tenant id, "p": project id, "at": epoch seconds of the change}.
CREATE FUNCTION crivline_bump_environment(env uuid) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    row environments%ROWTYPE;
BEGIN
    UPDATE environments
       SET version = version + 1, updated_at = now()
     WHERE id = env
    RETURNING * INTO row;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'environment % does not exist', env USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM pg_notify('crivline_changes', json_build_object(
        'e', row.id, 'v', row.version, 't', row.tenant_id, 'p', row.project_id,
        'at', extract(epoch FROM clock_timestamp())
    )::text);
    RETURN row.version;
END;
$$;
