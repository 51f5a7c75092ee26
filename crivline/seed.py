"""Tenant bootstrap and the demo tenant that ``crivline up`` creates.

Connections need the JSON codecs of :func:`crivline.snapshot.set_json_codecs`.
Every write here follows the control API's rule for writes: one transaction holding
the change, an audit row, and a bump of each affected environment's version (which
notifies the edges on commit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from crivline import tokens
from crivline.errors import Conflict, NotFound
from crivline.plans import FREE_TIER, UNCAPPED_TIER, effective_tier

SYSTEM_ACTOR = "system:bootstrap"
# A bump for a write that changed keys or the plan and no flag (migration 0007): the
# edges learn it, SDKs keep the flag set's version they hold.
BUMP_KEYS_ONLY = "SELECT crivline_bump_environment($1::uuid, NULL::text, false)"


@dataclass(frozen=True, slots=True)
class NewTenant:
    id: str
    key: str
    token: str  # shown once, never stored


@dataclass(slots=True)
class DemoStack:
    tenant: str
    token: str
    project: str
    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # env -> kind -> key


async def audit(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    project_id: str | None,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str | None,
    entity_key: str,
    before: Any,
    after: Any,
) -> None:
    await conn.execute(
        """INSERT INTO audit_log (tenant_id, project_id, actor, action, entity_type,
                                  entity_id, entity_key, before, after)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb)""",
        tenant_id,
        project_id,
        actor,
        action,
        entity_type,
        entity_id,
        entity_key,
        before,
        after,
    )


@dataclass(frozen=True, slots=True)
class IssuedToken:
    id: str
    secret: str  # shown once; only its SHA-256 is stored


async def issue_token(
    conn: asyncpg.Connection,
    tenant_id: str,
    label: str,
    *,
    scope: str = "admin",
    actor: str = SYSTEM_ACTOR,
) -> IssuedToken:
    """A new management token of ``scope`` (read, write, admin), audited; hash only."""
    token = tokens.generate(tokens.SecretKind.MANAGEMENT)
    token_id = await conn.fetchval(
        """INSERT INTO management_tokens (tenant_id, token_hash, display_prefix, label, scope)
           VALUES ($1, $2, $3, $4, $5) RETURNING id::text""",
        tenant_id,
        tokens.digest(token),
        tokens.display_prefix(token),
        label,
        scope,
    )
    await audit(
        conn, tenant_id=tenant_id, project_id=None, actor=actor, action="management_token.create",
        entity_type="management_token", entity_id=token_id, entity_key=label,
        before=None, after={"id": token_id, "label": label, "scope": scope,
                            "display_prefix": tokens.display_prefix(token)},
    )  # fmt: skip
    return IssuedToken(token_id, token)


async def issue_management_token(
    conn: asyncpg.Connection, tenant_id: str, label: str, actor: str = SYSTEM_ACTOR
) -> str:
    """An ``admin`` token (what ``crivline tenant create`` hands out)."""
    return (await issue_token(conn, tenant_id, label, actor=actor)).secret


async def create_tenant(
    conn: asyncpg.Connection, key: str, name: str | None = None, plan: str = FREE_TIER
) -> NewTenant:
    """A new tenant on ``plan`` with its first management token. Raises Conflict if the
    key is taken, NotFound if the plan does not exist."""
    async with conn.transaction():
        try:
            tenant_id = await conn.fetchval(
                "INSERT INTO tenants (key, name) VALUES ($1, $2) RETURNING id::text",
                key,
                name or key,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a tenant with key {key!r} already exists") from None
        except asyncpg.CheckViolationError:
            raise Conflict(
                f"tenant key {key!r} is not valid: use 1-63 lowercase letters, digits"
                " and dashes, starting with a letter or digit"
            ) from None
        await audit(
            conn, tenant_id=tenant_id, project_id=None, actor=SYSTEM_ACTOR,
            action="tenant.create", entity_type="tenant", entity_id=tenant_id,
            entity_key=key, before=None, after={"id": tenant_id, "key": key, "name": name or key},
        )  # fmt: skip
        token = await issue_management_token(conn, tenant_id, "bootstrap")
        await set_plan(conn, key, plan)
    return NewTenant(tenant_id, key, token)


async def issue_edge_credential(conn: asyncpg.Connection, edge_id: str) -> str:
    """A new credential with which ``edge_id``'s syncd reports usage; returned once."""
    if not 1 <= len(edge_id) <= 255 or any(c.isspace() for c in edge_id):
        raise Conflict(f"edge id {edge_id!r} is not valid: 1-255 characters, no spaces")
    secret = tokens.generate(tokens.SecretKind.EDGE)
    await conn.execute(
        """INSERT INTO edge_credentials (edge_id, token_hash, display_prefix)
           VALUES ($1, $2, $3)""",
        edge_id,
        tokens.digest(secret),
        tokens.display_prefix(secret),
    )
    return secret


