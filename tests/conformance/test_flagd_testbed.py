"""The flagd testbed's Gherkin suites, run against crivline.flags.

- ``evaluator/gherkin/*.feature`` with ``evaluator/flags/testkit-flags.json``;
- ``gherkin/{targeting,evaluation,disabled,metadata,contextEnrichment}.feature`` with
  ``flags/*.json`` (the provider suites' flags, merged as flagd serves them;
  ``selector`` options pick one file).

Steps are played the way an OpenFeature SDK uses a provider: a typed evaluation with a
code default, which the SDK returns when the result has no value or is an error, and a
TYPE_MISMATCH when the value has the wrong type (an SDK-side check; the evaluator
itself is untyped, like an OFREP server). Scenarios tagged ``@fractional-v2`` run
against the flag set compiled with the v2 bucketing scheme, ``@fractional-v3`` and the
rest against v3, and untagged fractional scenarios against both (Crivline implements
both; an environment names its own).
Scenarios are skipped, with the reason shown, when they test fractional v1 bucketing,
a deprecated behaviour, or a provider's connection, events or caching rather than
evaluation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flagd_gherkin import Scenario, Step, parse_feature

from crivline.flags import DEFAULT_BUDGET, CompiledFlagSet, Resolution, compile_flag_set
from crivline.flags.budget import METER
from crivline.flags.fractional import Scheme

_UNSET = 1 << 62

ROOT = Path(__file__).resolve().parents[2]
TESTBED = ROOT.parent / "shared" / "conformance" / "flagd-testbed"
PROVIDER_FEATURES = ("targeting", "evaluation", "disabled", "metadata", "contextEnrichment")
# What the testbed's flagd injects into every evaluation context (its sync metadata).
PROVIDER_STATIC_CONTEXT = {"injectedmetadata": "set"}

if not TESTBED.is_dir():
    pytest.skip(
        f"{TESTBED} is absent: the public flagd testbed data lives beside the repository "
        "in CI (../shared/conformance), not in a user's clone",
        allow_module_level=True,
    )

SKIP_TAGS = {
    "fractional-v1": "fractional v1 (legacy float bucketing abs(hash)/i32::MAX*100) is "
    "superseded; Crivline implements v2, (hash * totalWeight) >> 32",
    "deprecated": "deprecated by the testbed: flagd now answers DEFAULT without a value "
    "(@no-default-variant), not FLAG_NOT_FOUND",
}
PROVIDER_ONLY = (
    "provider-specific (connection loss, events, caching or grace periods): nothing an "
    "evaluator does"
)


# -- flag sets ---------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _merged_provider_flags() -> dict[str, Any]:
    flags: dict[str, Any] = {}
    evaluators: dict[str, Any] = {}
    for path in sorted((TESTBED / "flags").glob("*.json")):
        if path.name.startswith("selector-"):
            continue  # only served through a "selector" option
        doc = _load(path)
        flags.update(doc.get("flags", {}))
        evaluators.update(doc.get("$evaluators", {}))
    return {"flags": flags, "$evaluators": evaluators}


_SETS: dict[tuple[str, Scheme], CompiledFlagSet] = {}


def flag_set(name: str, bucketing: Scheme) -> CompiledFlagSet:
    if (name, bucketing) not in _SETS:
        if name == "evaluator":
            doc = _load(TESTBED / "evaluator" / "flags" / "testkit-flags.json")
            context = None
        elif name == "provider":
            doc, context = _merged_provider_flags(), PROVIDER_STATIC_CONTEXT
        else:  # a selector: "rawflags/<file>" is one flag file
            doc, context = _load(TESTBED / "flags" / Path(name).name), PROVIDER_STATIC_CONTEXT
        _SETS[name, bucketing] = compile_flag_set(doc, static_context=context, bucketing=bucketing)
    return _SETS[name, bucketing]


# -- the SDK side ------------------------------------------------------------------------


def typed(type_name: str, text: str) -> Any:
    """A Gherkin cell as a value of the named OpenFeature type."""
    if type_name == "Boolean":
        return {"true": True, "false": False}[text]
    if type_name == "Integer":
        return int(text)
    if type_name == "Float":
        return float(text)
    if type_name == "Object":
        return json.loads(text.replace('\\"', '"'))
    return text


def _type_ok(type_name: str, value: Any) -> bool:
    t = type(value)
    return {
        "Boolean": t is bool,
        "String": t is str,
        "Integer": t is int,
        "Float": t is int or t is float,
        "Object": t is dict or t is list,
    }[type_name]


@dataclass
class Details:
    value: Any
    variant: str | None
    reason: str
    error_code: str | None
    metadata: dict[str, Any]


def sdk_evaluate(
    flags: CompiledFlagSet, key: str, type_name: str, default: Any, ctx: dict[str, Any]
) -> Details:
    METER.work = _UNSET
    r: Resolution = flags.evaluate(key, ctx)
    if METER.work != _UNSET:  # targeting ran: far below the budget, as every scenario must
        work = DEFAULT_BUDGET.work - METER.work
        assert work < DEFAULT_BUDGET.work // 100, (key, work)
    metadata = dict(r.metadata)
    if r.error_code is not None:
        return Details(default, None, "ERROR", r.error_code.value, metadata)
    if r.value is None:
        return Details(default, r.variant, r.reason.value, None, metadata)
    if not _type_ok(type_name, r.value):
        return Details(default, None, "ERROR", "TYPE_MISMATCH", metadata)
    value = float(r.value) if type_name == "Float" else r.value
    return Details(value, r.variant, r.reason.value, None, metadata)


# -- the steps ---------------------------------------------------------------------------


@dataclass
class World:
    set_name: str
    bucketing: Scheme = "v3"
    flag_type: str = "String"
    key: str = ""
    default: Any = None
    context: dict[str, Any] = field(default_factory=dict)
    details: Details | None = None

    def result(self) -> Details:
        assert self.details is not None, "no evaluation happened before the assertion"
        return self.details


StepFn = Callable[[World, re.Match[str], Step], None]
STEPS: list[tuple[re.Pattern[str], StepFn]] = []


def step(pattern: str) -> Callable[[StepFn], StepFn]:
    def register(fn: StepFn) -> StepFn:
        STEPS.append((re.compile(f"^{pattern}$"), fn))
        return fn

    return register


@step(r"an evaluator|a stable flagd provider|a metadata flagd provider")
def _noop(world: World, m: re.Match[str], s: Step) -> None:
    """The flag set is chosen by the feature (and any selector option)."""


@step(r'an option "cache" of type "CacheType" with value "disabled"')
def _cache(world: World, m: re.Match[str], s: Step) -> None:
    """Nothing to disable: the evaluator has no cache of results."""


@step(r'an option "selector" of type "String" with value "(.*)"')
def _selector(world: World, m: re.Match[str], s: Step) -> None:
    name = m.group(1)
    world.set_name = "provider" if name == "flags/allFlags.json" else name


@step(r'a (\w+)-flag with key "(.*)" and a (?:fallback|default) value "(.*)"')
def _flag(world: World, m: re.Match[str], s: Step) -> None:
    world.flag_type, world.key = m.group(1), m.group(2)
    world.default = typed(world.flag_type, m.group(3))


@step(r'a context containing a key "(.*)", with type "(\w+)" and with value "(.*)"')
def _context_key(world: World, m: re.Match[str], s: Step) -> None:
    world.context[m.group(1)] = typed(m.group(2), m.group(3))


@step(r'a context containing a targeting key with value "(.*)"')
def _targeting_key(world: World, m: re.Match[str], s: Step) -> None:
    world.context["targetingKey"] = m.group(1)


@step(
    r'a context containing a nested property with outer key "(.*)" and inner key "(.*)", '
    r'with value "(.*)"'
)
def _nested(world: World, m: re.Match[str], s: Step) -> None:
    world.context.setdefault(m.group(1), {})[m.group(2)] = m.group(3)


@step(r"the flag was evaluated with details")
def _evaluate(world: World, m: re.Match[str], s: Step) -> None:
    flags = flag_set(world.set_name, world.bucketing)
    world.details = sdk_evaluate(flags, world.key, world.flag_type, world.default, world.context)


@step(r'the resolved details value should be "(.*)"')
def _value(world: World, m: re.Match[str], s: Step) -> None:
    expected = typed(world.flag_type, m.group(1))
    actual = world.result().value
    assert (type(actual), actual) == (type(expected), expected), world.result()


@step(r'the reason should be "(.*)"')
def _reason(world: World, m: re.Match[str], s: Step) -> None:
    assert world.result().reason == m.group(1), world.result()


@step(r'the error-code should be "(.*)"')
def _error_code(world: World, m: re.Match[str], s: Step) -> None:
    assert world.result().error_code == (m.group(1) or None), world.result()


@step(r"the resolved metadata should contain")
def _metadata(world: World, m: re.Match[str], s: Step) -> None:
    header, *rows = s.table
    assert header == ["key", "metadata_type", "value"], header
    metadata = world.result().metadata
    for key, type_name, text in rows:
        expected = typed(type_name, text)
        assert key in metadata, f"metadata has no {key!r}: {metadata}"
        got = metadata[key]
        assert (type(got), got) == (type(expected), expected), f"metadata {key!r}"


@step(r"the resolved metadata is empty")
def _metadata_empty(world: World, m: re.Match[str], s: Step) -> None:
    assert world.result().metadata == {}, world.result().metadata


def _match(s: Step) -> tuple[StepFn, re.Match[str]] | None:
    for pattern, fn in STEPS:
        m = pattern.match(s.text)
        if m:
            return fn, m
    return None


# -- collection ----------------------------------------------------------------------------


def _scenarios() -> list[Any]:
    files = [
        (p, "evaluator") for p in sorted((TESTBED / "evaluator" / "gherkin").glob("*.feature"))
    ]
    files += [(TESTBED / "gherkin" / f"{name}.feature", "provider") for name in PROVIDER_FEATURES]
    params = []
    for path, set_name in files:
        for sc in parse_feature(path):
            reason = next((why for tag, why in SKIP_TAGS.items() if tag in sc.tags), None)
            if reason is None and any(_match(s) is None for s in sc.steps):
                reason = PROVIDER_ONLY
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            for scheme in _schemes(sc.tags):
                params.append(
                    pytest.param(
                        sc, set_name, scheme, id=f"{set_name}/{scheme}/{sc.id}", marks=marks
                    )
                )
    return params


def _schemes(tags: frozenset[str]) -> tuple[Scheme, ...]:
    """The bucketing schemes a scenario holds for: its tag's, or both when a fractional
    scenario names none (weights, nesting, fallbacks: the same in every scheme)."""
    if "fractional-v2" in tags:
        return ("v2",)
    if tags & {"fractional-v1", "fractional-v3"} or "fractional" not in tags:
        return ("v3",)
    return ("v2", "v3")


SCENARIOS = _scenarios()


def test_the_testbed_was_read() -> None:
    """Guard against a reader that silently finds nothing to run."""
    runnable = [p for p in SCENARIOS if not p.marks]
    assert len(SCENARIOS) > 250, len(SCENARIOS)
    assert len(runnable) > 200, len(runnable)
    v3 = [p for p in runnable if "fractional-v3" in p.values[0].tags]
    assert len(v3) >= 132, len(v3)


@pytest.mark.parametrize(("scenario", "set_name", "bucketing"), SCENARIOS)
def test_scenario(scenario: Scenario, set_name: str, bucketing: Scheme) -> None:
    world = World(set_name=set_name, bucketing=bucketing)
    assertions = 0
    for s in scenario.steps:
        found = _match(s)
        assert found is not None, f"no step matches {s.text!r}"
        fn, m = found
        fn(world, m, s)
        assertions += s.keyword == "Then" or (s.keyword == "And" and world.details is not None)
    assert assertions > 0, "a scenario without a single check proves nothing"
