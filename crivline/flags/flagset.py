"""A compiled flag set: one call per evaluation, results built at compile time.

Every answer a flag can give that does not depend on an error message — each variant
as TARGETING_MATCH, the default as STATIC or DEFAULT, DISABLED — is a
:class:`Resolution` built once here. Targeting compiles "in tail position": the
branches of ``if`` and the buckets of ``fractional`` that produce the flag's answer
map straight to those prebuilt results, so a typical evaluation is a few closure calls
and returns an existing object.

Budgets (``budget``): compiling a flag's targeting may build at most
``Limits.max_compiled_bytes`` (its nodes with every ``$ref`` inlined, and what constant
folding builds), else the flag answers PARSE_ERROR — :func:`compiled_size_problem` is the
same measurement for validation. Every evaluation of targeting gets a fresh
:class:`~crivline.flags.budget.Budget` (the entry resets the meter) and ends in a GENERAL
error, never a stall, when it runs out; ``evaluate_all`` also bounds the request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from crivline.flags import builders
from crivline.flags.budget import (
    BYTES_PER_UNIT,
    DEFAULT_BUDGET,
    METER,
    Budget,
    BudgetExceeded,
    describe,
)
from crivline.flags.coerce import truthy, variant_name
from crivline.flags.compile import ExprCompiler
from crivline.flags.errors import FlagSetError, Problem
from crivline.flags.expr import CompileError, Expr
from crivline.flags.fractional import LEGACY_SCHEME, Scheme, scheme_of
from crivline.flags.messages import key_path
from crivline.flags.model import DEFAULT_LIMITS, ErrorCode, Limits, Reason, Resolution
from crivline.flags.ops import arguments

log = logging.getLogger(__name__)

Evaluate = Callable[[Mapping[str, Any]], Resolution]
Entry = Resolution | Evaluate
Tail = Resolution | Evaluate

_NO_METADATA: Final[Mapping[str, Any]] = {}


def _error(
    key: str, code: ErrorCode, message: str, metadata: Mapping[str, Any] = _NO_METADATA
) -> Resolution:
    return Resolution(key, None, None, Reason.ERROR, code, message, metadata)


def _describe(value: Any) -> str:
    t = type(value)
    if t is list:
        return "an array"
    if t is dict:
        return "an object"
    return repr(value)


class _Answers:
    """The prebuilt results of one flag."""

    def __init__(
        self, key: str, values: Mapping[str, Any], default: str | None, metadata: Mapping[str, Any]
    ) -> None:
        self.key = key
        self.values = values
        self.metadata = metadata
        self._match: dict[str, Resolution] = {}
        self.default = self._default(default, Reason.DEFAULT)
        self.static = self._default(default, Reason.STATIC)

    def _default(self, name: str | None, reason: Reason) -> Resolution:
        if name is None:
            return Resolution(self.key, None, None, Reason.DEFAULT, metadata=self.metadata)
        value = self.values.get(name)
        if value is None:
            return _error(
                self.key,
                ErrorCode.GENERAL,
                f"the default variant {name!r} is not one of the flag's variants",
                self.metadata,
            )
        return Resolution(self.key, value, name, reason, metadata=self.metadata)

    def variant(self, name: str, split: bool) -> Resolution:
        # A variant a ``fractional`` chose (``split``) is TARGETING_MATCH too: that is what
        # current flagd and its providers report (openfeature-flagd-core 2.x included),
        # and an SDK moving between them must see the same reason.
        hit = self._match.get(name)
        if hit is not None:
            return hit
        value = self.values.get(name)
        if value is None:
            return self.unknown(name)
        hit = Resolution(self.key, value, name, Reason.TARGETING_MATCH, metadata=self.metadata)
        self._match[name] = hit
        return hit

    def unknown(self, name: str) -> Resolution:
        return _error(
            self.key,
            ErrorCode.GENERAL,
            f"targeting chose variant {name!r}, which flag {self.key!r} does not have",
            self.metadata,
        )

    def for_value(self, value: Any, split: bool) -> Resolution:
        """The answer when targeting evaluates to ``value``."""
        if value is None:
            return self.default
        name = variant_name(value)
        if name is None:
            return _error(
                self.key,
                ErrorCode.GENERAL,
                f"targeting returned {_describe(value)}, not a variant name",
                self.metadata,
            )
        return self.variant(name, split)

    def mapper(self, fn: Callable[[Any], Any], split: bool) -> Evaluate:
        """Targeting whose value is only known at evaluation time."""
        table = {name: self.variant(name, split) for name in self.values}
        for_value = self.for_value

        def resolve(ctx: Mapping[str, Any]) -> Resolution:
            v = fn(ctx)
            if type(v) is str:
                hit = table.get(v)
                if hit is not None:
                    return hit
            return for_value(v, split)

        return resolve


class _TailCompiler:
    """Compiles targeting into a function from the context to a prebuilt result."""

    def __init__(self, exprs: ExprCompiler, answers: _Answers) -> None:
        self.exprs = exprs
        self.answers = answers

    def tail(self, node: Any, split: bool) -> Tail:
        try:
            return self._tail(node, split)
        except BudgetExceeded as exc:
            exc.trail.append(node)
            raise

    def _tail(self, node: Any, split: bool) -> Tail:
        if type(node) is dict and len(node) == 1:
            op, raw = next(iter(node.items()))
            if op == "$ref" and type(raw) is str:
                segment = self.exprs.segment(raw)
                self.exprs.enter(raw)
                try:
                    return self.tail(segment, split)
                finally:
                    self.exprs.leave()
            if op in ("if", "?:"):
                return self._if(arguments(raw), split)
            if op == "fractional":
                return self._fractional(arguments(raw))
        expr = self.exprs.compile(node, top=True)
        return self._leaf(expr, split)

    def _leaf(self, expr: Expr, split: bool) -> Tail:
        split = split or expr.fractional
        if expr.is_const:
            return self.answers.for_value(expr.const, split)
        return self.answers.mapper(expr.fn, split)

    def _if(self, args: list[Any], split: bool) -> Tail:
        if not args:
            return self.answers.default
        if len(args) == 1:
            return self.tail(args[0], split)
        branches: list[tuple[Expr, Tail]] = []
        otherwise: Tail | None = None
        for i in range(0, len(args) - 1, 2):
            cond = self.exprs.compile(args[i], top=True)
            split = split or cond.fractional
            if cond.is_const:
                if truthy(cond.const):
                    otherwise = self.tail(args[i + 1], split)
                    break
                continue
            branches.append((cond, self.tail(args[i + 1], split)))
        if otherwise is None:
            otherwise = self.tail(args[-1], split) if len(args) % 2 else self.answers.default
        if not branches:
            return otherwise
        if len(branches) == 1:
            return _choice(branches[0][0], branches[0][1], otherwise)
        table = tuple((c.fn, c.plain, _as_function(t)) for c, t in branches)
        final = _as_function(otherwise)

        def chain(ctx: Mapping[str, Any]) -> Resolution:
            for cf, plain, then in table:
                v = cf(ctx)
                if v if plain else truthy(v):
                    return then(ctx)
            return final(ctx)

        return chain

    def _fractional(self, args: list[Any]) -> Tail:
        parts = self.exprs.fractional_parts(args, top=True)
        if parts is None:
            return self.answers.default
        select, variants = parts
        buckets = [self._leaf(v, split=True) for v in variants]
        if isinstance(select, int):
            return buckets[select] if select >= 0 else self.answers.default
        default = self.answers.default
        if all(isinstance(b, Resolution) for b in buckets):
            fixed = tuple(buckets)

            def split_fixed(ctx: Mapping[str, Any]) -> Resolution:
                i = select(ctx)
                return fixed[i] if i >= 0 else default  # type: ignore[return-value]

            return split_fixed
        functions = tuple(_as_function(b) for b in buckets)

        def split_dynamic(ctx: Mapping[str, Any]) -> Resolution:
            i = select(ctx)
            return functions[i](ctx) if i >= 0 else default

        return split_dynamic


def _as_function(tail: Tail) -> Evaluate:
    if not isinstance(tail, Resolution):
        return tail
    result = tail

    def answer(_ctx: Mapping[str, Any]) -> Resolution:
        return result

    return answer


def _choice(cond: Expr, then: Tail, otherwise: Tail) -> Evaluate:
    """A two-way ``if`` in tail position (the most common targeting shape)."""
    cf = cond.fn
    if isinstance(then, Resolution) and isinstance(otherwise, Resolution):
        yes, no = then, otherwise
        if cond.plain:

            def pick_plain(ctx: Mapping[str, Any]) -> Resolution:
                return yes if cf(ctx) else no

            return pick_plain

        def pick(ctx: Mapping[str, Any]) -> Resolution:
            return yes if truthy(cf(ctx)) else no

        return pick
    return builders.choose(cf, cond.plain, _as_function(then), _as_function(otherwise))


def _guard(
    fn: Evaluate, key: str, metadata: Mapping[str, Any], budget: Budget = DEFAULT_BUDGET
) -> Evaluate:
    meter = METER
    work = budget.work

    def evaluate(ctx: Mapping[str, Any]) -> Resolution:
        meter.work = work  # a fresh budget for this evaluation
        try:
            return fn(ctx)
        except BudgetExceeded as exc:
            meter.exceeded += 1
            return _error(key, ErrorCode.GENERAL, describe(exc.kind, budget), metadata)
        except RecursionError:
            # Deep data built at run time (an array nested in itself by reduce).
            return _error(key, ErrorCode.GENERAL, "targeting nested its data too deeply", metadata)
        except Exception:  # evaluation never raises: report, don't crash
            # A bug in an operation: logged for the operator, not shown to the caller.
            log.exception("targeting failed", extra={"fields": {"flag": key}})
            return _error(
                key,
                ErrorCode.GENERAL,
                "targeting failed on this context; it has been logged",
                metadata,
            )

    return evaluate


def trail_path(root: Any, trail: list[Any], base: str) -> tuple[str, str | None]:
    """Where in ``root`` the nodes of ``trail`` (innermost first) lead: the path in
    validation's notation, and the segment it went into through a ``$ref`` (if any)."""
    chain: list[Any] = []
    for node in reversed(trail):  # a node the tail compiler handed to the expression one
        if not chain or chain[-1] is not node:  # appears twice in a row
            chain.append(node)
    if not chain or chain[0] is not root:
        return base, None
    path, node = base, root
    for nxt in chain[1:]:
        if type(node) is dict and len(node) == 1:
            op, raw = next(iter(node.items()))
            if op == "$ref":
                return path, raw if type(raw) is str else None
            here = key_path(path, op)
            if raw is nxt:
                path, node = here, nxt
                continue
            found = _child_path(raw, nxt, here) if type(raw) is list else None
        elif type(node) is list:
            found = _child_path(node, nxt, path)
        else:
            found = None
        if found is None:
            break
        path, node = found, nxt
    if type(node) is dict and len(node) == 1 and "$ref" in node:
        raw = node["$ref"]
        return key_path(path, "$ref"), raw if type(raw) is str else None
    return path, None


