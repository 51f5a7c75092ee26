"""Import a whole flagd flag-set document into one environment, in one transaction.

This is how an existing flagd user moves in. For each flag of the document:

- new to the project: created, with the type its variants imply; this environment gets
  the document's state, default variant and targeting; every other environment gets it
  DISABLED with the same default variant;
- already in the project: this environment's state becomes the document's. Its
  variants and metadata (an absent ``metadata`` is none) and whether it is archived
  belong to the project — every environment serves them — so an import that would
  change them is refused with 409 naming each flag and part, unless it is asked to
  apply them (``?projectChanges=apply``); then the answer's ``projectChanges`` lists
  the flags and the other environments that changed. Its type always stays (the
  variants must fit it).

``$evaluators`` become the project's segments (created or replaced). Flags and
segments the document does not mention are left alone: an import adds and updates, it
never deletes. Nothing in the document is dropped unsaid: its top-level ``metadata``
may only repeat what the environment's flag set already says (``flagSetId``, derived
from the project and environment, and ``fractionalBucketing``, the environment's
scheme); anything else there is refused (422), as Crivline keeps no flag-set metadata
of its own. ``$schema`` is a URL and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from control.store.flags import FLAG_COLUMNS, FlagStore, stored_variants
from control.store.plans import PlanStore
from control.store.projects import ProjectStore
from control.store.records import Environment, Flag, FlagEnvironment, Project, same_json
from control.store.scope import TenantScope
from control.store.segments import SegmentStore
from control.validation import flag_problems, flag_set_problems, infer_type, join_path, refuse
from crivline.errors import Conflict, FieldProblem


@dataclass(slots=True)
class ImportReport:
    environment: str
    version: int = 0
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    segments_created: list[str] = field(default_factory=list)
    segments_updated: list[str] = field(default_factory=list)
    project_flags: list[str] = field(default_factory=list)
    other_environments: list[str] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "version": self.version,
            "flags": {
                "created": self.created,
                "updated": self.updated,
                "unchanged": self.unchanged,
            },
            "segments": {"created": self.segments_created, "updated": self.segments_updated},
            "projectChanges": {
                "flags": self.project_flags,
                "environments": self.other_environments,
            },
        }


def _declared_type(flag: Flag | None, definition: Any) -> str | None:
    if flag is not None:
        return flag.type  # an existing flag keeps its type; the variants must fit it
    variants = definition.get("variants") if isinstance(definition, dict) else None
    return infer_type(variants) if isinstance(variants, dict) else None


def _default_variant(value: Any) -> str | None:
    # flagd lets a boolean flag name its default with a JSON boolean.
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else None


class Importer:
    def __init__(
        self, scope: TenantScope, projects: ProjectStore, flags: FlagStore, segments: SegmentStore
    ) -> None:
        self.scope = scope
        self.conn = scope.conn
        self.tenant_id = scope.tenant_id
        self.projects = projects
        self.flags = flags
        self.segments = segments

    async def run(
        self,
        project_key: str,
        env_key: str,
        doc: Mapping[str, Any],
        *,
        apply_project_changes: bool = False,
    ) -> ImportReport:
        project = await self.projects.get(project_key, lock="FOR SHARE")
        env = await self.projects.environment(project, env_key)
        refuse(_set_metadata_problems(project, env, doc.get("metadata")), "the flag set")
        report = ImportReport(environment=env.key, version=env.version)
        flags_in: Mapping[str, Any] = doc.get("flags") or {}
        evaluators: Mapping[str, Any] = doc.get("$evaluators") or {}
        existing = await self._lock_flags(project, sorted(flags_in))
        known_segments = await self.segments.definitions(project, lock="FOR UPDATE")
        merged = {**known_segments, **evaluators}
        types = {key: _declared_type(existing.get(key), flags_in[key]) for key in flags_in}
        refuse(
            flag_set_problems(
                {**doc, "$evaluators": merged}, {k: t for k, t in types.items() if t is not None}
            ),
            "the flag set",
        )
        refuse(self._other_environment_problems(env, existing, flags_in, merged), "the flag set")
        environments = await self.projects.environments(project)
        others = [e.key for e in environments if e.id != env.id]
        changes = _project_changes(existing, flags_in)
        if changes and not apply_project_changes:
            raise Conflict(
                f"the import would change {len(changes)} project-wide part(s) of existing "
                "flags, which every environment of the project serves"
                + (f" ({', '.join(others)} too)" if others else "")
                + ": make the document match them, or import with ?projectChanges=apply "
                "to change them everywhere",
                problems=changes,
            )
        adding = sum(1 for key in flags_in if key not in existing or existing[key].archived)
        await PlanStore(self.scope).check_flag_room(project, adding, datetime.now(UTC))
        project_wide = await self._segments(project, evaluators, known_segments, report)
        for key in sorted(flags_in):
            definition = flags_in[key]
            flag_type = types[key]
            assert flag_type is not None  # the validator refused undecidable types
            if key in existing:
                flag_changed = await self._update_flag(project, existing[key], definition)
                state_changed = await self._set_state(project, existing[key], env, definition)
                project_wide |= flag_changed
                if flag_changed:
                    report.project_flags.append(key)
                target = report.updated if flag_changed or state_changed else report.unchanged
                target.append(key)
            else:
                await self._create_flag(project, env, key, flag_type, definition)
                project_wide = True
                report.created.append(key)
        environment_ids = [e.id for e in environments]
        if project_wide:
            versions = await self.scope.bump(environment_ids)
            report.other_environments = others
        elif report.updated:
            versions = await self.scope.bump([env.id])
        else:
            versions = {}
        report.version = versions.get(env.id, env.version)
        return report

    async def _lock_flags(self, project: Project, keys: list[str]) -> dict[str, Flag]:
        rows = await self.conn.fetch(
            f"""SELECT {FLAG_COLUMNS} FROM flags
                 WHERE tenant_id = $1 AND project_id = $2 AND key = ANY($3::text[])
                 ORDER BY key FOR NO KEY UPDATE""",
            self.tenant_id,
            project.id,
            keys,
        )
        flags = [Flag.from_row(r) for r in rows]
        states = await self.flags.states([f.id for f in flags], lock="FOR UPDATE OF fe")
        return {f.key: f.with_environments(states[f.id]) for f in flags}

    def _other_environment_problems(
        self,
        env: Environment,
        existing: Mapping[str, Flag],
        flags_in: Mapping[str, Any],
        segments: Mapping[str, Any],
    ) -> list[Any]:
        """New variants must still serve the other environments of existing flags."""
        problems = []
        for key, flag in existing.items():
            definition = flags_in[key]
            for env_key, fe in flag.environments.items():
                if env_key == env.key:
                    continue
                problems += flag_problems(
                    key,
                    flag_type=flag.type,
                    variants=definition.get("variants") or {},
                    metadata=definition.get("metadata") or {},
                    state=fe.state,
                    default_variant=fe.default_variant,
                    targeting=fe.targeting,
                    segments=segments,
                    # The stored state of another environment, which the new variants
                    # would break: flags.<key>.environments.<env>.<field>.
                    prefix=join_path(join_path(join_path("flags", key), "environments"), env_key),
                )
        return problems

    async def _segments(
        self,
        project: Project,
        evaluators: Mapping[str, Any],
        known: Mapping[str, Any],
        report: ImportReport,
    ) -> bool:
        changed = False
        for name in sorted(evaluators):
            if name in known and same_json(known[name], evaluators[name]):
                continue
            _, created = await self.segments.write(project, name, evaluators[name])
            (report.segments_created if created else report.segments_updated).append(name)
            changed = True
        return changed

    async def _create_flag(
        self, project: Project, env: Environment, key: str, flag_type: str, definition: Any
    ) -> None:
        await self.flags.insert(
            project,
            key=key,
            flag_type=flag_type,
            variants=definition["variants"],
            metadata=definition.get("metadata") or {},
            default_variant=_default_variant(definition.get("defaultVariant")),
            states={env.id: (definition["state"], definition.get("targeting"))},
        )

    async def _update_flag(self, project: Project, flag: Flag, definition: Any) -> bool:
        variants = stored_variants(flag.type, definition["variants"])
        metadata = definition.get("metadata") or {}
        if not flag.archived and same_json([flag.variants, flag.metadata], [variants, metadata]):
            return False
        await self.flags.rewrite(
            project, flag, variants=variants, metadata=metadata, archived=False
        )
        return True

    async def _set_state(
        self, project: Project, flag: Flag, env: Environment, definition: Any
    ) -> bool:
        current: FlagEnvironment | None = flag.environments.get(env.key)
        state = definition["state"]
        default_variant = _default_variant(definition.get("defaultVariant"))
        targeting = definition.get("targeting")
        if current is not None and current.served_equal(
            state, default_variant, None if targeting == {} else targeting
        ):
            return False
        await self.flags.write_state(project, flag, env, current, state, default_variant, targeting)
        return True


def _set_metadata_problems(project: Project, env: Environment, metadata: Any) -> list[FieldProblem]:
    """The document's top-level metadata may only say what the flag set already says."""
    if not isinstance(metadata, Mapping):
        return []  # absent (validation refuses other shapes)
    ours = {
        "flagSetId": f"{project.key}/{env.key}",
        "fractionalBucketing": env.fractional_bucketing,
    }
    problems = []
    for name, value in metadata.items():
        path = join_path("metadata", name)
        if name not in ours:
            problems.append(
                FieldProblem(
                    path,
                    "flag-set metadata is not stored (only flags, their metadata and "
                    "$evaluators are); move it into the flags' metadata or leave it out",
                )
            )
        elif value != ours[name]:
            problems.append(
                FieldProblem(path, f"this environment's flag set has {ours[name]!r} here")
            )
    return problems


def _project_changes(
    existing: Mapping[str, Flag], flags_in: Mapping[str, Any]
) -> list[FieldProblem]:
    """The project-wide parts of existing flags the document would change."""
    problems = []
    for key in sorted(existing):
        flag, definition = existing[key], flags_in[key]
        at = join_path("flags", key)
        variants = stored_variants(flag.type, definition["variants"])
        if not same_json(flag.variants, variants):
            problems.append(
                FieldProblem(join_path(at, "variants"), "differs from the project's variants")
            )
        metadata = definition.get("metadata") or {}
        if not same_json(flag.metadata, metadata):
            problems.append(
                FieldProblem(
                    join_path(at, "metadata"),
                    "differs from the project's metadata"
                    + (" (the document has none)" if not metadata else ""),
                )
            )
        if flag.archived:
            problems.append(FieldProblem(at, "is archived: importing it restores it everywhere"))
    return problems
