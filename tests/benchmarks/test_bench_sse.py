"""Reading SSE: one ``patch`` event as the proxy frames it, through :class:`crivline.sse.Parser`.

The bench's stream clients (and the in-process provider) read every event of every
stream with it: with 20,000 streams and one change a second that is 20,000 events a
second on the machine that serves them. ``general`` is the reader's line-by-line path
(the one a CR takes), the baseline the LF path is measured against.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from crivline import sse

pytestmark = pytest.mark.benchmark

_PATCH = sse.event(
    orjson.dumps(
        {
            "version": 13,
            "base": 12,
            "flags": {"f1": {"state": "ENABLED", "variants": {"on": True, "off": False}}},
            "removed": [],
            "committedAt": 1796000000.25,
        }
    ),
    name="patch",
    id=13,
)


class _General(sse.Parser):
    def _split(self, buffer: bytes) -> Iterable[str]:
        return self._lines(buffer)


@pytest.mark.parametrize("path", ["lf", "general"])
def test_parse_one_patch(benchmark: Any, path: str) -> None:
    benchmark.group = "sse-parse"
    parser = sse.Parser() if path == "lf" else _General()
    events = benchmark(parser.feed, _PATCH)
    assert [(e.event, e.id) for e in events] == [("patch", "13")]