def _child_path(items: list[Any], target: Any, path: str) -> str | None:
    for i, item in enumerate(items):
        if item is target:
            return f"{path}[{i}]"
    for i, item in enumerate(items):  # a fractional bucket: [variant, weight]
        if type(item) is list:
            for j, inner in enumerate(item):
                if inner is target:
                    return f"{path}[{i}][{j}]"
    return None


def _too_big(exc: BudgetExceeded, targeting: Any, base: str, limits: Limits) -> Problem:
    path, segment = trail_path(targeting, exc.trail, base)
    inside = f" (inside segment {segment!r})" if segment is not None else ""
    what = (
        f"it compiles to more than {limits.max_compiled_bytes} bytes "
        "(every $ref inlined where it is used, constant operations folded)"
    )
    return Problem(path, f"this rule is too large to serve: {what}{inside}")


def _compile_targeting(
    key: str,
    targeting: Any,
    segments: Mapping[str, Any],
    answers: _Answers,
    limits: Limits,
    bucketing: Scheme = LEGACY_SCHEME,
) -> Tail:
    # Compiled size is metered in the evaluator's units: bytes / BYTES_PER_UNIT.
    METER.work = limits.max_compiled_bytes // BYTES_PER_UNIT
    METER.close_pool()
    return _TailCompiler(ExprCompiler(key, segments, bucketing), answers).tail(
        targeting, split=False
    )


