"""openfeature-flagd-core (the reference flagd evaluator in Python) as a test oracle.

flagd-core 2.x implements fractional "v3": it hashes the CBOR encoding of the
bucketing value, and it is compared with Crivline's v3 as it is, unpatched. Crivline
also keeps v2 (the UTF-8 string; ``flagKey + targetingKey`` for the shorthand) for
environments created before v3: :func:`fractional_v2` swaps the oracle's encoding step
for v2's, leaving the rest of its fractional (weights, bucket arithmetic, the shorthand,
the error cases) to be compared as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.contrib.tools.flagd.core.targeting import custom_ops
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError

from crivline.flags import Resolution


class _V2Encoding:
    """Stands in for ``cbor2`` inside the oracle's fractional."""

    @staticmethod
    def dumps(value: Any, canonical: bool = True) -> bytes:
        if isinstance(value, str):
            return value.encode("utf-8")
        if (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)
        ):  # the shorthand: [flagKey, targetingKey]
            return (value[0] + value[1]).encode("utf-8")
        raise TypeError("fractional v2 buckets by strings only")


@contextmanager
def fractional_v2() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(custom_ops, "cbor2", _V2Encoding)
        yield


@dataclass(frozen=True)
class Outcome:
    """What both evaluators must agree on."""

    value: Any
    variant: str | None
    reason: str
    error_code: str | None


_NO_VALUE = object()


class Oracle:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.core = FlagdCore()
        self.core.set_flags(copy.deepcopy(doc))  # it consumes what it is given

    def evaluate(self, key: str, context: dict[str, Any]) -> Outcome:
        attributes = {k: v for k, v in context.items() if k != "targetingKey"}
        ctx = EvaluationContext(context.get("targetingKey"), attributes)
        try:
            details = self.core._resolve(key, _NO_VALUE, ctx)
        except OpenFeatureError as exc:
            return Outcome(None, None, "ERROR", exc.error_code.value)
        except Exception:  # e.g. ZeroDivisionError escapes flagd-core; an SDK reports GENERAL
            return Outcome(None, None, "ERROR", "GENERAL")
        value = None if details.value is _NO_VALUE else details.value
        return Outcome(value, details.variant, str(details.reason), None)


def outcome(r: Resolution) -> Outcome:
    """Ours, in the oracle's terms (the reasons are the same: a fractional's choice is
    TARGETING_MATCH in both)."""
    if r.error_code is not None:
        return Outcome(None, None, "ERROR", r.error_code.value)
    return Outcome(r.value, r.variant, r.reason.value, None)
