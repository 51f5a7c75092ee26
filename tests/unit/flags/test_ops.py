"""Each JSONLogic operation, compiled and evaluated on data (JavaScript semantics)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from crivline.flags.compile import ExprCompiler
from crivline.flags.expr import CompileError

DATA: dict[str, Any] = {
    "targetingKey": "user-1",
    "email": "ann@example.com",
    "plan": "pro",
    "age": 42,
    "score": 2.5,
    "empty": "",
    "nothing": None,
    "tags": ["beta", "staff"],
    "nums": [1, 2, 3, 4],
    "user": {"id": 7, "name": "ann", "roles": ["admin"]},
    "version": "2.3.4",
}


def run(rule: Any, data: Any = None, flag_key: str = "my-flag") -> Any:
    expr = ExprCompiler(flag_key, {"is_pro": {"==": [{"var": "plan"}, "pro"]}}).compile(rule, True)
    return expr.fn(DATA if data is None else data)


CASES: list[tuple[Any, Any]] = [
    # var
    ({"var": "email"}, "ann@example.com"),
    ({"var": ["email"]}, "ann@example.com"),
    ({"var": "user.name"}, "ann"),
    ({"var": "user.roles.0"}, "admin"),
    ({"var": "tags.1"}, "staff"),
    ({"var": "tags.9"}, None),
    ({"var": "tags.length"}, 2),
    ({"var": "missing.deep.path"}, None),
    ({"var": ["missing", "fallback"]}, "fallback"),
    ({"var": ["nothing", "fallback"]}, "fallback"),
    ({"var": ["empty", "fallback"]}, ""),  # only missing/null take the default
    ({"var": {"cat": ["us", "er.id"]}}, 7),  # a computed path
    ({"var": "$flagd.flagKey"}, "my-flag"),
    ({"var": "targetingKey"}, "user-1"),
    # missing, missing_some
    ({"missing": ["email", "nope", "empty", "nothing"]}, ["nope", "empty", "nothing"]),
    ({"missing": [["email", "nope"]]}, ["nope"]),
    ({"missing_some": [1, ["email", "nope"]]}, []),
    ({"missing_some": [2, ["email", "nope"]]}, ["nope"]),
    # if
    ({"if": [True, "yes", "no"]}, "yes"),
    ({"if": [{"var": "empty"}, "yes", "no"]}, "no"),
    ({"if": [False, "a", False, "b", "c"]}, "c"),
    ({"if": [False, "a", True, "b", "c"]}, "b"),
    ({"if": [False, "a"]}, None),
    ({"?:": [{"var": "tags"}, "has", "none"]}, "has"),
    ({"if": [{"var": "user"}, "object is truthy", "no"]}, "object is truthy"),
    ({"if": [[], "empty array is falsy", "no"]}, "no"),
    # equality
    ({"==": [{"var": "age"}, "42"]}, True),
    ({"===": [{"var": "age"}, "42"]}, False),
    ({"!=": [{"var": "plan"}, "free"]}, True),
    ({"!==": [{"var": "age"}, 42]}, False),
    ({"==": [{"var": "nothing"}, 0]}, False),
    ({"==": [{"var": "nothing"}, None]}, True),
    ({"==": ["pro", {"var": "plan"}]}, True),
    # logic
    ({"!": [{"var": "empty"}]}, True),
    ({"!": {"var": "tags"}}, False),
    ({"!!": [{"var": "tags"}]}, True),
    ({"!!": [[]]}, False),
    ({"and": [True, {"var": "plan"}]}, "pro"),
    ({"and": [{"var": "empty"}, True]}, ""),
    ({"or": [{"var": "empty"}, 0, "x"]}, "x"),
    ({"or": [False, {"var": "nothing"}]}, None),
    # comparison
    ({">": [{"var": "age"}, 40]}, True),
    ({">=": [{"var": "age"}, 42]}, True),
    ({"<": [{"var": "score"}, "3"]}, True),
    ({"<=": ["a", "b"]}, True),
    ({"<": [1, {"var": "age"}, 50]}, True),
    ({"<": [1, {"var": "age"}, 42]}, False),
    ({"<=": [1, {"var": "age"}, 42]}, True),
    ({">": [{"var": "missing"}, -1]}, True),  # null is 0
    # arithmetic
    ({"+": [1, 2, "3"]}, 6),
    ({"+": ["1.5"]}, 1.5),
    ({"-": [10, 4]}, 6),
    ({"-": [2]}, -2),
    ({"*": [2, {"var": "score"}]}, 5.0),
    ({"/": [7, 2]}, 3.5),
    ({"%": [-7, 3]}, -1),
    ({"max": [1, {"var": "age"}, 3]}, 42),
    ({"min": [1, "-2", 3]}, -2),
    # arrays
    ({"in": ["beta", {"var": "tags"}]}, True),
    ({"in": [{"var": "plan"}, ["free", "pro"]]}, True),
    ({"in": [{"var": "age"}, ["42"]]}, False),  # strict, as Array.indexOf
    ({"in": [{"var": "age"}, [42, 43]]}, True),
    ({"in": ["@example", {"var": "email"}]}, True),
    ({"in": ["x", None]}, False),
    ({"merge": [[1, 2], 3, [[4]]]}, [1, 2, 3, [4]]),
    ({"map": [{"var": "nums"}, {"*": [{"var": ""}, 2]}]}, [2, 4, 6, 8]),
    ({"filter": [{"var": "nums"}, {">": [{"var": ""}, 2]}]}, [3, 4]),
    ({"reduce": [{"var": "nums"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}, 10),
    ({"reduce": ["not a list", {"var": "current"}, 5]}, 5),
    ({"all": [{"var": "nums"}, {">": [{"var": ""}, 0]}]}, True),
    ({"all": [[], True]}, False),
    ({"some": [{"var": "tags"}, {"==": [{"var": ""}, "staff"]}]}, True),
    ({"none": [{"var": "tags"}, {"==": [{"var": ""}, "x"]}]}, True),
    ({"none": ["not a list", True]}, True),
    ({"map": [{"var": "user.roles"}, {"var": "$flagd.flagKey"}]}, [None]),  # item scope
    # strings
    ({"cat": ["a", 1, 2.0, None, True, ["x", "y"]]}, "a12nulltruex,y"),
    ({"substr": ["jsonlogic", 4]}, "logic"),
    ({"substr": ["jsonlogic", -5]}, "logic"),
    ({"substr": ["jsonlogic", 1, 3]}, "son"),
    ({"substr": ["jsonlogic", 4, -2]}, "log"),
    ({"log": [{"var": "plan"}]}, "pro"),
    # flagd
    ({"starts_with": [{"var": "email"}, "ann"]}, True),
    ({"ends_with": [{"var": "email"}, ".com"]}, True),
    ({"ends_with": [{"var": "age"}, "2"]}, None),
    ({"starts_with": [{"var": "email"}, 3]}, None),
    ({"starts_with": [{"var": "email"}, {"var": "plan"}]}, False),
    ({"starts_with": ["abc"]}, None),
    ({"sem_ver": [{"var": "version"}, ">=", "2.3.0"]}, True),
    ({"sem_ver": [{"var": "version"}, "^", {"var": "version"}]}, True),
    ({"sem_ver": [{"var": "version"}, "bogus", "1.0.0"]}, None),
    ({"sem_ver": [{"var": "version"}, "="]}, None),
    ({"fractional": [["only", 1]]}, "only"),
    # the extension
    ({"regex_match": [{"var": "email"}, "^[a-z]+@example\\.com$"]}, True),
    ({"regex_match": [{"var": "email"}, "(?i)ANN@"]}, True),
    ({"regex_match": [{"var": "plan"}, "^free$"]}, False),
    ({"regex_match": [{"var": "age"}, "4"]}, None),
    # segments
    ({"$ref": "is_pro"}, True),
    ({"!": {"$ref": "is_pro"}}, False),
    # literals
    ({"a": 1, "b": 2}, {"a": 1, "b": 2}),  # not an operation
    ([1, {"var": "age"}], [1, 42]),
]


def kind(value: Any) -> str:
    """JavaScript's type: ints and floats are both numbers, booleans are not."""
    t = type(value)
    return "number" if t is int or t is float else t.__name__


