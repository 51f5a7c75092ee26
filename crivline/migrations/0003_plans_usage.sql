-- Plans, subscriptions and usage: what a tenant may do, who pays for it, what it did.
--
-- plans holds the limits of each tier (NULL = no limit). A tenant's tier comes from its
-- subscriptions row (at most one per tenant): written by Stripe webhooks, or by an
-- operator (`crivline tenant plan`), in which case the stripe_* columns are NULL. No
-- row, or a subscription that no longer pays (see crivline/plans.py), is the free tier.
-- usage is written far more than it is read: one row per tenant, environment, UTC day
-- and kind, added to by upsert, and only its primary key as an index.

CREATE TABLE plans (
    tier                      text    PRIMARY KEY CHECK (tier ~ '^[a-z][a-z0-9_-]{0,31}$'),
    name                      text    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    evaluations_per_day       bigint  CHECK (evaluations_per_day >= 0),
    streams_per_environment   integer CHECK (streams_per_environment >= 0),
    flags_per_project         integer CHECK (flags_per_project >= 0),
    environments_per_project  integer CHECK (environments_per_project >= 0)
);

INSERT INTO plans (tier, name, evaluations_per_day, streams_per_environment,
                   flags_per_project, environments_per_project) VALUES
    ('free',       'Free',       1000,    10,   50,   3),
    ('pro',        'Pro',        1000000, 1000, 500,  10),
    ('enterprise', 'Enterprise', NULL,    NULL, NULL, NULL);

CREATE TABLE subscriptions (
    id                      uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id               uuid        NOT NULL UNIQUE REFERENCES tenants (id),
    plan_tier               text        NOT NULL REFERENCES plans (tier),
    status                  text        NOT NULL CHECK (status IN (
                                            'incomplete', 'incomplete_expired', 'trialing',
                                            'active', 'past_due', 'canceled', 'unpaid',
                                            'paused')),
    stripe_customer_id      text,
    stripe_subscription_id  text        UNIQUE,
    stripe_price_id         text,
    current_period_start    timestamptz,
    current_period_end      timestamptz,
    cancel_at_period_end    boolean     NOT NULL DEFAULT false,
    -- The newest Stripe event applied: an older one (Stripe retries for days and does
    -- not keep order) never overwrites it.
    last_event_id           text,
    last_event_created      timestamptz,
    last_event_type         text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Every Stripe event id control has taken in: a redelivery is acknowledged and ignored.
CREATE TABLE stripe_events (
    id           text        PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
    type         text        NOT NULL,
    created      timestamptz NOT NULL,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    outcome      text        NOT NULL CHECK (outcome IN ('applied', 'stale')),
    received_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE usage (
    tenant_id       uuid    NOT NULL,
    environment_id  uuid    NOT NULL,
    day             date    NOT NULL,
    kind            text    NOT NULL CHECK (kind IN (
                                'poll', 'poll_not_modified', 'ofrep_single', 'ofrep_bulk',
                                'stream')),
    count           bigint  NOT NULL CHECK (count >= 0),
    -- Tenant first, then day: "today's total" and "this date range" are prefix scans.
    PRIMARY KEY (tenant_id, day, environment_id, kind),
    FOREIGN KEY (tenant_id, environment_id) REFERENCES environments (tenant_id, id)
);

-- Edge credentials: an edge's syncd reports usage to control's ingestion route with
-- one (crv_edg_…, only its SHA-256 kept), so control stays the only writer of this
-- database and an edge holds no credential for it. The edge id comes from here, not from
-- what the edge says.
CREATE TABLE edge_credentials (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    edge_id         text        NOT NULL CHECK (length(edge_id) BETWEEN 1 AND 255),
    token_hash      bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    display_prefix  text        NOT NULL CHECK (length(display_prefix) = 8),
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

-- Usage batches already added, by the edge that sent them and its sequence number: a
-- batch retried after a lost answer is recognised and not counted again.
CREATE TABLE usage_batches (
    edge_id      text        NOT NULL CHECK (length(edge_id) BETWEEN 1 AND 255),
    sequence     bigint      NOT NULL CHECK (sequence > 0),
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (edge_id, sequence)
);
