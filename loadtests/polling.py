"""Scenario ``polling``: a fleet of server SDKs polling the flag set with ETags.

Each user is one SDK instance with one server key (spread over the target's keys). It
polls ``GET /sdk/v1/flags`` every ``--poll-interval`` seconds with the ETag it last got
in ``If-None-Match``: a 304 while nothing changed, a 200 with the whole flag set after
each change (run the ``writers`` scenario next to it, or the bench runner does). The
requests are named ``flags 304`` and ``flags 200``; anything else is a failure.

    locust -f loadtests/polling.py --headless -u 200 -r 50 -t 30s --stack .crivline/stack.json
"""

from __future__ import annotations

from typing import Any

import ltlocust
from locust import FastHttpUser, constant_pacing, task


class PollingUser(FastHttpUser):
    crivline_host = "proxy"

    @classmethod
    def configure(cls, opts: Any) -> None:
        cls.wait_time = constant_pacing(opts.poll_interval)

    def on_start(self) -> None:
        index = ltlocust.next_index()
        self.auth = f"Bearer {ltlocust.pick(ltlocust.TARGET.server_keys, index)}"
        self.etag: str | None = None

    @task
    def poll(self) -> None:
        headers = {"Authorization": self.auth}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        with self.client.get(
            "/sdk/v1/flags", headers=headers, name="flags", catch_response=True
        ) as response:
            response.request_meta["name"] = f"flags {response.status_code}"
            if response.status_code == 304:
                response.success()
            elif response.status_code == 200 and (response.content or b"").startswith(b"{"):
                self.etag = response.headers.get("ETag")
                response.success()
            else:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
