"""Flags, and their state in each environment.

Lock order, shared by every writer so that concurrent writes queue instead of
deadlocking: project row → flag rows (in key order) → flag_environment rows → segment
rows → environment rows (by the version bump, in id order, last).

The public operations check, write and bump; the primitives below them (``insert``,
``rewrite``, ``write_state``) write and audit one change and leave the bump to their
caller, so an import can make many changes and bump each environment once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from control.http import Precondition
from control.store.plans import PlanStore
from control.store.projects import ProjectStore
from control.store.records import Environment, Flag, FlagEnvironment, Project, same_json
from control.store.scope import TenantScope
from control.store.segments import SegmentStore
from control.validation import flag_problems, join_path, refuse
from crivline.errors import Conflict, NotFound

FLAG_COLUMNS = """id, project_id, key, name, description, type, variants, metadata,
                   is_archived, revision, created_at, updated_at"""
_FLAG = f"SELECT {FLAG_COLUMNS} FROM flags"
_STATE_COLUMNS = """fe.flag_id, f.key AS flag_key, fe.environment_id,
    e.key AS environment_key, fe.state, fe.default_variant, fe.targeting, fe.revision,
    fe.updated_at, fe.updated_by"""
_STATES = f"""
SELECT {_STATE_COLUMNS}
  FROM flag_environments fe
  JOIN flags f ON f.tenant_id = fe.tenant_id AND f.id = fe.flag_id
  JOIN environments e ON e.tenant_id = fe.tenant_id AND e.id = fe.environment_id
 WHERE fe.tenant_id = $1 AND e.archived_at IS NULL"""

ARCHIVED_FILTERS = {"false": "AND NOT is_archived", "true": "AND is_archived", "all": ""}


def _targeting(value: Any) -> Any:
    """``{}`` and null both mean "no targeting"; store one of them (null)."""
    return None if value == {} else value


class FlagStore:
    def __init__(self, scope: TenantScope, projects: ProjectStore, segments: SegmentStore) -> None:
        self.scope = scope
        self.conn = scope.conn
        self.tenant_id = scope.tenant_id
        self.projects = projects
        self.segments = segments

    # -- reading -------------------------------------------------------------------------

    async def states(
        self, flag_ids: list[str], lock: str = ""
    ) -> dict[str, dict[str, FlagEnvironment]]:
        """Each flag's state per environment key (``lock``: e.g. ``FOR UPDATE OF fe``)."""
        by_flag: dict[str, dict[str, FlagEnvironment]] = {fid: {} for fid in flag_ids}
        if flag_ids:
            rows = await self.conn.fetch(
                f"{_STATES} AND fe.flag_id = ANY($2::uuid[]) ORDER BY f.key, e.key {lock}",
                self.tenant_id,
                flag_ids,
            )
            for row in rows:
                fe = FlagEnvironment.from_row(row)
                by_flag[fe.flag_id][fe.environment_key] = fe
        return by_flag

    async def all(self, project_key: str, archived: str = "false") -> list[Flag]:
        project = await self.projects.get(project_key)
        rows = await self.conn.fetch(
            f"""{_FLAG} WHERE tenant_id = $1 AND project_id = $2 {ARCHIVED_FILTERS[archived]}
                ORDER BY key""",
            self.tenant_id,
            project.id,
        )
        states = await self.states([str(r["id"]) for r in rows])
        return [Flag.from_row(r, states[str(r["id"])]) for r in rows]

    async def _flag(self, project: Project, key: str, lock: str = "") -> Flag:
        row = await self.conn.fetchrow(
            f"{_FLAG} WHERE tenant_id = $1 AND project_id = $2 AND key = $3 {lock}",
            self.tenant_id,
            project.id,
            key,
        )
        if row is None:
            raise NotFound(f"no flag {key!r} in project {project.key!r}")
        return await self._with_states(Flag.from_row(row))

    async def _with_states(self, flag: Flag) -> Flag:
        return flag.with_environments((await self.states([flag.id]))[flag.id])

    async def get(self, project_key: str, key: str) -> Flag:
        return await self._flag(await self.projects.get(project_key), key)

    async def _state(self, flag: Flag, env: Environment, lock: str = "") -> FlagEnvironment | None:
        row = await self.conn.fetchrow(
            f"{_STATES} AND fe.flag_id = $2 AND fe.environment_id = $3 {lock}",
            self.tenant_id,
            flag.id,
            env.id,
        )
        return None if row is None else FlagEnvironment.from_row(row)

    async def get_environment(
        self, project_key: str, flag_key: str, env_key: str
    ) -> tuple[FlagEnvironment, int]:
        """The flag's state in one environment, and that environment's version."""
        project = await self.projects.get(project_key)
        flag = await self._flag(project, flag_key)
        env = await self.projects.environment(project, env_key)
        state = await self._state(flag, env)
        if state is None:
            raise NotFound(f"flag {flag_key!r} has no state in {env_key!r}")
        return state, env.version

    # -- public writes -------------------------------------------------------------------

    async def create(self, project_key: str, body: Mapping[str, Any]) -> Flag:
        """A new flag, DISABLED in every environment with the given default variant.

        Holds the project row FOR SHARE, so an environment created concurrently (which
        takes it exclusively) either sees this flag or is seen by it.
        """
        project = await self.projects.get(project_key, lock="FOR SHARE")
        await PlanStore(self.scope).check_flag_room(project, 1, datetime.now(UTC))
        key, flag_type, variants = body["key"], body["type"], body["variants"]
        metadata, default_variant = body.get("metadata") or {}, body.get("defaultVariant")
        refuse(
            flag_problems(
                key,
                flag_type=flag_type,
                variants=variants,
                metadata=metadata,
                default_variant=default_variant,
            ),
            "the flag",
        )
        flag = await self.insert(
            project,
            key=key,
            flag_type=flag_type,
            variants=variants,
            metadata=metadata,
            default_variant=default_variant,
            name=body.get("name", ""),
            description=body.get("description", ""),
        )
        await self.scope.bump(await self._environment_ids(project))
        return flag

    async def update(
        self,
        project_key: str,
        key: str,
        changes: Mapping[str, Any],
        precondition: Precondition | None,
    ) -> Flag:
        """Apply a partial update of name, description, variants and metadata.

        The new variants must still serve every environment: each one's default variant
        and the variants its targeting names must remain.
        """
        project = await self.projects.get(project_key)
        current = await self._flag(project, key, "FOR NO KEY UPDATE")
        if precondition is not None:
            precondition.check(current.revision, f"flag {key!r}")
        fields = {
            "name": current.name,
            "description": current.description,
            "variants": dict(current.variants),
            "metadata": dict(current.metadata),
        }
        wanted = {**fields, **changes}
        wanted["variants"] = stored_variants(current.type, wanted["variants"])
        if same_json(wanted, fields):
            return current  # nothing to change: no revision, no audit, no bump
        served = not same_json(
            [wanted["variants"], wanted["metadata"]], [fields["variants"], fields["metadata"]]
        )
        if served:
            await self._check_environments(project, current, wanted["variants"], wanted["metadata"])
        after = await self.rewrite(project, current, **wanted)
        # Name and description are not in any flag set: the edge has nothing to learn,
        # so no environment moves (no poller refetches the same bytes, no empty patch).
        if served:
            await self.scope.bump(await self._environment_ids(project))
        return after

    async def set_archived(
        self, project_key: str, key: str, archived: bool, precondition: Precondition | None
    ) -> Flag:
        """Archive a flag (it leaves every environment's flag set) or restore it."""
        project = await self.projects.get(project_key)
        current = await self._flag(project, key, "FOR NO KEY UPDATE")
        if precondition is not None:
            precondition.check(current.revision, f"flag {key!r}")
        if current.archived == archived:
            return current  # already so: nothing happens, and that is not an error
        if not archived:  # back to the edge: it must still be servable everywhere
            await PlanStore(self.scope).check_flag_room(project, 1, datetime.now(UTC))
            await self._check_environments(project, current, current.variants, current.metadata)
        after = await self.rewrite(project, current, archived=archived)
        await self.scope.bump(await self._environment_ids(project))
        return after

    async def put_environment(
        self,
        project_key: str,
        flag_key: str,
        env_key: str,
        body: Mapping[str, Any],
        precondition: Precondition | None,
    ) -> tuple[FlagEnvironment, int]:
        """Replace the flag's state in one environment; returns it and the env version."""
        project = await self.projects.get(project_key)
        flag = await self._flag(project, flag_key, "FOR SHARE")  # its variants hold still
        env = await self.projects.environment(project, env_key)
        current = await self._state(flag, env, "FOR UPDATE OF fe")
        if current is None:
            raise NotFound(f"flag {flag_key!r} has no state in {env_key!r}")
        if precondition is not None:
            precondition.check(current.revision, f"flag {flag_key!r} in {env_key!r}")
        state, targeting = body["state"], _targeting(body.get("targeting"))
        default_variant = body.get("defaultVariant")
        if current.served_equal(state, default_variant, targeting):
            return current, env.version
        # FOR SHARE: deleting a segment we name waits for us, then sees our $ref.
        segments = await self.segments.definitions(project, lock="FOR SHARE")
        refuse(
            flag_problems(
                flag_key,
                flag_type=flag.type,
                variants=flag.variants,
                metadata=flag.metadata,
                state=state,
                default_variant=default_variant,
                targeting=targeting,
                segments=segments,
            ),
            "this flag state",
        )
        after = await self.write_state(
            project, flag, env, current, state, default_variant, targeting
        )
        versions = await self.scope.bump([env.id])
        return after, versions[env.id]

    async def _check_environments(
        self, project: Project, flag: Flag, variants: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        problems = flag_problems(
            flag.key, flag_type=flag.type, variants=variants, metadata=metadata
        )
        if not problems:
            segments = await self.segments.definitions(project)
            for env_key, fe in flag.environments.items():
                problems += flag_problems(
                    flag.key,
                    flag_type=flag.type,
                    variants=variants,
                    metadata=metadata,
                    state=fe.state,
                    default_variant=fe.default_variant,
                    targeting=fe.targeting,
                    segments=segments,
                    prefix=join_path("environments", env_key),
                )
        refuse(problems, f"flag {flag.key!r} with these changes")

    async def _environment_ids(self, project: Project) -> list[str]:
        return [env.id for env in await self.projects.environments(project)]

    # -- primitives: write and audit one change, no bump ---------------------------------

    async def insert(
        self,
        project: Project,
        *,
        key: str,
        flag_type: str,
        variants: Mapping[str, Any],
        metadata: Mapping[str, Any],
        default_variant: str | None,
        name: str = "",
        description: str = "",
        states: Mapping[str, tuple[str, Any]] | None = None,
    ) -> Flag:
        """A new flag with a state in every environment: DISABLED unless ``states`` maps
        the environment's id to ``(state, targeting)``."""
        row = await self.conn.fetchrow(
            f"""INSERT INTO flags (tenant_id, project_id, key, name, description, type,
                                   variants, metadata)
                VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)
                ON CONFLICT (project_id, key) DO NOTHING RETURNING {FLAG_COLUMNS}""",
            self.tenant_id,
            project.id,
            key,
            name,
            description,
            flag_type,
            stored_variants(flag_type, variants),
            metadata,
        )
        if row is None:  # archived flags keep their key too
            raise Conflict(
                f"a flag with key {key!r} already exists in project {project.key!r}"
                " (if it is archived, restore it instead)"
            )
        flag = Flag.from_row(row)
        given = states or {}
        await self.conn.executemany(
            """INSERT INTO flag_environments (tenant_id, project_id, flag_id, environment_id,
                                              state, default_variant, targeting, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)""",
            [
                (
                    self.tenant_id,
                    project.id,
                    flag.id,
                    env.id,
                    given.get(env.id, ("DISABLED", None))[0],
                    default_variant,
                    _targeting(given.get(env.id, ("DISABLED", None))[1]),
                    self.scope.actor,
                )
                for env in await self.projects.environments(project)
            ],
        )
        flag = await self._with_states(flag)
        await self.scope.audit(
            project_id=project.id,
            action="flag.create",
            entity_type="flag",
            entity_id=flag.id,
            entity_key=key,
            before=None,
            after=flag.to_api(),
        )
        return flag

    async def rewrite(self, project: Project, flag: Flag, **fields: Any) -> Flag:
        """Set flag-level ``fields`` (name, description, variants, metadata, archived)."""
        new = {
            "name": flag.name,
            "description": flag.description,
            "variants": flag.variants,
            "metadata": flag.metadata,
            "archived": flag.archived,
            **fields,
        }
        await self.conn.execute(
            """UPDATE flags SET name = $3, description = $4, variants = $5::jsonb,
                                metadata = $6::jsonb, is_archived = $7,
                                revision = revision + 1, updated_at = now()
                WHERE tenant_id = $1 AND id = $2""",
            self.tenant_id,
            flag.id,
            new["name"],
            new["description"],
            stored_variants(flag.type, new["variants"]),
            dict(new["metadata"]),
            new["archived"],
        )
        after = await self._flag(project, flag.key)
        if after.archived != flag.archived:
            action = "flag.archive" if after.archived else "flag.restore"
        else:
            action = "flag.update"
        await self.scope.audit(
            project_id=project.id,
            action=action,
            entity_type="flag",
            entity_id=flag.id,
            entity_key=flag.key,
            before=flag.definition(),
            after=after.definition(),
        )
        return after

    async def write_state(
        self,
        project: Project,
        flag: Flag,
        env: Environment,
        current: FlagEnvironment | None,
        state: str,
        default_variant: str | None,
        targeting: Any,
    ) -> FlagEnvironment:
        """Set the flag's state in ``env`` (creating the row if it has none)."""
        await self.conn.execute(
            """INSERT INTO flag_environments AS fe (tenant_id, project_id, flag_id,
                   environment_id, state, default_variant, targeting, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
               ON CONFLICT (flag_id, environment_id) DO UPDATE
                  SET state = excluded.state, default_variant = excluded.default_variant,
                      targeting = excluded.targeting, updated_by = excluded.updated_by,
                      revision = fe.revision + 1, updated_at = now()""",
            self.tenant_id,
            project.id,
            flag.id,
            env.id,
            state,
            default_variant,
            _targeting(targeting),
            self.scope.actor,
        )
        after = await self._state(flag, env)
        assert after is not None
        await self.scope.audit(
            project_id=project.id,
            action="flag_environment.update",
            entity_type="flag_environment",
            entity_id=flag.id,
            entity_key=f"{flag.key}/{env.key}",
            before=None if current is None else current.to_api(),
            after=after.to_api(),
        )
        return after


def stored_variants(flag_type: str, variants: Mapping[str, Any]) -> dict[str, Any]:
    """Variants as stored and served. A float flag's whole-number variants become floats
    (``1`` → ``1.0``): JSON keeps the difference, and SDKs that check types refuse an
    integer where the flag promises a float."""
    if flag_type != "float":
        return dict(variants)
    return {
        name: float(value) if isinstance(value, int) and not isinstance(value, bool) else value
        for name, value in variants.items()
    }
