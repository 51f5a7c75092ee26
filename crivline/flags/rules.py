"""Checking one JSONLogic rule: operations, arity, literal arguments, variant names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from crivline.flags.coerce import variant_name
from crivline.flags.messages import describe, key_path, listing
from crivline.flags.model import Limits
from crivline.flags.ops import (
    ARITY,
    MAX_WEIGHT_SUM,
    OPERATIONS,
    SEM_VER_OPERATORS,
    arguments,
    arity_text,
    compile_regex,
)
from crivline.flags.semver import version_of

Report = Callable[[str, str], None]

_BUCKETING_HINT = (
    "the bucketing value must be an expression that gives a string, such as "
    '{"var": "user.id"}; leave it out to bucket by flagKey + targetingKey'
)


def _dynamic(node: Any) -> bool:
    """An operation, whose value is only known when evaluating."""
    return type(node) is dict and len(node) == 1


class RuleChecker:
    """Reports every problem in a rule. ``variants`` (when known) are the names a flag's
    targeting may return; ``refs`` collects the segments the rule names."""

    def __init__(
        self,
        report: Report,
        segments: Mapping[Any, Any],
        variants: set[str] | None,
        limits: Limits,
    ) -> None:
        self.report = report
        self.segments = segments
        self.variants = variants
        self.limits = limits
        self.refs: set[str] = set()

    def check(self, node: Any, path: str, tail: bool, depth: int = 1) -> None:
        """``tail``: the value of ``node`` is what the flag's targeting returns."""
        if depth > self.limits.max_depth:
            return  # reported once by the document check
        t = type(node)
        if t is list:
            for i, item in enumerate(node):
                self.check(item, f"{path}[{i}]", False, depth + 1)
            if tail and self.variants is not None:
                self.report(path, "targeting returns an array here, which cannot name a variant")
            return
        if t is not dict:
            if tail:
                self._tail_literal(node, path)
            return
        if not node:
            self.report(
                path,
                "an empty object is not a rule: write an operation such as "
                '{"==": [{"var": "plan"}, "pro"]}',
            )
            return
        if len(node) > 1:
            keys = listing(node, 5)
            self.report(
                path,
                f"a rule is an object with exactly one operation; "
                f"this one has {len(node)} keys ({keys})",
            )
            return
        op, raw = next(iter(node.items()))
        here = key_path(path, op)
        if op == "$ref":
            self._ref(raw, here)
            return
        args = arguments(raw)
        listed = type(raw) is list
        inner = depth + (2 if listed else 1)

        def at(i: int) -> str:
            return f"{here}[{i}]" if listed else here

        if op not in OPERATIONS:
            self._unknown(op, here)
            for i, a in enumerate(args):
                self.check(a, at(i), False, inner)
            return
        low, high = ARITY[op]
        if len(args) < low or (high is not None and len(args) > high):
            self.report(here, f"{op} takes {arity_text(op)}, got {len(args)}")
        if op in ("if", "?:"):
            n = len(args)
            for i, a in enumerate(args):
                branch = i % 2 == 1 or (i == n - 1 and n % 2 == 1)
                self.check(a, at(i), tail and branch, inner)
            return
        if op == "fractional":
            self._fractional(args, here, at, tail, inner)
            return
        self._literals(op, args, at)
        for i, a in enumerate(args):
            self.check(a, at(i), False, inner)

    def _tail_literal(self, value: Any, path: str) -> None:
        if self.variants is None or value is None:
            return
        name = variant_name(value)
        if name is None:
            self.report(
                path, f"targeting returns {describe(value)} here, which cannot name a variant"
            )
        elif name not in self.variants:
            self.report(
                path,
                f"targeting can return {describe(value)} here, but the flag "
                f"has no such variant (variants: {listing(self.variants)})",
            )

    def _ref(self, raw: Any, path: str) -> None:
        if type(raw) is not str:
            self.report(path, f"$ref takes the name of a segment, not {describe(raw)}")
        elif raw not in self.segments:
            known = f"segments: {listing(self.segments)}" if self.segments else "there are none"
            self.report(path, f"refers to segment {raw!r}, which does not exist ({known})")
        else:
            self.refs.add(raw)

    def _unknown(self, op: str, path: str) -> None:
        close = difflib.get_close_matches(op, sorted(OPERATIONS), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.report(path, f"unknown operation {op!r}{hint}")

    def _literals(self, op: str, args: list[Any], at: Callable[[int], str]) -> None:
        """Arguments that are written out and can never work."""
        if op == "var" and args and not _dynamic(args[0]):
            key = args[0]
            t = type(key)
            if not (key is None or t is str or t is int or t is float or key == []):
                self.report(
                    at(0),
                    'var takes a path such as "user.email" '
                    f"(or a number for an array index), not {describe(key)}",
                )
        elif op == "sem_ver" and len(args) == 3:
            operator = args[1]
            if not _dynamic(operator) and operator not in SEM_VER_OPERATORS:
                self.report(
                    at(1),
                    f"sem_ver's operator must be one of "
                    f"{' '.join(SEM_VER_OPERATORS)}, not {describe(operator)}",
                )
            for i in (0, 2):
                v = args[i]
                if not _dynamic(v) and version_of(v) is None:
                    self.report(at(i), f"{describe(v)} is not a semantic version (such as 1.2.3)")
        elif op in ("starts_with", "ends_with", "regex_match"):
            for i, v in enumerate(args[:1] if op == "regex_match" else args[:2]):
                if not _dynamic(v) and type(v) is not str:
                    self.report(at(i), f"{op} works on strings, so {describe(v)} never matches")
            if op == "regex_match" and len(args) >= 2:
                self._pattern(args[1], at(1))

    def _pattern(self, pattern: Any, path: str) -> None:
        if type(pattern) is not str:
            self.report(
                path, f"regex_match needs its pattern as a literal string, not {describe(pattern)}"
            )
            return
        if len(pattern) > self.limits.max_pattern_length:
            self.report(
                path,
                f"the pattern is {len(pattern)} characters long, over the "
                f"limit of {self.limits.max_pattern_length}",
            )
            return
        try:
            compile_regex(pattern)
        except ValueError as exc:
            self.report(path, f"not a valid RE2 regular expression: {exc}")

    def _fractional(
        self, args: list[Any], here: str, at: Callable[[int], str], tail: bool, inner: int
    ) -> None:
        buckets = list(enumerate(args))
        if args and type(args[0]) is not list:
            first = args[0]
            if _dynamic(first) or type(first) is str:
                self.check(first, at(0), False, inner)
            else:
                self.report(at(0), f"{_BUCKETING_HINT}; {describe(first)} is not one")
            buckets = buckets[1:]
        if not buckets:
            self.report(here, "fractional needs at least one bucket: [variant, weight]")
            return
        weights: list[int] = []
        literal = True
        for i, bucket in buckets:
            where = at(i)
            if type(bucket) is not list or not 1 <= len(bucket) <= 2:
                self.report(
                    where,
                    "a bucket is [variant, weight] (or [variant] for weight 1), "
                    f"not {describe(bucket)}",
                )
                literal = False
                continue
            self.check(bucket[0], f"{where}[0]", tail, inner + 1)
            if len(bucket) == 1:
                weights.append(1)
                continue
            w = bucket[1]
            if _dynamic(w):
                self.check(w, f"{where}[1]", False, inner + 1)
                literal = False
            elif type(w) is not int or w < 0:
                self.report(
                    f"{where}[1]", f"a weight must be a whole number ≥ 0, not {describe(w)}"
                )
                literal = False
            else:
                weights.append(w)
        if literal:
            total = sum(weights)
            if total == 0:
                self.report(here, "the weights add up to 0, so no bucket can ever be chosen")
            elif total > MAX_WEIGHT_SUM:
                self.report(
                    here, f"the weights add up to {total}, over flagd's limit of {MAX_WEIGHT_SUM}"
                )
