"""Evaluation results, their OpenFeature codes and OFREP form, and validation limits."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

FLAG_KEY_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
FLAG_KEY_RE: Final = re.compile(FLAG_KEY_PATTERN)

FLAG_TYPES: Final = ("boolean", "string", "integer", "float", "object")


class Reason(enum.StrEnum):
    """Why a flag has the value it has (OpenFeature resolution reasons)."""

    STATIC = "STATIC"  # no targeting: the default variant
    TARGETING_MATCH = "TARGETING_MATCH"  # targeting chose the variant
    SPLIT = "SPLIT"  # a ``fractional`` (percentage rollout) chose the variant
    DEFAULT = "DEFAULT"  # targeting chose nothing: the default variant, or the code default
    DISABLED = "DISABLED"  # the flag is disabled: the code default
    ERROR = "ERROR"  # see ``error_code``: the code default


class ErrorCode(enum.StrEnum):
    """OpenFeature error codes the evaluator produces."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PARSE_ERROR = "PARSE_ERROR"  # the flag's definition cannot be evaluated
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"  # reserved: flagd resolves these to DEFAULT
    INVALID_CONTEXT = "INVALID_CONTEXT"  # the context is not a JSON object
    GENERAL = "GENERAL"  # targeting failed or named a variant that does not exist


_EMPTY: Final[Mapping[str, Any]] = {}


class Resolution:
    """The result of evaluating one flag for one context. Immutable and shared.

    ``value`` is None exactly when there is no value: the caller uses its code default
    (a disabled flag, a flag without a default variant, any error). Results are built
    once per flag and variant when the flag set is compiled and handed out as they are,
    so ``value`` and ``metadata`` must be treated as read-only.
    """

    __slots__ = (
        "_body",
        "error_code",
        "error_message",
        "key",
        "metadata",
        "reason",
        "value",
        "variant",
    )

    key: str
    value: Any
    variant: str | None
    reason: Reason
    error_code: ErrorCode | None
    error_message: str | None
    metadata: Mapping[str, Any]
    _body: bytes | None

    def __init__(
        self,
        key: str,
        value: Any,
        variant: str | None,
        reason: Reason,
        error_code: ErrorCode | None = None,
        error_message: str | None = None,
        metadata: Mapping[str, Any] = _EMPTY,
    ) -> None:
        setter = object.__setattr__
        setter(self, "key", key)
        setter(self, "value", value)
        setter(self, "variant", variant)
        setter(self, "reason", reason)
        setter(self, "error_code", error_code)
        setter(self, "error_message", error_message)
        setter(self, "metadata", metadata)
        setter(self, "_body", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Resolution is immutable (tried to set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Resolution is immutable (tried to delete {name!r})")

    @property
    def has_value(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        """The OFREP evaluation body.

        Success: ``{"key", "value", "variant", "reason", "metadata"}`` with ``value``
        left out when there is none (OFREP's "use the code default"). ``variant`` is
        then null rather than absent, because openfeature-provider-ofrep reads it with
        ``data["variant"]``. Error: ``{"key", "errorCode", "errorDetails"}`` plus
        ``metadata`` when the flag has any.
        """
        if self.error_code is not None:
            body: dict[str, Any] = {
                "key": self.key,
                "errorCode": self.error_code,
                "errorDetails": self.error_message or self.error_code.value,
            }
            if self.metadata:
                body["metadata"] = self.metadata
            return body
        if self.value is None:
            return {
                "key": self.key,
                "variant": self.variant,
                "reason": self.reason,
                "metadata": self.metadata,
            }
        return {
            "key": self.key,
            "value": self.value,
            "variant": self.variant,
            "reason": self.reason,
            "metadata": self.metadata,
        }

    def to_json(self) -> bytes:
        """``to_dict()`` as JSON bytes, serialized once per result object."""
        body = self._body
        if body is None:
            body = orjson.dumps(self.to_dict())
            object.__setattr__(self, "_body", body)
        return body

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resolution):
            return NotImplemented
        return (
            self.key == other.key
            and self.variant == other.variant
            and self.reason == other.reason
            and self.error_code == other.error_code
            and self.error_message == other.error_message
            and type(self.value) is type(other.value)
            and self.value == other.value
            and self.metadata == other.metadata
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = [f"key={self.key!r}", f"reason={self.reason.value}"]
        if self.value is not None:
            parts.append(f"value={self.value!r}")
        if self.variant is not None:
            parts.append(f"variant={self.variant!r}")
        if self.error_code is not None:
            parts.append(f"error_code={self.error_code.value}")
            parts.append(f"error_message={self.error_message!r}")
        return f"Resolution({', '.join(parts)})"


def ofrep_bulk_body(
    results: Iterable[Resolution], metadata: Mapping[str, Any] | None = None
) -> bytes:
    """The OFREP bulk evaluation body ``{"flags": [...], "metadata": {...}}`` as bytes.

    Reuses each result's cached ``to_json()``, so a bulk answer costs one join.
    """
    meta = orjson.dumps(metadata) if metadata else b"{}"
    return ofrep_flags_part(results) + b',"metadata":' + meta + b"}"


def ofrep_flags_part(results: Iterable[Resolution]) -> bytes:
    """``{"flags":[...]`` — the bulk body up to its metadata, left open so a server can
    cache it and append its own members (the proxy adds ``eventStreams``)."""
    return b'{"flags":[' + b",".join([r.to_json() for r in results]) + b"]"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what validation accepts.

    ``max_bytes``: serialized size of the validated document (a flag set, a flag or a
    segment). ``max_depth``: nesting of arrays and objects in it. ``max_expanded_nodes``:
    operations in one flag's targeting after every ``$ref`` is inlined (segments that
    reference each other can otherwise grow exponentially). ``max_pattern_length``: the
    length of one ``regex_match`` pattern. ``max_compiled_bytes``: one flag's targeting
    (or one segment) as the evaluator compiles it — every node, every ``$ref`` counted at
    each use as if inlined, and the strings and arrays constant folding builds; the edge's
    compiler measures the same way and answers PARSE_ERROR past it.
    """

    max_bytes: int = 1_048_576
    max_depth: int = 64
    max_expanded_nodes: int = 20_000
    max_pattern_length: int = 1_024
    max_compiled_bytes: int = 2_097_152


DEFAULT_LIMITS: Final = Limits()
