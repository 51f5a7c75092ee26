"""JSONLogic → Python closures, once per flag.

Every operation becomes a closure over its compiled arguments (see ``builders``);
``$ref`` segments are inlined (compiled once per flag and shared); operations whose
arguments are all constant are folded. Evaluation then never looks at the JSON again.

Compilation is total over JSON: an unknown operation, a ``$ref`` to a missing segment,
a cycle of segments or an invalid ``regex_match`` pattern raise :class:`CompileError`
(the flag then answers PARSE_ERROR); everything else compiles to what flagd does at
run time, for example an operation with the wrong number of arguments evaluates to
null. Validation is where such mistakes are refused.

Compilation is metered (``budget``): every node compiled charges its own size in
bytes, every ``$ref`` the whole compiled size of its segment (each use counts, as if
inlined), and constant folding the strings and arrays it builds. The caller grants the
bound (``Limits.max_compiled_bytes``); past it :class:`BudgetExceeded` escapes with the
trail of nodes it came through, so the same measurement refuses a rule at write time
(with its path) and at the edge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from crivline.flags import budget
from crivline.flags import builders as b
from crivline.flags import fractional as fr
from crivline.flags.budget import METER, BudgetExceeded
from crivline.flags.coerce import to_number, truthy
from crivline.flags.expr import (
    NULL,
    ONE,
    CompileError,
    Expr,
    Fn,
    constant,
    getter,
    lookup,
    missing_keys,
    with_default,
)
from crivline.flags.ops import arguments, compile_regex
from crivline.flags.semver import COMPARATORS, version_of

Handler = Callable[[list[Any], bool], Expr]
# (selector or constant bucket index, bucket variant expressions)
FractionalParts = tuple[fr.Selector | int, list[Expr]]

_NODE_BYTES = 16  # what any compiled node counts for, before its strings and items
_BODY_CAP = 1_000_000


def node_bytes(node: Any) -> int:
    """The compiled size of ``node`` itself (its children are counted as they compile)."""
    t = type(node)
    if t is str:
        return _NODE_BYTES + len(node)
    if t is int or t is bool or node is None:
        return _NODE_BYTES
    if t is list:
        return _NODE_BYTES + budget.BYTES_PER_ITEM * len(node)
    if t is dict:
        if len(node) == 1:
            op, raw = next(iter(node.items()))
            items = len(raw) if type(raw) is list else 1
            return _NODE_BYTES + len(op) + budget.BYTES_PER_ITEM * items
        try:  # a literal object: kept whole
            return _NODE_BYTES + len(orjson.dumps(node))
        except (TypeError, orjson.JSONEncodeError):
            return _NODE_BYTES
    return _NODE_BYTES


class ExprCompiler:
    """Compiles the expressions of one flag (``flag_key`` is needed by ``$flagd``)."""

    def __init__(
        self, flag_key: str, segments: Mapping[str, Any], bucketing: fr.Scheme = fr.LEGACY_SCHEME
    ) -> None:
        self.flag_key = flag_key
        self.segments = segments
        self.bucketing = bucketing
        self._memo: dict[tuple[str, bool], tuple[Expr, int]] = {}
        self._active: list[str] = []
        self._ops: dict[str, Handler] = self._handlers()

    # -- structure -----------------------------------------------------------------

    def compile(self, node: Any, top: bool) -> Expr:
        """``top``: the data is the context (not an item of map/filter/...)."""
        try:
            # this node's own compiled size, charged inline: compile runs per node
            meter = METER
            meter.work -= node_bytes(node) // budget.BYTES_PER_UNIT
            if meter.work < 0:
                raise BudgetExceeded("work")
            t = type(node)
            if t is dict:
                if len(node) != 1:
                    return constant(node)  # not an operation: a literal object
                op, raw = next(iter(node.items()))
                if op == "$ref" and type(raw) is str:
                    return self.ref(raw, top)
                handler = self._ops.get(op)
                if handler is None:
                    raise CompileError(f"unknown operation {op!r}")
                return handler(arguments(raw), top)
            if t is list:
                parts = self._all(node, top)
                fractional = any(p.fractional for p in parts)
                if all(p.is_const for p in parts):
                    return constant([p.const for p in parts], fractional=fractional)
                return Expr(b.listing([p.fn for p in parts]), plain=True, fractional=fractional)
            return constant(node)
        except BudgetExceeded as exc:
            exc.trail.append(node)
            raise

    def segment(self, name: str) -> Any:
        if name not in self.segments:
            raise CompileError(f"$ref to segment {name!r}, which does not exist")
        return self.segments[name]

    def enter(self, name: str) -> None:
        if name in self._active:
            cycle = " → ".join([*self._active[self._active.index(name) :], name])
            raise CompileError(f"segments refer to each other in a cycle: {cycle}")
        self._active.append(name)

    def leave(self) -> None:
        self._active.pop()

    def ref(self, name: str, top: bool) -> Expr:
        hit = self._memo.get((name, top))
        if hit is not None:
            expr, size = hit
            budget.spend(size)  # every use counts, as if the segment were inlined
            return expr
        node = self.segment(name)
        self.enter(name)
        before = METER.work
        try:
            expr = self.compile(node, top)
        finally:
            self.leave()
        self._memo[(name, top)] = (expr, before - METER.work)
        return expr

    def nodes(self, node: Any) -> int:
        """How many compiled nodes ``node`` has with its ``$ref``s inlined (capped)."""
        count = 0
        stack = [node]
        while stack and count < _BODY_CAP:
            item = stack.pop()
            count += 1
            t = type(item)
            if t is dict:
                if len(item) == 1 and type(item.get("$ref")) is str:
                    stack.append(self.segments.get(item["$ref"]))
                    continue
                stack.extend(item.values())
            elif t is list:
                stack.extend(item)
        return count

    def _all(self, args: list[Any], top: bool) -> list[Expr]:
        return [self.compile(a, top) for a in args]

    def _arg(self, args: list[Any], i: int, top: bool) -> Expr:
        return self.compile(args[i], top) if i < len(args) else NULL

    @staticmethod
    def make(fn: Fn, parts: list[Expr], *, plain: bool = False) -> Expr:
        """An Expr for ``fn``, folded to a constant when every part is constant."""
        fractional = any(p.fractional for p in parts)
        if all(p.is_const for p in parts):
            try:
                value = fn(None)
            except BudgetExceeded:  # folding would build too much: the rule is too big
                raise
            except Exception:  # leave the failure to evaluation time, where it is reported
                return Expr(fn, plain=plain, fractional=fractional)
            return constant(value, fractional=fractional)
        return Expr(fn, plain=plain, fractional=fractional)

    def _handlers(self) -> dict[str, Handler]:
        h: dict[str, Handler] = {
            "var": self.var,
            "missing": self.missing,
            "missing_some": self.missing_some,
            "if": self.if_,
            "?:": self.if_,
            "in": self.in_,
            "cat": self.cat,
            "substr": self.substr,
            "merge": self.merge,
            "log": self.log,
            "sem_ver": self.sem_ver,
            "regex_match": self.regex_match,
            "fractional": self.fractional,
        }

        def bind(method: Callable[..., Expr], **options: Any) -> Handler:
            def handler(args: list[Any], top: bool) -> Expr:
                return method(args, top, **options)

            return handler

        h["=="] = bind(self.equals, strict=False, negated=False)
        h["!="] = bind(self.equals, strict=False, negated=True)
        h["==="] = bind(self.equals, strict=True, negated=False)
        h["!=="] = bind(self.equals, strict=True, negated=True)
        h["!"] = bind(self.truth, want=False)
        h["!!"] = bind(self.truth, want=True)
        h["and"] = bind(self.and_or, is_and=True)
        h["or"] = bind(self.and_or, is_and=False)
        h["starts_with"] = bind(self.affix, start=True)
        h["ends_with"] = bind(self.affix, start=False)
        for op in ("<", "<=", ">", ">="):
            h[op] = bind(self.compare, op=op)
        for op in ("+", "-", "*", "/", "%", "max", "min"):
            h[op] = bind(self.arithmetic, op=op)
        for op in ("map", "filter", "reduce", "all", "none", "some"):
            h[op] = bind(self.scoped, op=op)
        return h

    # -- data ----------------------------------------------------------------------

    def var(self, args: list[Any], top: bool) -> Expr:
        key = self._arg(args, 0, top)
        if key.is_const:
            base = getter(key.const, top, self.flag_key)
        else:
            key_fn, flag_key = key.fn, self.flag_key

            def dynamic(d: Any) -> Any:
                return lookup(d, key_fn(d), top, flag_key)

            base = Expr(dynamic)
        if len(args) > 1:
            return with_default(base, self.compile(args[1], top))
        return base

    def missing(self, args: list[Any], top: bool) -> Expr:
        fns, flag_key = tuple(p.fn for p in self._all(args, top)), self.flag_key

        def run(d: Any) -> list[Any]:
            values = [f(d) for f in fns]
            keys = values[0] if values and type(values[0]) is list else values
            return missing_keys(d, keys, top, flag_key)

        return Expr(run, plain=True)

    def missing_some(self, args: list[Any], top: bool) -> Expr:
        need_fn, keys_fn = self._arg(args, 0, top).fn, self._arg(args, 1, top).fn
        flag_key = self.flag_key

        def run(d: Any) -> list[Any]:
            keys = keys_fn(d)
            if type(keys) is not list:
                return []
            absent = missing_keys(d, keys, top, flag_key)
            return [] if len(keys) - len(absent) >= to_number(need_fn(d)) else absent

        return Expr(run, plain=True)

    # -- logic ---------------------------------------------------------------------

    def if_(self, args: list[Any], top: bool) -> Expr:
        if not args:
            return NULL
        if len(args) == 1:
            return self.compile(args[0], top)
        pairs: list[tuple[Expr, Expr]] = []
        otherwise: Expr | None = None
        fractional = False
        for i in range(0, len(args) - 1, 2):
            cond = self.compile(args[i], top)
            fractional = fractional or cond.fractional
            if cond.is_const:
                if truthy(cond.const):
                    otherwise = self.compile(args[i + 1], top)
                    break
                continue
            pairs.append((cond, self.compile(args[i + 1], top)))
        if otherwise is None:
            otherwise = self.compile(args[-1], top) if len(args) % 2 else NULL
        branches = [then for _, then in pairs] + [otherwise]
        fractional = fractional or any(e.fractional for e in branches)
        if not pairs:
            return otherwise.decided_by_fractional() if fractional else otherwise
        plain = all(e.plain for e in branches)
        if len(pairs) == 1:
            cond, then = pairs[0]
            fn = b.choose(cond.fn, cond.plain, then.fn, otherwise.fn)
        else:
            fn = b.chain([(c.fn, c.plain, t.fn) for c, t in pairs], otherwise.fn)
        return Expr(fn, plain=plain, fractional=fractional)

    def equals(self, args: list[Any], top: bool, strict: bool, negated: bool) -> Expr:
        x, y = self._arg(args, 0, top), self._arg(args, 1, top)
        if x.is_const and not y.is_const:
            x, y = y, x  # both equalities are symmetric: keep the constant on the right
        if not x.is_const and type(y.const) is str:
            fn = b.equals_text(x.fn, y.const, strict)
        else:
            fn = b.equals(x.fn, y.fn, strict)
        return self.make(b.negate(fn) if negated else fn, [x, y], plain=True)

    def truth(self, args: list[Any], top: bool, want: bool) -> Expr:
        x = self._arg(args, 0, top)
        return self.make(b.truth(x.fn, x.plain, want), [x], plain=True)

    def and_or(self, args: list[Any], top: bool, is_and: bool) -> Expr:
        parts = self._all(args, top)
        if not parts:
            return NULL
        plain = all(p.plain for p in parts)
        return self.make(b.all_or_any([p.fn for p in parts], plain, is_and), parts, plain=plain)

    def compare(self, args: list[Any], top: bool, op: str) -> Expr:
        parts = self._all(args[:3], top)
        while len(parts) < 2:
            parts.append(NULL)
        return self.make(b.compare([p.fn for p in parts], op), parts, plain=True)

    # -- numbers, arrays, strings ---------------------------------------------------

    def arithmetic(self, args: list[Any], top: bool, op: str) -> Expr:
        parts = self._all(args, top)
        if op in ("-", "/", "%"):
            parts = parts[:2]
        return self.make(b.arithmetic([p.fn for p in parts], op), parts)

    def in_(self, args: list[Any], top: bool) -> Expr:
        needle, haystack = self._arg(args, 0, top), self._arg(args, 1, top)
        fn = b.member(needle.fn, haystack.fn, haystack.const)
        return self.make(fn, [needle, haystack], plain=True)

    def cat(self, args: list[Any], top: bool) -> Expr:
        parts = self._all(args, top)
        return self.make(b.concatenate([p.fn for p in parts]), parts, plain=True)

    def substr(self, args: list[Any], top: bool) -> Expr:
        parts = self._all(args[:3], top)
        while len(parts) < 2:
            parts.append(NULL)
        length = parts[2].fn if len(parts) > 2 else None
        return self.make(b.substring(parts[0].fn, parts[1].fn, length), parts, plain=True)

    def merge(self, args: list[Any], top: bool) -> Expr:
        parts = self._all(args, top)
        return self.make(b.merge([p.fn for p in parts]), parts, plain=True)

    def log(self, args: list[Any], top: bool) -> Expr:
        return self._arg(args, 0, top)  # accepted for compatibility; prints nothing

    def scoped(self, args: list[Any], top: bool, op: str) -> Expr:
        items = self._arg(args, 0, top)
        sub = self.compile(args[1], False) if len(args) > 1 else NULL
        initial = self._arg(args, 2, top) if op == "reduce" else NULL
        body = self.nodes(args[1]) if len(args) > 1 else 1
        fn = b.scoped(op, items.fn, sub.fn, initial.fn, body)
        return self.make(fn, [items, sub, initial], plain=op != "reduce")

    # -- flagd and Crivline operations -------------------------------------------------

    def affix(self, args: list[Any], top: bool, start: bool) -> Expr:
        if len(args) != 2:
            return NULL
        value, part = self._all(args, top)
        if part.is_const and type(part.const) is not str:
            return NULL  # a non-string prefix or suffix never matches anything
        fn = b.affix(value.fn, part.fn, part.const, start)
        return self.make(fn, [value, part], plain=True)

    def sem_ver(self, args: list[Any], top: bool) -> Expr:
        if len(args) != 3:
            return NULL
        left, op, right = self._all(args, top)
        if op.is_const and right.is_const:
            test = COMPARATORS.get(op.const) if type(op.const) is str else None
            other = version_of(right.const)
            if test is None or other is None:
                return NULL
            return self.make(b.version_test(left.fn, test, other), [left], plain=True)
        fn = b.version_compare(left.fn, op.fn, right.fn)
        return self.make(fn, [left, op, right], plain=True)

    def regex_match(self, args: list[Any], top: bool) -> Expr:
        if len(args) != 2:
            return NULL
        value, pattern = self._all(args, top)
        if not (pattern.is_const and type(pattern.const) is str):
            raise CompileError("regex_match needs its pattern as a literal string")
        try:
            search = compile_regex(pattern.const).search
        except ValueError as exc:
            raise CompileError(f"regex_match pattern is not valid RE2: {exc}") from None
        return self.make(b.regex_search(value.fn, search), [value], plain=True)

    def fractional_parts(self, args: list[Any], top: bool) -> FractionalParts | None:
        """How a ``fractional`` picks its bucket; None when it can only be null."""
        if not args:
            return None
        v3 = self.bucketing == "v3"
        fixed_key: str | bytes | None = None
        key_fn: fr.KeyFn
        if type(args[0]) is list:  # no bucketing expression: flagKey and targetingKey
            buckets = args
            if v3:
                key_fn = b.targeting_key_cbor(self.flag_key, top)
            else:
                key_fn = b.targeting_key(self.flag_key, top)
        else:
            key = self.compile(args[0], top)
            buckets = args[1:]
            if key.is_const:
                fixed_key = fr.cbor_value(key.const) if v3 else key.const
                if type(fixed_key) is not (bytes if v3 else str):
                    return None
            elif v3:
                key_fn = b.cbor_or_null(key.fn)
            else:
                key_fn = b.text_or_null(key.fn)
        variants: list[Expr] = []
        weights: list[Expr] = []
        for bucket in buckets:
            if type(bucket) is not list or not 1 <= len(bucket) <= 2:
                return None
            variants.append(self.compile(bucket[0], top))
            weights.append(self.compile(bucket[1], top) if len(bucket) == 2 else ONE)
        if not variants:
            return None
        if all(w.is_const for w in weights):
            values = [w.const for w in weights]
            if any(type(w) is not int for w in values):
                return None
            if fixed_key is not None:
                return fr.pick(fixed_key, values), variants
            return fr.static_selector(key_fn, values), variants
        if fixed_key is not None:
            key_fn = b.fixed_key(fixed_key)
        return fr.dynamic_selector(key_fn, [w.fn for w in weights]), variants

    def fractional(self, args: list[Any], top: bool) -> Expr:
        parts = self.fractional_parts(args, top)
        if parts is None:
            return NULL
        select, variants = parts
        if isinstance(select, int):
            chosen = variants[select] if select >= 0 else NULL
            return chosen.decided_by_fractional()
        return Expr(
            b.bucket_value(select, [v.fn for v in variants]),
            plain=all(v.plain for v in variants),
            fractional=True,
        )