@dataclass(frozen=True, slots=True)
class PlanChange:
    tenant: str
    before: str  # the tier the tenant had
    after: str  # the tier it has now

    @property
    def changed(self) -> bool:
        return self.before != self.after


async def set_plan(
    conn: asyncpg.Connection, tenant_key: str, tier: str, actor: str = SYSTEM_ACTOR
) -> PlanChange:
    """Put a tenant on ``tier`` by hand, without Stripe, in one transaction: the
    subscription row, an audit row and — when the tenant's plan changes — a bump of
    every environment of the tenant, so the edges enforce the new limits.

    An existing Stripe subscription keeps its ids: the next Stripe event for it applies
    as usual (and decides the plan again).
    """
    async with conn.transaction():
        known = [r["tier"] for r in await conn.fetch("SELECT tier FROM plans ORDER BY tier")]
        if tier not in known:
            raise NotFound(f"no plan {tier!r} (plans: {', '.join(known)})")
        tenant_id = await conn.fetchval(
            "SELECT id::text FROM tenants WHERE key = $1 FOR NO KEY UPDATE", tenant_key
        )
        if tenant_id is None:
            raise NotFound(f"no tenant {tenant_key!r}")
        now = datetime.now(UTC)
        before = await conn.fetchrow(
            "SELECT plan_tier, status, current_period_end FROM subscriptions"
            " WHERE tenant_id = $1 FOR UPDATE",
            tenant_id,
        )
        had = (
            FREE_TIER
            if before is None
            else effective_tier(
                before["plan_tier"], before["status"], before["current_period_end"], now
            )
        )
        if had == tier and (before is None or before["plan_tier"] == tier):
            return PlanChange(tenant_key, had, tier)
        await conn.execute(
            """INSERT INTO subscriptions (tenant_id, plan_tier, status) VALUES ($1, $2, 'active')
               ON CONFLICT (tenant_id) DO UPDATE
                  SET plan_tier = EXCLUDED.plan_tier, status = 'active', updated_at = now()""",
            tenant_id,
            tier,
        )
        await audit(
            conn, tenant_id=tenant_id, project_id=None, actor=actor, action="plan.set",
            entity_type="subscription", entity_id=None, entity_key=tier,
            before={"tier": had}, after={"tier": tier, "source": "manual"},
        )  # fmt: skip
        if had != tier:
            envs = await conn.fetch(
                "SELECT id FROM environments WHERE tenant_id = $1 AND archived_at IS NULL"
                " ORDER BY id",
                tenant_id,
            )
            for env in envs:  # in id order, like every writer: no deadlock between them
                # The limits the edges enforce change; the flag set does not.
                await conn.execute(BUMP_KEYS_ONLY, env["id"])
    return PlanChange(tenant_key, had, tier)


