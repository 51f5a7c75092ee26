"""Scenario ``edge-day``: one edge's ordinary day, every kind of client at once.

Of every 100 users: 40 polling server SDKs, 20 server SDKs evaluating single flags, 30
browsers on bulk evaluation with ETags, 10 open streams — and one writer (a fixed
count) changing flags through the control API. The rates are the other scenarios'
options (``--poll-interval``, ``--eval-interval``, ``--bulk-interval``,
``--write-rate``).

    locust -f loadtests/edge_day.py --headless -u 1000 -r 200 -t 60s --stack .crivline/stack.json
"""

from __future__ import annotations

import ofrep as _ofrep
import polling as _polling
import streams as _streams
import writers as _writers


class Poller(_polling.PollingUser):
    weight = 40


class ServerEvaluator(_ofrep.OfrepServerUser):
    weight = 20


class Browser(_ofrep.OfrepFrontendUser):
    weight = 30


class Streamer(_streams.StreamUser):
    weight = 10


class Writer(_writers.WriterUser):
    fixed_count = 1