def compiled_size_problem(
    key: str,
    targeting: Any,
    segments: Mapping[str, Any],
    *,
    base: str = "targeting",
    limits: Limits = DEFAULT_LIMITS,
) -> Problem | None:
    """Whether ``targeting`` is over the compiled-size bound — measured exactly as the
    edge's compiler measures it — and where. Other problems are validation's to report."""
    answers = _Answers(key, {}, None, _NO_METADATA)
    try:
        _compile_targeting(key, targeting, segments, answers, limits)
    except BudgetExceeded as exc:
        return _too_big(exc, targeting, base, limits)
    except (CompileError, RecursionError):
        return None
    return None


def _variant_values(variants: Mapping[str, Any], flag_type: str | None) -> dict[str, Any]:
    """Variant values as served: ints become floats in a float flag (declared, or with a
    float among its number variants), so a flag's values keep one JSON type."""
    values = dict(variants)
    numbers = {k: v for k, v in values.items() if type(v) is int}
    if numbers and (
        flag_type == "float"
        or (flag_type is None and any(type(v) is float for v in values.values()))
    ):
        for k, v in numbers.items():
            try:
                values[k] = float(v)
            except OverflowError:
                pass
    return values


def compile_flag(
    key: str,
    definition: Any,
    segments: Mapping[str, Any],
    set_metadata: Mapping[str, Any],
    flag_type: str | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    budget: Budget = DEFAULT_BUDGET,
    bucketing: Scheme = LEGACY_SCHEME,
) -> tuple[Entry, dict[str, Any]]:
    """One flag's evaluation (a constant result, or a function of the context) and its
    metadata (the flag's over the flag set's)."""
    metadata = dict(set_metadata)
    if isinstance(definition, Mapping) and isinstance(definition.get("metadata"), Mapping):
        metadata.update(definition["metadata"])
    entry = _compile_flag(key, definition, segments, metadata, flag_type, limits, budget, bucketing)
    return entry, metadata


