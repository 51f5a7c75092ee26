"""Complete validation of flag sets, flags and segments, before anything is stored.

Every problem is collected (not just the first), each with a path into the document
and a sentence for a person. Whatever object is passed in, the only exception raised
is :class:`FlagSetError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from crivline.flags.errors import FlagSetError, Problem
from crivline.flags.flagset import compiled_size_problem
from crivline.flags.messages import describe, key_path, listing
from crivline.flags.model import DEFAULT_LIMITS, FLAG_KEY_RE, FLAG_TYPES, Limits
from crivline.flags.refs import SegmentGraph
from crivline.flags.rules import RuleChecker

_INT64: Final = (-(2**63), 2**64 - 1)
_SET_FIELDS: Final = ("flags", "$evaluators", "metadata", "$schema")
_FLAG_FIELDS: Final = ("state", "variants", "defaultVariant", "targeting", "metadata")
_KEY_RULE: Final = "1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit"


def _category(value: Any) -> str:
    t = type(value)
    if t is bool:
        return "boolean"
    if t is str:
        return "string"
    if t is int or t is float:
        return "number"
    return "object"


def _matches(value: Any, flag_type: str) -> bool:
    t = type(value)
    if flag_type == "boolean":
        return t is bool
    if flag_type == "string":
        return t is str
    if flag_type == "integer":
        return t is int
    if flag_type == "float":
        return t is int or t is float
    return t is dict or t is list


class _Checker:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def done(self) -> None:
        if self.problems:
            raise FlagSetError(self.problems)

    # -- any JSON ------------------------------------------------------------------

    def document(self, doc: Any, path: str, what: str) -> None:
        """JSON types, nesting depth (without recursion) and serialized size."""
        clean = True
        stack: list[tuple[Any, str, int]] = [(doc, path, 1)]
        while stack:
            node, where, depth = stack.pop()
            t = type(node)
            if t is dict or t is list:
                if depth > self.limits.max_depth:
                    self.add(where, f"nested deeper than the limit of {self.limits.max_depth}")
                    clean = False
                    continue
                if t is dict:
                    for k, v in node.items():
                        if type(k) is not str:
                            self.add(where, f"object keys must be strings, not {describe(k)}")
                            clean = False
                            continue
                        stack.append((v, key_path(where, k), depth + 1))
                else:
                    for i, v in enumerate(node):
                        stack.append((v, f"{where}[{i}]", depth + 1))
            elif t is float:
                if not math.isfinite(node):
                    self.add(where, "numbers must be finite (NaN and Infinity are not JSON)")
                    clean = False
            elif t is int:
                if not _INT64[0] <= node <= _INT64[1]:
                    self.add(where, "this integer does not fit in 64 bits")
                    clean = False
            elif node is not None and t is not bool and t is not str:
                self.add(where, f"{describe(node)} is not a JSON value")
                clean = False
        if clean:
            try:
                size = len(orjson.dumps(doc))
            except (TypeError, orjson.JSONEncodeError) as exc:
                self.add(path, f"the {what} cannot be serialized as JSON: {exc}")
                return
            if size > self.limits.max_bytes:
                self.add(
                    path,
                    f"the {what} is {size} bytes, over the limit of {self.limits.max_bytes}",
                )

    def metadata(self, value: Any, path: str) -> None:
        if value is None:
            return
        if type(value) is not dict:
            self.add(path, f"metadata must be an object, not {describe(value)}")
            return
        for k, v in value.items():
            if k == "":
                self.add(path, "metadata keys cannot be empty")
            t = type(v)
            if not (t is str or t is bool or t is int or t is float):
                self.add(
                    key_path(path, k),
                    f"metadata values must be strings, numbers or booleans, not {describe(v)}",
                )

    # -- flags ---------------------------------------------------------------------

    def flag(
        self,
        key: Any,
        definition: Any,
        flag_type: Any,
        segments: Mapping[Any, Any],
        graph: SegmentGraph,
        path: str,
    ) -> None:
        if type(key) is not str or not FLAG_KEY_RE.fullmatch(key):
            self.add(path, f"{describe(key)} is not a valid flag key: use {_KEY_RULE}")
        if flag_type is not None and flag_type not in FLAG_TYPES:
            self.add(
                path, f"unknown flag type {describe(flag_type)} (one of {', '.join(FLAG_TYPES)})"
            )
            flag_type = None
        if type(definition) is not dict:
            self.add(path, f"a flag must be an object with {', '.join(_FLAG_FIELDS[:3])}")
            return
        for field in definition:
            if field not in _FLAG_FIELDS:
                self.add(
                    key_path(path, field),
                    f"unknown field (a flag has {', '.join(_FLAG_FIELDS)})",
                )
        state = definition.get("state")
        if state is None:
            self.add(key_path(path, "state"), "state is required: ENABLED or DISABLED")
        elif state not in ("ENABLED", "DISABLED"):
            self.add(
                key_path(path, "state"),
                f"state must be ENABLED or DISABLED, not {describe(state)}",
            )
        names = self.variants(definition, flag_type, key_path(path, "variants"))
        self.default_variant(definition, names, key_path(path, "defaultVariant"))
        self.metadata(definition.get("metadata"), key_path(path, "metadata"))
        if "targeting" in definition:
            self.targeting(definition["targeting"], names, segments, graph, path, key)

    def variants(self, definition: dict[str, Any], flag_type: str | None, path: str) -> set[str]:
        variants = definition.get("variants")
        if variants is None:
            self.add(path, "variants are required: an object mapping variant names to values")
            return set()
        if type(variants) is not dict:
            self.add(path, f"variants must be an object, not {describe(variants)}")
            return set()
        if not variants:
            self.add(path, "a flag needs at least one variant")
        found: dict[str, list[str]] = {}
        for name, value in variants.items():
            where = key_path(path, name)
            if name == "":
                self.add(path, "variant names cannot be empty")
            if value is None:
                self.add(where, "a variant needs a value; null is not one")
                continue
            if flag_type is not None:
                if not _matches(value, flag_type):
                    self.add(where, f"{describe(value)} is not a valid {flag_type} value")
            else:
                found.setdefault(_category(value), []).append(str(name))
        if len(found) > 1:
            kinds = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in found.items())
            self.add(path, f"variants must all have the same type, found {kinds}")
        return {str(n) for n in variants}

    def default_variant(self, definition: dict[str, Any], names: set[str], path: str) -> None:
        default = definition.get("defaultVariant")
        if default is None:
            return
        if type(default) is bool:
            default = "true" if default else "false"
        if type(default) is not str:
            self.add(
                path, f"defaultVariant must be a variant name or null, not {describe(default)}"
            )
        elif default == "":
            self.add(path, "defaultVariant cannot be empty: use null for the code default")
        elif names and default not in names:
            self.add(
                path,
                f"defaultVariant is {describe(default)}, which is not one of the variants "
                f"({listing(names)})",
            )

    def targeting(
        self,
        targeting: Any,
        names: set[str],
        segments: Mapping[Any, Any],
        graph: SegmentGraph,
        flag_path: str,
        key: Any = "",
    ) -> None:
        path = key_path(flag_path, "targeting")
        found = len(self.problems)
        if targeting is None or targeting == {}:
            return
        if type(targeting) is not dict:
            self.add(
                path, f"targeting must be a JSONLogic rule (an object), not {describe(targeting)}"
            )
            return
        rules = RuleChecker(self.add, segments, names or None, self.limits)
        rules.check(targeting, path, tail=True)
        for name in sorted(rules.refs):
            cycle = graph.cycle_from(name)
            if cycle:
                self.add(
                    path,
                    f"uses segment {name!r}, whose $refs go round in a cycle: {' → '.join(cycle)}",
                )
        size = graph.expanded_size(targeting, self.limits.max_expanded_nodes)
        if size > self.limits.max_expanded_nodes:
            self.add(
                path,
                f"targeting expands to more than {self.limits.max_expanded_nodes} nodes once "
                "its $ref segments are inlined",
            )
        self.compiled_size(str(key), targeting, segments, path, found)

    def compiled_size(
        self, key: str, rule: Any, segments: Mapping[Any, Any], path: str, found: int
    ) -> None:
        """The edge's own measurement of the compiled rule, when nothing else is wrong
        with it (a rule with problems is refused anyway)."""
        if len(self.problems) > found:
            return
        problem = compiled_size_problem(key, rule, segments, base=path, limits=self.limits)
        if problem is not None:
            self.add(problem.path, problem.message)

    def segment(
        self, name: Any, fragment: Any, segments: Mapping[Any, Any], graph: SegmentGraph, path: str
    ) -> None:
        if type(name) is not str or not FLAG_KEY_RE.fullmatch(name):
            self.add(path, f"{describe(name)} is not a valid segment name: use {_KEY_RULE}")
        if type(fragment) is not dict or not fragment:
            self.add(path, "a segment must be a JSONLogic rule (an object with one operation)")
            return
        found = len(self.problems)
        rules = RuleChecker(self.add, segments, None, self.limits)
        rules.check(fragment, path, tail=False)
        cycle = graph.cycle_from(name)
        if cycle:
            self.add(path, f"the $refs go round in a cycle: {' → '.join(cycle)}")
        size = graph.expanded_size(fragment, self.limits.max_expanded_nodes)
        if size > self.limits.max_expanded_nodes:
            self.add(
                path,
                f"this segment expands to more than {self.limits.max_expanded_nodes} nodes "
                "once the segments it refers to are inlined",
            )
        self.compiled_size(str(name), fragment, segments, path, found)


def _run(limits: Limits, body: Callable[[_Checker], None]) -> None:
    c = _Checker(limits)
    try:
        body(c)
    except RecursionError:  # only with a max_depth far above the default
        c.add("", f"nested too deeply to check with max_depth={limits.max_depth}")
    c.done()


def validate_flag_set(
    doc: object,
    *,
    types: Mapping[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    """Check a whole flag-set document; raise :class:`FlagSetError` listing every problem.

    ``types`` maps flag keys to their declared type (``boolean``, ``string``,
    ``integer``, ``float`` or ``object``); flags without one must have variants that all
    share one JSON type (integers and floats both count as numbers).
    """
    _run(limits, lambda c: _flag_set(c, doc, types))


def _flag_set(c: _Checker, doc: object, types: Mapping[str, str] | None) -> None:
    c.document(doc, "", "flag set")
    if type(doc) is not dict:
        c.add("", f"a flag set must be a JSON object, not {describe(doc)}")
        return
    for field in doc:
        if field not in _SET_FIELDS:
            c.add(key_path("", field), f"unknown field (a flag set has {', '.join(_SET_FIELDS)})")
    flags = doc.get("flags")
    if flags is None:
        c.add("flags", "a flag set needs 'flags': an object mapping flag keys to flags")
    elif type(flags) is not dict:
        c.add("flags", f"flags must be an object, not {describe(flags)}")
    segments = doc.get("$evaluators")
    if segments is not None and type(segments) is not dict:
        c.add("$evaluators", f"$evaluators must be an object, not {describe(segments)}")
    segments = segments if type(segments) is dict else {}
    schema = doc.get("$schema")
    if schema is not None and type(schema) is not str:
        c.add("$schema", "$schema must be a string (a URL)")
    c.metadata(doc.get("metadata"), "metadata")
    graph = SegmentGraph(segments, c.limits.max_depth)
    for name, fragment in segments.items():
        c.segment(name, fragment, segments, graph, key_path("$evaluators", name))
    if type(flags) is dict:
        declared = types if isinstance(types, Mapping) else {}
        for key, definition in flags.items():
            c.flag(key, definition, declared.get(key), segments, graph, key_path("flags", key))


def validate_flag(
    key: object,
    definition: object,
    *,
    flag_type: str | None = None,
    segments: Mapping[str, object] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    """Check one flag (``segments``: the segments its ``$ref``s may name)."""
    known: Mapping[Any, Any] = segments if isinstance(segments, Mapping) else {}

    def body(c: _Checker) -> None:
        c.document(definition, "", "flag")
        c.flag(key, definition, flag_type, known, SegmentGraph(known, limits.max_depth), "")

    _run(limits, body)


def validate_segment(
    name: object,
    fragment: object,
    *,
    segments: Mapping[str, object] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    """Check one segment (``segments``: the other segments, which it may ``$ref``)."""
    known: dict[Any, Any] = dict(segments) if isinstance(segments, Mapping) else {}
    if type(name) is str:
        known[name] = fragment

    def body(c: _Checker) -> None:
        c.document(fragment, "", "segment")
        c.segment(name, fragment, known, SegmentGraph(known, limits.max_depth), "")

    _run(limits, body)