DEMO_FLAGS: list[dict[str, Any]] = [
    {
        "key": "new-checkout", "type": "boolean", "name": "New checkout flow",
        "variants": {"on": True, "off": False}, "default": "off",
        "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", "off"]},
    },
    {
        "key": "banner-text", "type": "string", "name": "Home page banner",
        "variants": {"winter": "Winter sale!", "plain": "Welcome"}, "default": "plain",
        "targeting": None,
    },
    {
        "key": "max-items", "type": "integer", "name": "Items per page",
        "variants": {"small": 10, "large": 50}, "default": "small",
        "targeting": {"if": [{"in": [{"var": "plan"}, ["pro", "enterprise"]]}, "large", "small"]},
    },
    {
        "key": "discount-rate", "type": "float", "name": "Discount rate",
        "variants": {"none": 0.0, "some": 0.15}, "default": "none", "targeting": None,
    },
    {
        "key": "theme", "type": "object", "name": "Theme",
        "variants": {"light": {"bg": "#fff", "fg": "#111"}, "dark": {"bg": "#111", "fg": "#eee"}},
        "default": "light", "targeting": None,
    },
    {
        "key": "search-v2", "type": "boolean", "name": "Search v2 rollout",
        "variants": {"on": True, "off": False}, "default": "off",
        "targeting": {"fractional": [["on", 25], ["off", 75]]},
    },
]  # fmt: skip


async def seed_demo(conn: asyncpg.Connection, tenant_key: str = "demo") -> DemoStack:
    """The demo tenant: a project with development and production, flags and keys."""
    async with conn.transaction():  # all of it or nothing: a failed seed can simply be rerun
        return await _seed_demo(conn, tenant_key)


async def _seed_demo(conn: asyncpg.Connection, tenant_key: str) -> DemoStack:
    # Uncapped, so trying the stack and benchmarking it never meet the free tier's quota.
    tenant = await create_tenant(conn, tenant_key, "Demo tenant", plan=UNCAPPED_TIER)
    demo = DemoStack(tenant=tenant.key, token=tenant.token, project="demo-app")
    actor = SYSTEM_ACTOR
    project_id = await conn.fetchval(
        "INSERT INTO projects (tenant_id, key, name) VALUES ($1, $2, $3) RETURNING id::text",
        tenant.id,
        demo.project,
        "Demo app",
    )
    await audit(conn, tenant_id=tenant.id, project_id=project_id, actor=actor,
                action="project.create", entity_type="project", entity_id=project_id,
                entity_key=demo.project, before=None, after={"key": demo.project})  # fmt: skip
    env_ids: dict[str, str] = {}
    for env in ("development", "production"):
        env_ids[env] = await conn.fetchval(
            """INSERT INTO environments (tenant_id, project_id, key, name)
               VALUES ($1, $2, $3, $4) RETURNING id::text""",
            tenant.id,
            project_id,
            env,
            env.capitalize(),
        )
        await audit(conn, tenant_id=tenant.id, project_id=project_id, actor=actor,
                    action="environment.create", entity_type="environment",
                    entity_id=env_ids[env], entity_key=env, before=None,
                    after={"key": env})  # fmt: skip
    for flag in DEMO_FLAGS:
        flag_id = await conn.fetchval(
            """INSERT INTO flags (tenant_id, project_id, key, name, type, variants)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING id::text""",
            tenant.id, project_id, flag["key"], flag["name"], flag["type"],
            flag["variants"],
        )  # fmt: skip
        for env, env_id in env_ids.items():
            state = "ENABLED" if env == "development" else "DISABLED"
            await conn.execute(
                """INSERT INTO flag_environments (tenant_id, project_id, flag_id,
                       environment_id, state, default_variant, targeting, updated_by)
                   VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)""",
                tenant.id, project_id, flag_id, env_id, state, flag["default"],
                flag["targeting"],
                actor,
            )  # fmt: skip
        await audit(conn, tenant_id=tenant.id, project_id=project_id, actor=actor,
                    action="flag.create", entity_type="flag", entity_id=flag_id,
                    entity_key=flag["key"], before=None, after=flag)  # fmt: skip
    for env, env_id in env_ids.items():
        demo.keys[env] = {
            kind.value: await create_api_key(
                conn, tenant.id, project_id, env_id, kind, f"demo {kind.value} key", actor
            )
            for kind in (tokens.SecretKind.SERVER, tokens.SecretKind.CLIENT)
        }
    for env_id in env_ids.values():
        await conn.execute("SELECT crivline_bump_environment($1)", env_id)
    return demo


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    id: str
    secret: str  # shown once, never stored
    display_prefix: str


