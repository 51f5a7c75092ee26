"""Scenario ``ofrep``: OpenFeature remote evaluation, server and frontend SDKs.

- :class:`OfrepServerUser` — a backend evaluating one targeted flag per request it
  serves: ``POST /ofrep/v1/evaluate/flags/{key}`` with a new context every time (user,
  e-mail, plan, country, app version), every ``--eval-interval`` seconds.
- :class:`OfrepFrontendUser` — a browser: a context per session, ``POST
  /ofrep/v1/evaluate/flags`` (bulk) every ``--bulk-interval`` seconds with the ETag it
  last got, so mostly 304s; a new session (new context) every ``--session-requests``
  calls. Requests are named ``bulk 200 (new context)``, ``bulk 200 (refetch)`` and
  ``bulk 304``.

    locust -f loadtests/ofrep.py --headless -u 100 -r 50 -t 30s --stack .crivline/stack.json
"""

from __future__ import annotations

import json
import random
from typing import Any

import ltflags
import ltlocust
from locust import FastHttpUser, constant_pacing, task


class OfrepServerUser(FastHttpUser):
    crivline_host = "proxy"

    @classmethod
    def configure(cls, opts: Any) -> None:
        cls.wait_time = constant_pacing(opts.eval_interval)

    def on_start(self) -> None:
        index = ltlocust.next_index()
        keys = ltlocust.TARGET.server_keys or ltlocust.TARGET.client_keys
        self.auth = f"Bearer {ltlocust.pick(keys, index)}"
        self.path = f"/ofrep/v1/evaluate/flags/{ltlocust.eval_flag()}"

    @task
    def evaluate(self) -> None:
        body = json.dumps({"context": ltflags.context(random.randrange(10_000_000))})
        with self.client.post(
            self.path,
            data=body,
            headers={"Authorization": self.auth, "Content-Type": "application/json"},
            name="evaluate flag",
            catch_response=True,
        ) as response:
            if response.status_code == 200 and b'"value"' in (response.content or b""):
                response.success()
            else:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")


class OfrepFrontendUser(FastHttpUser):
    crivline_host = "proxy"
    session_requests = 1  # bulk requests per evaluation context (configure sets it)

    @classmethod
    def configure(cls, opts: Any) -> None:
        cls.wait_time = constant_pacing(opts.bulk_interval)
        cls.session_requests = max(1, opts.session_requests)

    def on_start(self) -> None:
        index = ltlocust.next_index()
        keys = ltlocust.TARGET.client_keys or ltlocust.TARGET.server_keys
        self.auth = f"Bearer {ltlocust.pick(keys, index)}"
        self.calls = 0
        self.body = ""
        self.etag: str | None = None

    @task
    def refresh(self) -> None:
        new_session = self.calls % self.session_requests == 0
        if new_session:
            context = ltflags.context(random.randrange(10_000_000))
            self.body = json.dumps({"context": context})
            self.etag = None
        self.calls += 1
        headers = {"Authorization": self.auth, "Content-Type": "application/json"}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        with self.client.post(
            "/ofrep/v1/evaluate/flags",
            data=self.body,
            headers=headers,
            name="bulk",
            catch_response=True,
        ) as response:
            status = response.status_code
            if status == 304:
                response.request_meta["name"] = "bulk 304"
                response.success()
            elif status == 200 and b'"flags"' in (response.content or b""):
                kind = "new context" if new_session else "refetch"
                response.request_meta["name"] = f"bulk 200 ({kind})"
                self.etag = response.headers.get("ETag")
                response.success()
            else:
                response.failure(f"HTTP {status}: {(response.text or '')[:200]}")
