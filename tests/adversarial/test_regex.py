"""``regex_match`` with hostile patterns and inputs stays linear (RE2), and patterns RE2
cannot run are refused by control, with the path to the pattern.

The hostile patterns are the classic catastrophic-backtracking ones: on an input of a
few dozen characters a backtracking engine (Python's ``re``) takes exponential time —
shown below with a small input in a subprocess that is killed after a second — while
through the proxy, inputs of 200 000 characters evaluate like any other request. The
bound asserted is generous (seconds, against milliseconds measured): it tells linear
from exponential, not fast from slow.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import re2  # the engine the evaluator uses, for the expected answers
from world import World

HOSTILE = (
    "(a+)+$",
    "(a|aa)+$",
    "(a|a)*b",
    "(a*)*b",
    "(x+x+)+y",
    "^(([a-z])+.)+[A-Z]([a-z])+$",
    "(.*a){12}$",
    "(\\w+\\s?)*$",
    "^(a+)+$",
)
INPUTS = ("a" * 200_000 + "!", "x" * 200_000, "ab" * 100_000 + "!", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa!")
BOUND_SECONDS = 10.0

REFUSED = {
    "(a)\\1": "invalid escape sequence",  # backreference
    "(?P<n>a)(?P=n)": "RE2",  # named backreference
    "(?=a)b": "RE2",  # lookahead
    "(?!a)b": "RE2",
    "(?<=a)b": "RE2",  # lookbehind
    "a++": "RE2",  # possessive
    "a{1001}": "repetition",  # over RE2's counted-repetition limit
    "((a{100}){100}){100}": "RE2",
    "(": "missing )",
    "\\": "RE2",
    "\\p{NotAClass}": "RE2",
    "x" * 1025: "over the limit of 1024",
}


def rule(pattern: object) -> dict[str, object]:
    return {"if": [{"regex_match": [{"var": "s"}, pattern]}, "on", "off"]}


def test_the_patterns_are_hostile_to_a_backtracking_engine() -> None:
    code = "import re; re.search(r'(a+)+$', 'a' * 40 + '!')"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], timeout=1.0, check=False)


async def test_hostile_patterns_evaluate_in_linear_time_through_the_proxy(world: World) -> None:
    tenant = world.acme
    for i, pattern in enumerate(HOSTILE):
        variants = {"on": True, "off": False}
        flag = {"key": f"re-{i}", "type": "boolean", "variants": variants}
        await world.ok(tenant, "POST", "/projects/shop/flags", flag)
        state = {"state": "ENABLED", "defaultVariant": "off", "targeting": rule(pattern)}
        await world.ok(tenant, "PUT", f"/projects/shop/flags/re-{i}/environments/dev", state)
    await world.synced()

    key = {"Authorization": f"Bearer {world.acme.key('dev', 'client')}"}
    proxy = world.proxy
    slowest = 0.0
    for text in INPUTS:
        started = time.monotonic()
        async with proxy.session.post(
            proxy.url + "/ofrep/v1/evaluate/flags", headers=key, json={"context": {"s": text}}
        ) as response:
            assert response.status == 200
            flags = {f["key"]: f for f in (await response.json())["flags"]}
        slowest = max(slowest, time.monotonic() - started)
        for i, pattern in enumerate(HOSTILE):
            expected = re2.search(pattern, text) is not None
            assert flags[f"re-{i}"]["value"] is expected, (pattern, text[:20])
            assert flags[f"re-{i}"]["reason"] == "TARGETING_MATCH", flags[f"re-{i}"]
        for i, _pattern in enumerate(HOSTILE):
            started = time.monotonic()
            async with proxy.session.post(
                proxy.url + f"/ofrep/v1/evaluate/flags/re-{i}",
                headers=key,
                json={"context": {"s": text}},
            ) as response:
                assert response.status == 200
            slowest = max(slowest, time.monotonic() - started)
    assert slowest < BOUND_SECONDS, f"a regex evaluation took {slowest:.1f}s"


async def test_patterns_re2_cannot_run_are_refused_with_their_path(world: World) -> None:
    tenant = world.acme
    version = await world.central.db.fetchval("SELECT sum(version) FROM environments")
    for pattern, why in REFUSED.items():
        calls = [
            ("PUT", "/projects/shop/flags/hostile/environments/dev",
             {"state": "ENABLED", "defaultVariant": "off", "targeting": rule(pattern)},
             "targeting.if[0].regex_match[1]"),
            ("PUT", "/projects/shop/segments/re", {"definition": rule(pattern)},
             "definition.if[0].regex_match[1]"),
            ("POST", "/projects/shop/environments/dev/import",
             {"flags": {"x": {"state": "ENABLED", "variants": {"on": True, "off": False},
                              "defaultVariant": "off", "targeting": rule(pattern)}}},
             "flags.x.targeting.if[0].regex_match[1]"),
        ]  # fmt: skip
        for method, path, body, where in calls:
            status, answer, _ = await world.api(tenant, method, path, body)
            assert status == 422, (pattern, path, answer)
            [problem] = answer["errors"]
            assert problem["path"] == where, (pattern, problem)
            assert why in problem["message"], (pattern, problem)
    # A pattern that is not a literal string is refused too: it could not be checked.
    status, answer, _ = await world.api(
        tenant, "PUT", "/projects/shop/segments/re", {"definition": rule({"var": "p"})}
    )
    assert status == 422
    assert answer["errors"][0]["path"] == "definition.if[0].regex_match[1]"
    # Nothing was stored, nothing reached the edge.
    assert await world.central.db.fetchval("SELECT sum(version) FROM environments") == version