async def issue_api_key(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    project_id: str,
    environment_id: str,
    kind: tokens.SecretKind,
    label: str,
    actor: str,
    expires_at: datetime | None = None,
) -> IssuedApiKey:
    """A new API key, audited. Only its hash is stored; the secret is returned once.

    The control API and the demo seed both create keys through here. The caller bumps
    the environment's version in the same transaction.
    """
    secret = tokens.generate(kind)
    prefix = tokens.display_prefix(secret)
    key_id = await conn.fetchval(
        """INSERT INTO api_keys (tenant_id, project_id, environment_id, kind,
               key_hash, display_prefix, label, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id::text""",
        tenant_id, project_id, environment_id, kind.value, tokens.digest(secret),
        prefix, label, expires_at,
    )  # fmt: skip
    await audit(
        conn, tenant_id=tenant_id, project_id=project_id, actor=actor, action="api_key.create",
        entity_type="api_key", entity_id=key_id, entity_key=label, before=None,
        after={"id": key_id, "environmentId": environment_id, "kind": kind.value,
               "label": label, "displayPrefix": prefix, "expiresAt": expires_at},
    )  # fmt: skip
    return IssuedApiKey(key_id, secret, prefix)


async def create_api_key(
    conn: asyncpg.Connection,
    tenant_id: str,
    project_id: str,
    environment_id: str,
    kind: tokens.SecretKind,
    label: str,
    actor: str,
) -> str:
    """A new API key (audited); returns the raw key, which is never stored.

    The caller bumps the environment's version in the same transaction.
    """
    issued = await issue_api_key(
        conn, tenant_id=tenant_id, project_id=project_id, environment_id=environment_id,
        kind=kind, label=label, actor=actor,
    )  # fmt: skip
    return issued.secret


async def reissue_demo_secrets(conn: asyncpg.Connection, tenant_key: str = "demo") -> DemoStack:
    """New demo token and keys for an existing demo tenant whose secrets were lost."""
    async with conn.transaction():
        tenant_id = await conn.fetchval("SELECT id::text FROM tenants WHERE key = $1", tenant_key)
        project = await conn.fetchrow(
            "SELECT id::text AS id, key FROM projects WHERE tenant_id = $1 AND archived_at IS NULL"
            " ORDER BY created_at"
            " LIMIT 1",
            tenant_id,
        )
        token = await issue_management_token(conn, tenant_id, "bootstrap (reissued)")
        demo = DemoStack(tenant=tenant_key, token=token, project=project["key"] if project else "")
        if project is None:
            return demo
        envs = await conn.fetch(
            "SELECT id::text AS id, key FROM environments WHERE project_id = $1"
            " AND archived_at IS NULL",
            project["id"],
        )
        for env in envs:
            demo.keys[env["key"]] = {
                kind.value: await create_api_key(
                    conn,
                    tenant_id,
                    project["id"],
                    env["id"],
                    kind,
                    f"demo {kind.value} key (reissued)",
                    SYSTEM_ACTOR,
                )
                for kind in (tokens.SecretKind.SERVER, tokens.SecretKind.CLIENT)
            }
            await conn.execute(BUMP_KEYS_ONLY, env["id"])
    return demo
