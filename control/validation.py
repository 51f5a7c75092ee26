"""The flag model's validators (``crivline.flags``) applied to what control stores.

Problems come back as :class:`~crivline.errors.FieldProblem` with paths into the
request body (``targeting.if[0].in[1]``), or into the stored state a change would break
(``environments.production.defaultVariant`` when a flag edit drops a variant that
production still serves). Refusals are 422: the body had the right shape, but its
content cannot be served.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from crivline.errors import FieldProblem, Unprocessable
from crivline.flags import (
    FlagSetError,
    compiled_size_problem,
    validate_flag,
    validate_flag_set,
    validate_segment,
)

_PLAIN = re.compile(r"[^.\[\]\"\s]+")


def join_path(base: str, key: str) -> str:
    """``base.key``, quoting keys with dots or brackets: ``base["eu.west"]``."""
    if not _PLAIN.fullmatch(key):
        return f"{base}[{orjson.dumps(key).decode()}]"
    return f"{base}.{key}" if base else key


def _prefixed(prefix: str, error: FlagSetError) -> list[FieldProblem]:
    out = []
    for problem in error.problems:
        if not prefix:
            path = problem.path
        elif not problem.path:
            path = prefix
        else:
            sep = "" if problem.path.startswith("[") else "."
            path = f"{prefix}{sep}{problem.path}"
        out.append(FieldProblem(path, problem.message))
    return out


def flag_problems(
    key: str,
    *,
    flag_type: str,
    variants: Mapping[str, Any],
    metadata: Mapping[str, Any],
    state: str = "DISABLED",
    default_variant: str | None = None,
    targeting: Any = None,
    segments: Mapping[str, Any] | None = None,
    prefix: str = "",
) -> list[FieldProblem]:
    """What is wrong with a flag as one environment would serve it (empty: nothing)."""
    definition: dict[str, Any] = {"state": state, "variants": dict(variants)}
    definition["defaultVariant"] = default_variant
    if targeting is not None:
        definition["targeting"] = targeting
    if metadata:
        definition["metadata"] = dict(metadata)
    try:
        validate_flag(key, definition, flag_type=flag_type, segments=segments or {})
    except FlagSetError as error:
        return _prefixed(prefix, error)
    return []


def segment_problems(
    key: str, definition: Any, others: Mapping[str, Any], prefix: str = "definition"
) -> list[FieldProblem]:
    try:
        validate_segment(key, definition, segments=others)
    except FlagSetError as error:
        return _prefixed(prefix, error)
    return []


def dependent_flag_problems(
    segment: str, targetings: Iterable[tuple[str, str, Any]], segments: Mapping[str, Any]
) -> list[FieldProblem]:
    """Flag states (flag, environment, targeting) that would be too large to serve once
    ``segment`` changes to what ``segments`` holds — the edge compiles them with it."""
    problems = []
    for flag, env, targeting in targetings:
        if not isinstance(targeting, dict) or not _reaches(targeting, segment, segments):
            continue
        base = join_path(join_path(join_path("flags", flag), "environments"), env)
        found = compiled_size_problem(flag, targeting, segments, base=join_path(base, "targeting"))
        if found is not None:
            why = found.message.removeprefix("this rule is too large to serve: ")
            problems.append(
                FieldProblem(
                    found.path,
                    f"with this segment, flag {flag!r} in environment {env!r} would be too "
                    f"large to serve: {why}",
                )
            )
    return problems


def _reaches(node: Any, segment: str, segments: Mapping[str, Any]) -> bool:
    """Whether ``node`` refers to ``segment``, directly or through other segments."""
    seen: set[str] = set()
    stack = list(segment_refs(node))
    while stack:
        name = stack.pop()
        if name == segment:
            return True
        if name in seen or name not in segments:
            continue
        seen.add(name)
        stack.extend(segment_refs(segments[name]))
    return False


def flag_set_problems(document: Any, types: Mapping[str, str]) -> list[FieldProblem]:
    try:
        validate_flag_set(document, types=types)
    except FlagSetError as error:
        return _prefixed("", error)
    return []


def refuse(problems: Iterable[FieldProblem], what: str) -> None:
    """Raise 422 listing ``problems``, if there are any."""
    found = list(problems)
    if found:
        noun = "problem" if len(found) == 1 else "problems"
        raise Unprocessable(f"{what} is not valid: {len(found)} {noun}", problems=found)


def segment_refs(node: Any) -> set[str]:
    """The segment names ``{"$ref": name}`` nodes in ``node`` point at (no recursion)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if len(item) == 1 and isinstance(ref, str):
                found.add(ref)
                continue
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def infer_type(variants: Mapping[str, Any]) -> str | None:
    """A flagd flag's type from its variants (flagd documents do not declare one).

    All booleans: boolean; all strings: string; all integers: integer; numbers with a
    fraction among them: float; objects or arrays: object. None when they disagree (the
    validator then explains which variants differ).
    """
    kinds = set()
    for value in variants.values():
        if isinstance(value, bool):
            kinds.add("boolean")
        elif isinstance(value, str):
            kinds.add("string")
        elif isinstance(value, int):
            kinds.add("integer")
        elif isinstance(value, float):
            kinds.add("float")
        elif isinstance(value, dict | list):
            kinds.add("object")
        else:
            return None
    if kinds == {"integer", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else None