def _compile_flag(
    key: str,
    definition: Any,
    segments: Mapping[str, Any],
    metadata: dict[str, Any],
    flag_type: str | None,
    limits: Limits,
    budget: Budget,
    bucketing: Scheme,
) -> Entry:
    def parse_error(message: str) -> Resolution:
        return _error(key, ErrorCode.PARSE_ERROR, message, metadata)

    if not isinstance(definition, Mapping):
        return parse_error("the flag definition is not an object")
    state = definition.get("state")
    if state not in ("ENABLED", "DISABLED"):
        return parse_error(f"state must be ENABLED or DISABLED, not {state!r}")
    variants = definition.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        return parse_error("variants must be a non-empty object")
    if state == "DISABLED":
        return Resolution(key, None, None, Reason.DISABLED, metadata=metadata)
    default = definition.get("defaultVariant")
    if type(default) is bool:
        default = "true" if default else "false"
    if default == "":
        default = None
    if default is not None and type(default) is not str:
        return parse_error(f"defaultVariant must be a variant name, not {_describe(default)}")
    answers = _Answers(key, _variant_values(variants, flag_type), default, metadata)
    targeting = definition.get("targeting")
    if not targeting:  # absent, null or {}: no targeting
        return answers.static
    if type(targeting) is not dict:
        return parse_error("targeting must be a JSONLogic rule (an object)")
    try:
        tail = _compile_targeting(key, targeting, segments, answers, limits, bucketing)
    except CompileError as exc:
        return parse_error(f"invalid targeting: {exc}")
    except RecursionError:
        return parse_error("invalid targeting: nested too deeply")
    except BudgetExceeded as exc:
        return parse_error(str(_too_big(exc, targeting, "targeting", limits)))
    if isinstance(tail, Resolution):
        return tail
    return _guard(tail, key, metadata, budget)


