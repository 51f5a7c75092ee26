"""The flag set the provider holds, and how it moves forward. Pure code.

The edge numbers every version of an environment's flag set (the ``id:`` of a ``put``,
``version``/``base`` of a ``patch``, the ETag of a poll). :class:`FlagSetHolder` keeps
the newest one it has been given, compiled with the proxy's own evaluator
(:func:`crivline.flags.compile_flag_set`), and never goes back: an older or equal
version is ignored, whichever way it arrives. A patch applies only to the version it
was made from (``base``); one that does not fit raises :class:`PatchGap`, and the
caller reconnects to be sent what it missed.

Each accepted version replaces one immutable :class:`HeldFlagSet` in a single
assignment, so evaluating threads read a consistent flag set without a lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from crivline.delta import apply_delta, canonical
from crivline.flags import CompiledFlagSet, FlagSetError, compile_flag_set
from crivline_openfeature.errors import BadFlagSet


@dataclass(frozen=True, slots=True)
class HeldFlagSet:
    version: int
    document: Mapping[str, Any]  # the flagd document, as the edge serves it
    flags: CompiledFlagSet


@dataclass(frozen=True, slots=True)
class Applied:
    """A newer flag set was accepted: the one before it and the flags that differ."""

    held: HeldFlagSet
    previous: HeldFlagSet | None
    changed: tuple[str, ...]


class PatchGap(Exception):
    """A patch that does not start from the version held: something was missed."""

    def __init__(self, held: int | None, base: int, version: int) -> None:
        super().__init__(f"patch {base}→{version} does not apply to version {held}")
        self.held = held
        self.base = base
        self.version = version


def _compile(version: int, document: Any) -> HeldFlagSet:
    if not isinstance(document, dict):
        raise BadFlagSet(f"version {version}: a flag set must be a JSON object")
    try:
        return HeldFlagSet(version, document, compile_flag_set(document))
    except FlagSetError as exc:
        raise BadFlagSet(f"version {version}: {exc}") from None


def _version(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise BadFlagSet(f"{what} must be a non-negative integer, not {value!r}")
    return value


class FlagSetHolder:
    def __init__(self) -> None:
        self.current: HeldFlagSet | None = None

    @property
    def version(self) -> int | None:
        held = self.current
        return None if held is None else held.version

    def put(self, version: int, document: Any) -> Applied | None:
        """A whole flag set (a stream ``put``, a poll, a snapshot file); None if not newer."""
        _version(version, "the flag set's version")
        previous = self.current
        if previous is not None and version <= previous.version:
            return None
        return self._accept(_compile(version, document), previous)

    def patch(self, body: Any) -> Applied | None:
        """A stream ``patch``; None if it is not newer than what is held."""
        if not isinstance(body, dict):
            raise BadFlagSet("a patch must be a JSON object")
        version = _version(body.get("version"), "a patch's version")
        base = _version(body.get("base"), "a patch's base")
        previous = self.current
        if previous is not None and version <= previous.version:
            return None
        if previous is None or base != previous.version:
            raise PatchGap(None if previous is None else previous.version, base, version)
        document = apply_delta(previous.document, body)
        return self._accept(_compile(version, document), previous)

    def _accept(self, held: HeldFlagSet, previous: HeldFlagSet | None) -> Applied:
        changed = changed_flags(None if previous is None else previous.document, held.document)
        self.current = held
        return Applied(held, previous, tuple(changed))


def changed_flags(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """The keys of the flags whose answers may differ between two flag sets: added,
    removed or edited flags, flags that reach an edited segment through ``$ref``, and
    every flag when the flag set's metadata (merged into each flag's) changed."""
    new_flags = _mapping(new.get("flags"))
    if old is None:
        return sorted(new_flags)
    old_flags = _mapping(old.get("flags"))
    every = set(old_flags) | set(new_flags)
    if canonical(old.get("metadata") or {}) != canonical(new.get("metadata") or {}):
        return sorted(every)
    old_segments = _mapping(old.get("$evaluators"))
    new_segments = _mapping(new.get("$evaluators"))
    edited_segments = {
        name
        for name in set(old_segments) | set(new_segments)
        if name not in old_segments
        or name not in new_segments
        or canonical(old_segments[name]) != canonical(new_segments[name])
    }
    out: set[str] = set()
    for key in every:
        before, after = old_flags.get(key), new_flags.get(key)
        edited = before is None or after is None or canonical(before) != canonical(after)
        if edited or (
            edited_segments
            and not edited_segments.isdisjoint(_reachable(after, (old_segments, new_segments)))
        ):
            out.add(key)
    return sorted(out)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _reachable(flag: Any, segment_maps: tuple[Mapping[str, Any], ...]) -> Set[str]:
    """Every segment name a flag's targeting reaches through ``$ref``, transitively."""
    seen: set[str] = set()
    stack: list[Any] = [flag.get("targeting") if isinstance(flag, Mapping) else None]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if len(node) == 1 and type(ref) is str:
                if ref not in seen:
                    seen.add(ref)
                    stack.extend(m[ref] for m in segment_maps if ref in m)
                continue
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return seen
