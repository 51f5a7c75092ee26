"""The benchmark's flag set: 100 flags in flagd format, shaped like a real product's.

- 40 boolean release toggles and kill switches, no targeting (static);
- 20 string flags targeted on e-mail domain, plan and country (``if`` chains);
- 15 percentage rollouts (``fractional`` on the targeting key);
- 10 flags gated on the app version (``sem_ver``);
- 10 flags reusing shared segments (``$ref`` to ``$evaluators``) with a rollout;
- 5 configuration flags (integer, float, object) with targeting.

The targeted flag the single-evaluation benchmark asks for is :data:`TARGETED_FLAG`
(a segment, a plan list and a percentage split in one rule). The writers change the
:data:`WRITE_FLAGS` (booleans that nothing else reads). Contexts come from
:func:`context`: varied targeting keys and attributes, deterministic per number.
Pure stdlib; the bench runner imports it to install the set through the control API.
"""

from __future__ import annotations

from typing import Any

TARGETED_FLAG = "segment-rollout-0"
WRITE_FLAGS = [f"release-toggle-{i}" for i in range(30, 40)]

PLANS = ["free", "starter", "pro", "enterprise"]
COUNTRIES = ["DE", "FR", "US", "GB", "JP", "BR", "IN", "NL"]
DOMAINS = ["example.com", "acme.io", "crivline.dev", "gmail.com", "corp.example.org"]
VERSIONS = ["1.9.3", "2.0.0", "2.1.0", "2.4.7", "3.0.0-beta.2", "3.1.0"]


def _owner(i: int) -> dict[str, Any]:
    return {"owner": f"team-{i % 7}", "ticket": f"CRV-{1000 + i}"}


def flag_set() -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for i in range(40):
        flags[f"release-toggle-{i}"] = {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "on" if i % 3 else "off",
            "metadata": _owner(i),
        }
    for i in range(20):
        flags[f"copy-experiment-{i}"] = {
            "state": "ENABLED",
            "variants": {"control": f"Start your trial {i}", "bold": f"Try it free {i}!",
                         "calm": f"See plans {i}"},
            "defaultVariant": "control",
            "targeting": {"if": [
                {"ends_with": [{"var": "email"}, f"@{DOMAINS[i % len(DOMAINS)]}"]}, "bold",
                {"in": [{"var": "plan"}, PLANS[i % 2 + 2 :]]}, "calm",
                {"==": [{"var": "country"}, COUNTRIES[i % len(COUNTRIES)]]}, "bold",
                None,
            ]},
            "metadata": _owner(i),
        }  # fmt: skip
    for i in range(15):
        share = 5 + 6 * i
        flags[f"rollout-{i}"] = {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"fractional": [["on", share], ["off", 100 - share]]},
            "metadata": _owner(i),
        }
    for i in range(10):
        flags[f"app-version-gate-{i}"] = {
            "state": "ENABLED",
            "variants": {"new": "v2-flow", "old": "v1-flow"},
            "defaultVariant": "old",
            "targeting": {"if": [
                {"sem_ver": [{"var": "appVersion"}, ">=", f"2.{i % 5}.0"]}, "new", "old",
            ]},
            "metadata": _owner(i),
        }  # fmt: skip
    for i in range(10):
        flags[f"segment-rollout-{i}"] = {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"if": [
                {"$ref": "staff"}, "on",
                {"and": [{"$ref": "paying"}, {"in": [{"var": "country"}, COUNTRIES[:4]]}]},
                {"fractional": [["on", 20 + 5 * i], ["off", 80 - 5 * i]]},
                "off",
            ]},
            "metadata": _owner(i),
        }  # fmt: skip
    for i in range(5):
        flags[f"config-{i}"] = {
            "state": "ENABLED",
            "variants": {
                "small": {"pageSize": 20, "timeoutMs": 800, "retries": 2},
                "large": {"pageSize": 100, "timeoutMs": 2500, "retries": 4},
            },
            "defaultVariant": "small",
            "targeting": {"if": [{"$ref": "paying"}, "large", "small"]},
            "metadata": _owner(i),
        }
    return {
        "flags": flags,
        "$evaluators": {
            "staff": {"ends_with": [{"var": "email"}, "@crivline.dev"]},
            "paying": {"in": [{"var": "plan"}, ["pro", "enterprise"]]},
        },
        "metadata": {"flagSetId": "bench/production"},
    }


def context(n: int) -> dict[str, Any]:
    """An evaluation context, different for every ``n``."""
    return {
        "targetingKey": f"user-{n}",
        "email": f"user{n}@{DOMAINS[n % len(DOMAINS)]}",
        "plan": PLANS[n % len(PLANS)],
        "country": COUNTRIES[n % len(COUNTRIES)],
        "appVersion": VERSIONS[n % len(VERSIONS)],
    }
