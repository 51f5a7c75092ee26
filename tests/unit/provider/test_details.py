"""From OpenFeature calls to our evaluator and back (pure): contexts, the answer's
fields, TYPE_MISMATCH, copies of object values, options."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagType, Reason

from crivline.flags import compile_flag_set
from crivline_openfeature import CrivlineProvider, InvalidOptions
from crivline_openfeature.details import context_of, details_of

FLAGS = compile_flag_set(
    {
        "flags": {
            "obj": {
                "state": "ENABLED",
                "variants": {"a": {"nested": [1, {"x": 2}]}},
                "defaultVariant": "a",
                "metadata": {"owner": "web"},
            },
            "num": {"state": "ENABLED", "variants": {"one": 1}, "defaultVariant": "one"},
            "off-but-true": {"state": "ENABLED", "variants": {"t": True}, "defaultVariant": "t"},
            "off": {"state": "DISABLED", "variants": {"on": True}, "defaultVariant": "on"},
            "since": {
                "state": "ENABLED",
                "variants": {"new": "new", "old": "old"},
                "defaultVariant": "old",
                "targeting": {"if": [{">=": [{"var": "signup"}, "2026-01-01"]}, "new", "old"]},
            },
        },
        "metadata": {"flagSetId": "app/prod"},
    }
)


def test_the_context_is_what_an_ofrep_request_would_carry() -> None:
    assert context_of(None) == {}
    assert context_of(EvaluationContext()) == {}
    assert context_of(EvaluationContext("u-1", {"plan": "pro"})) == {
        "targetingKey": "u-1",
        "plan": "pro",
    }
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    ctx = context_of(EvaluationContext("", {"signup": when, "deep": {"at": [when]}}))
    assert ctx == {"signup": when.isoformat(), "deep": {"at": [when.isoformat()]}}
    result = FLAGS.evaluate("since", ctx)
    assert result.variant == "new"


def test_object_values_are_copies_and_metadata_is_read_only() -> None:
    first = details_of(FLAGS.evaluate("obj", {}), FlagType.OBJECT, {})
    first.value["nested"][1]["x"] = 99
    second = details_of(FLAGS.evaluate("obj", {}), FlagType.OBJECT, {})
    assert second.value == {"nested": [1, {"x": 2}]}
    assert dict(second.flag_metadata) == {"flagSetId": "app/prod", "owner": "web"}
    with pytest.raises(TypeError):
        second.flag_metadata["owner"] = "me"  # type: ignore[index]


@pytest.mark.parametrize(
    ("key", "flag_type", "default"),
    [
        ("num", FlagType.STRING, "d"),
        ("num", FlagType.FLOAT, 0.5),
        ("num", FlagType.BOOLEAN, False),
        ("obj", FlagType.INTEGER, 7),
        ("off-but-true", FlagType.INTEGER, 7),
        ("off-but-true", FlagType.FLOAT, 0.5),
    ],
)
def test_a_value_of_another_type_is_a_type_mismatch(
    key: str, flag_type: FlagType, default: Any
) -> None:
    details = details_of(FLAGS.evaluate(key, {}), flag_type, default)
    assert details.error_code is ErrorCode.TYPE_MISMATCH
    assert details.value == default
    assert details.reason == Reason.ERROR
    assert key in (details.error_message or "")


def test_no_value_gives_the_default_with_the_flags_reason() -> None:
    details = details_of(FLAGS.evaluate("off", {}), FlagType.BOOLEAN, True)
    assert (details.value, details.reason, details.variant, details.error_code) == (
        True,
        Reason.DISABLED,
        None,
        None,
    )
    missing = details_of(FLAGS.evaluate("nope", {}), FlagType.BOOLEAN, True)
    assert missing.error_code is ErrorCode.FLAG_NOT_FOUND
    assert missing.error_message == "flag 'nope' does not exist"


def test_before_initialize_every_answer_is_not_ready() -> None:
    provider = CrivlineProvider("http://127.0.0.1:9", "crv_srv_x")
    details = provider.resolve_string_details("any", "d")
    assert (details.value, details.error_code) == ("d", ErrorCode.PROVIDER_NOT_READY)


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (("edge.example", "crv_srv_x"), {}, "http(s) URL"),
        (("http://e/?a=1", "crv_srv_x"), {}, "query"),
        (("http://e", ""), {}, "server key"),
        (("http://e", "crv_cli_abc"), {}, "client key"),
        (("http://e", "crv_srv_x"), {"stale_after": 0}, "stale_after must be a positive"),
        (("http://e", "crv_srv_x"), {"poll_interval": "5"}, "poll_interval must be a number"),
        (("http://e", "crv_srv_x"), {"stream": "yes"}, "stream must be True or False"),
        (("http://e", "crv_srv_x"), {"reconnect_min": 9, "reconnect_max": 1}, "larger than"),
        (("http://e", "crv_srv_x"), {"polling": True}, "unknown option(s) polling"),
    ],
)
def test_bad_arguments_are_refused_with_a_precise_message(
    args: tuple[Any, ...], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOptions, match=message.replace("(", r"\(").replace(")", r"\)")):
        CrivlineProvider(*args, **options)