@pytest.mark.parametrize(("rule", "expected"), CASES, ids=[str(c[0])[:60] for c in CASES])
def test_operation(rule: Any, expected: Any) -> None:
    got = run(rule)
    assert (kind(got), got) == (kind(expected), expected)


def test_timestamp_is_now_in_seconds() -> None:
    before = int(time.time())
    got = run({"var": "$flagd.timestamp"})
    assert type(got) is int
    assert before <= got <= int(time.time())


def test_whole_data_at_the_top_includes_flagd() -> None:
    got = run({"var": ""}, {"a": 1})
    assert got["a"] == 1
    assert got["$flagd"]["flagKey"] == "my-flag"


@pytest.mark.parametrize(
    "rule",
    [
        {"nope": [1]},
        {"$ref": "missing"},
        {"$ref": 3},
        {"regex_match": [{"var": "email"}, "(unclosed"]},
        {"regex_match": [{"var": "email"}, "(a)\\1"]},  # backreferences are not RE2
        {"regex_match": [{"var": "email"}, {"var": "plan"}]},
        {"if": [True, {"unknown_inside": []}, 1]},
    ],
)
def test_uncompilable(rule: Any) -> None:
    with pytest.raises(CompileError):
        run(rule)


def test_cycles_are_refused() -> None:
    compiler = ExprCompiler("f", {"a": {"$ref": "b"}, "b": {"!": {"$ref": "a"}}})
    with pytest.raises(CompileError, match="cycle"):
        compiler.compile({"$ref": "a"}, True)


def test_constant_operations_fold() -> None:
    compiler = ExprCompiler("f", {})
    expr = compiler.compile({"if": [{"==": [1, 1]}, {"cat": ["a", "b"]}, "c"]}, True)
    assert expr.is_const
    assert expr.const == "ab"
    assert compiler.compile({"var": "$flagd.flagKey"}, True).const == "f"
    assert not compiler.compile({"var": "x"}, True).is_const


def test_regex_is_linear_time() -> None:
    evil = "(a+)+$"  # catastrophic for backtracking engines
    started = time.perf_counter()
    assert run({"regex_match": [{"var": "s"}, evil]}, {"s": "a" * 50_000 + "!"}) is False
    assert time.perf_counter() - started < 5  # a backtracking engine would never finish