class CompiledFlagSet:
    """A flag set ready to evaluate. Evaluation is pure and never raises."""

    __slots__ = (
        "_budget",
        "_entries",
        "_flag_metadata",
        "_order",
        "_static_context",
        "keys",
        "metadata",
    )

    def __init__(
        self,
        entries: Mapping[str, tuple[Entry, dict[str, Any]]],
        metadata: Mapping[str, Any],
        static_context: Mapping[str, Any] | None = None,
        budget: Budget = DEFAULT_BUDGET,
    ) -> None:
        self._budget = budget
        self._entries: dict[str, Entry] = {k: e for k, (e, _) in entries.items()}
        self._flag_metadata: dict[str, dict[str, Any]] = {k: m for k, (_, m) in entries.items()}
        self._order: tuple[Entry, ...] = tuple(self._entries.values())
        self._static_context = dict(static_context) if static_context else None
        self.keys: tuple[str, ...] = tuple(self._entries)
        self.metadata: Mapping[str, Any] = metadata

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def compiled(self, key: str) -> tuple[Entry, dict[str, Any]] | None:
        """Flag ``key`` as compiled (its evaluation and metadata), for reuse by
        :func:`crivline.flags.incremental.recompile_flag_set`."""
        entry = self._entries.get(key)
        return None if entry is None else (entry, self._flag_metadata[key])

    def evaluate(self, key: str, context: Mapping[str, Any]) -> Resolution:
        """The result of flag ``key`` for ``context`` (a JSON object; the targeting key
        is its ``targetingKey``)."""
        try:
            entry = self._entries.get(key)
        except TypeError:  # an unhashable key: no flag has it
            entry = None
        if entry is None:
            return _error(str(key), ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} does not exist")
        if type(context) is not dict and not isinstance(context, Mapping):
            return self._invalid_context(key, context)
        if type(entry) is Resolution:
            return entry
        if self._static_context is not None:
            context = {**self._static_context, **context}
        return entry(context)  # type: ignore[operator]

    def evaluate_all(self, context: Mapping[str, Any]) -> list[Resolution]:
        """Every flag's result for ``context``, in the flag set's order."""
        if type(context) is not dict and not isinstance(context, Mapping):
            return [self._invalid_context(key, context) for key in self.keys]
        if self._static_context is not None:
            context = {**self._static_context, **context}
        budget = self._budget
        METER.open_pool(budget.request_work)
        try:
            return [e if type(e) is Resolution else e(context) for e in self._order]  # type: ignore[operator]
        finally:
            METER.close_pool()

    def _invalid_context(self, key: str, context: object) -> Resolution:
        metadata = self._flag_metadata.get(key, _NO_METADATA)
        return _error(
            key,
            ErrorCode.INVALID_CONTEXT,
            f"the evaluation context must be a JSON object, not {type(context).__name__}",
            metadata,
        )


def compile_flag_set(
    doc: Mapping[str, Any],
    *,
    types: Mapping[str, str] | None = None,
    static_context: Mapping[str, Any] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    budget: Budget = DEFAULT_BUDGET,
    bucketing: Scheme | None = None,
) -> CompiledFlagSet:
    """Compile a flag-set document (validate it first with ``validate_flag_set``).

    A flag that cannot be compiled answers PARSE_ERROR instead of failing the set;
    only a document without a ``flags`` object raises :class:`FlagSetError`. ``types``
    (flag key → declared type) makes integer variants of float flags serve as floats.
    ``static_context`` is merged under every evaluation context (like flagd's sync
    context): the request's own keys win. ``limits.max_compiled_bytes`` bounds each
    flag's compiled size (over it: PARSE_ERROR); ``budget`` bounds each evaluation and
    each ``evaluate_all``. ``bucketing`` is the ``fractional`` scheme; by default the one
    the set's ``metadata.fractionalBucketing`` names, else v2.
    """
    if not isinstance(doc, Mapping):
        raise FlagSetError([Problem("", "a flag set must be a JSON object")])
    flags = doc.get("flags")
    if not isinstance(flags, Mapping):
        raise FlagSetError([Problem("flags", "a flag set needs a 'flags' object")])
    segments = doc.get("$evaluators")
    if not isinstance(segments, Mapping):
        segments = {}
    set_metadata = doc.get("metadata")
    if not isinstance(set_metadata, Mapping):
        set_metadata = {}
    types = types or {}
    scheme = bucketing or scheme_of(set_metadata)
    entries = {
        str(key): compile_flag(
            str(key),
            definition,
            segments,
            set_metadata,
            types.get(key),
            limits=limits,
            budget=budget,
            bucketing=scheme,
        )
        for key, definition in flags.items()
    }
    return CompiledFlagSet(entries, dict(set_metadata), static_context, budget)
