"""The flag model: validation and a compiled, flagd-conformant evaluator. Pure code.

Flag sets use the flagd flag definition (see ``docs/flag-format.md``)::

    {"flags": {key: {"state", "variants", "defaultVariant", "targeting", "metadata"}},
     "$evaluators": {name: rule}, "metadata": {...}}

Validation (the control API, before storing anything)::

    validate_flag_set(doc, *, types=None, limits=DEFAULT_LIMITS) -> None
    validate_flag(key, definition, *, flag_type=None, segments=None, limits=...) -> None
    validate_segment(name, fragment, *, segments=None, limits=...) -> None

Each raises :class:`FlagSetError` (and nothing else, whatever it is given) whose
``problems`` lists every :class:`Problem` ``(path, message)``, for example
``Problem("flags.new-checkout.targeting.if[0].in[1]", "...")``.

Evaluation (the proxy, on every request)::

    flag_set = compile_flag_set(doc, *, types=None, static_context=None)  # once per version
    recompile_flag_set(previous_doc, previous, doc)  # crivline.flags.incremental: only
                                                     # the flags a new version changed
    flag_set.evaluate(key, context) -> Resolution       # context: the JSON object
    flag_set.evaluate_all(context) -> list[Resolution]  # in flag-set order
    flag_set.keys, flag_set.metadata, len(flag_set), key in flag_set

Evaluation never raises. A :class:`Resolution` has ``key``, ``value`` (None when the
caller must use its code default), ``variant``, ``reason`` (:class:`Reason`),
``error_code`` (:class:`ErrorCode` or None), ``error_message`` and ``metadata`` (the
flag's over the flag set's). ``to_dict()`` / ``to_json()`` give the OFREP body (bytes
cached per result); ``ofrep_bulk_body(results, metadata)`` joins them for the bulk
endpoint. Results are shared between calls: treat them, their values and their
metadata as read-only.

Bounds (see ``budget``): each evaluation of targeting gets a work budget
(:class:`Budget`: work units and bytes built at run time; out of it, a GENERAL error)
and ``evaluate_all`` a budget per request; each flag's targeting compiles to at most
``Limits.max_compiled_bytes`` (``compiled_size_problem`` is that measurement, for
validation). Numbers are IEEE doubles, as in JavaScript.
"""

from crivline.flags.budget import DEFAULT_BUDGET, Budget
from crivline.flags.errors import FlagSetError, Problem
from crivline.flags.flagset import CompiledFlagSet, compile_flag_set, compiled_size_problem
from crivline.flags.model import (
    DEFAULT_LIMITS,
    FLAG_KEY_PATTERN,
    FLAG_TYPES,
    ErrorCode,
    Limits,
    Reason,
    Resolution,
    ofrep_bulk_body,
    ofrep_flags_part,
)
from crivline.flags.validate import validate_flag, validate_flag_set, validate_segment

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_LIMITS",
    "FLAG_KEY_PATTERN",
    "FLAG_TYPES",
    "Budget",
    "CompiledFlagSet",
    "ErrorCode",
    "FlagSetError",
    "Limits",
    "Problem",
    "Reason",
    "Resolution",
    "compile_flag_set",
    "compiled_size_problem",
    "ofrep_bulk_body",
    "ofrep_flags_part",
    "validate_flag",
    "validate_flag_set",
    "validate_segment",
]
