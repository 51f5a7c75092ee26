"""Scenario ``writers``: a few control-API users changing flags at a set rate.

Each writer (``--write-rate`` writes per second) goes round the writable flags (the
target's ``write_flags``, else the boolean flags of the flag set) with ``PUT
…/flags/{flag}/environments/{env}``, alternating a toggle of the flag's state with an
edit of its targeting. Every write carries a targeting rule no earlier write used, so
each is a real change: it bumps the environment's version and reaches every stream and
poller. Needs the control URL, a management token, the
project and the environment (all in ``stack.json`` / the bench's target file).

    locust -f loadtests/writers.py --headless -u 2 -r 2 -t 30s --stack .crivline/stack.json
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import ltlocust
from locust import FastHttpUser, constant_throughput, task

_edits = itertools.count(1)
_RUN = os.getpid()


class WriterUser(FastHttpUser):
    crivline_host = "control"

    @classmethod
    def configure(cls, opts: Any) -> None:
        cls.wait_time = constant_throughput(opts.write_rate)

    def on_start(self) -> None:
        target = ltlocust.TARGET
        missing = target.missing("control", "token", "project", "environment")
        if missing:
            raise RuntimeError(f"writers need {', '.join(missing)} in the target")
        self.auth = f"Bearer {target.token}"
        self.index = ltlocust.next_index()
        self.flags = ltlocust.write_flags()
        self.state: dict[str, bool] = {}
        self.turn = 0

    def _body(self, flag: str, kind: str) -> dict[str, Any]:
        definition = ltlocust.FLAGS.get(flag, {})
        variants = list(definition.get("variants", {"on": True, "off": False}))
        default = definition.get("defaultVariant") or variants[0]
        enabled = self.state.get(flag, definition.get("state", "ENABLED") == "ENABLED")
        if kind == "toggle":
            enabled = not enabled
        # A rule no earlier write used (pid: unique across runs too), so every write is a
        # real change: a write that changes nothing would bump no version.
        other = variants[-1] if variants[-1] != default else variants[0]
        rule = {"in": [{"var": "plan"}, ["enterprise", f"tier-{_RUN}-{next(_edits)}"]]}
        self.state[flag] = enabled
        return {
            "state": "ENABLED" if enabled else "DISABLED",
            "defaultVariant": default,
            "targeting": {"if": [rule, other, default]},
        }

    @task
    def change(self) -> None:
        target = ltlocust.TARGET
        flag = self.flags[(self.index + self.turn * 7) % len(self.flags)]
        kind = "toggle" if self.turn % 2 == 0 else "targeting"
        body = self._body(flag, kind)
        self.turn += 1
        path = f"/api/v1/projects/{target.project}/flags/{flag}/environments/{target.environment}"
        with self.client.put(
            path,
            json=body,
            headers={"Authorization": self.auth},
            name=f"PUT flag state ({kind})",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                response.success()
            else:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
