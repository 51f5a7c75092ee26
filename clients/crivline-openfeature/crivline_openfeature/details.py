"""From an OpenFeature call to our evaluator and back. Pure code.

The context the evaluator sees is the one an OFREP request would carry (what
``openfeature-provider-ofrep`` sends): ``targetingKey`` (when set), then the
attributes; a ``datetime`` becomes its ISO 8601 text, as it would in JSON.

The answer is the OFREP answer as the SDK's OFREP provider reads it: a value, variant,
reason and the flag's metadata; when the flag has no value (disabled, no default
variant) the caller's default with the flag's reason; on an evaluation error the
caller's default, reason ``ERROR``, the evaluator's error code and message (exactly
the OFREP ``errorCode``/``errorDetails``) and the flag's metadata. A value of the wrong
type for the call is ``TYPE_MISMATCH``, with the types checked the way the SDK checks
them (``isinstance``). Object values are copied per call: the prebuilt results are
shared, and an application must not be able to change them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Final

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagType, Reason

from crivline.flags import ErrorCode as OurErrorCode
from crivline.flags import Reason as OurReason
from crivline.flags import Resolution

_REASONS: Final = {reason: Reason(reason.value) for reason in OurReason}
_ERRORS: Final = {code: ErrorCode(code.value) for code in OurErrorCode}

_EXPECTED: Final[dict[FlagType, type | tuple[type, ...]]] = {
    FlagType.BOOLEAN: bool,
    FlagType.STRING: str,
    FlagType.INTEGER: int,
    FlagType.FLOAT: float,
    FlagType.OBJECT: (dict, list),
}
_PLAIN: Final = frozenset({str, int, float, bool, type(None)})
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


def context_of(evaluation_context: EvaluationContext | None) -> dict[str, Any]:
    """The JSON evaluation context of an OpenFeature context."""
    if evaluation_context is None:
        return {}
    context: dict[str, Any] = {}
    if evaluation_context.targeting_key:
        context["targetingKey"] = evaluation_context.targeting_key
    attributes = evaluation_context.attributes
    if attributes:
        context.update(attributes)
        if not all(type(v) in _PLAIN for v in context.values()):
            context = {k: _json(v) for k, v in context.items()}
    return context


def _json(value: Any) -> Any:
    t = type(value)
    if t in _PLAIN:
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def _copy(value: Any) -> Any:
    t = type(value)
    if t is dict:
        return {k: _copy(v) for k, v in value.items()}
    if t is list:
        return [_copy(v) for v in value]
    return value


def _metadata(result: Resolution) -> Mapping[str, Any]:
    return MappingProxyType(result.metadata) if result.metadata else _EMPTY


def details_of(
    result: Resolution, flag_type: FlagType, default_value: Any
) -> FlagResolutionDetails[Any]:
    """The OpenFeature resolution of one evaluator result for a call of ``flag_type``."""
    code = result.error_code
    if code is not None:
        return FlagResolutionDetails(
            value=default_value,
            error_code=_ERRORS[code],
            error_message=result.error_message or code.value,
            reason=Reason.ERROR,
            flag_metadata=_metadata(result),
        )
    value = result.value
    if value is None:
        return FlagResolutionDetails(
            value=default_value,
            reason=_REASONS[result.reason],
            variant=result.variant,
            flag_metadata=_metadata(result),
        )
    expected = _EXPECTED[flag_type]
    if not isinstance(value, expected) or (
        type(value) is bool and flag_type is not FlagType.BOOLEAN
    ):
        return FlagResolutionDetails(
            value=default_value,
            error_code=ErrorCode.TYPE_MISMATCH,
            error_message=(
                f"flag {result.key!r} is {_kind(value)}, not {flag_type.value.lower()} "
                f"(variant {result.variant!r})"
            ),
            reason=Reason.ERROR,
            flag_metadata=_metadata(result),
        )
    if flag_type is FlagType.OBJECT:
        value = _copy(value)
    return FlagResolutionDetails(
        value=value,
        reason=_REASONS[result.reason],
        variant=result.variant,
        flag_metadata=_metadata(result),
    )


def not_ready(default_value: Any, why: str) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        value=default_value,
        error_code=ErrorCode.PROVIDER_NOT_READY,
        error_message=why,
        reason=Reason.ERROR,
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    return "an object"
