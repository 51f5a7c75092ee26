"""crivline.sse: exact bytes out, and the WHATWG reading rules back in."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crivline import sse


def test_event_bytes_are_exact() -> None:
    assert sse.event(b'{"a":1}', name="put", id=12) == b'id: 12\nevent: put\ndata: {"a":1}\n\n'
    assert sse.event(b"x") == b"data: x\n\n"
    assert sse.event(b"x", retry=500) == b"retry: 500\ndata: x\n\n"
    assert sse.event(b"a\nb\r\nc", name="m") == b"event: m\ndata: a\ndata: b\ndata: c\n\n"
    assert sse.event(b"", id="7") == b"id: 7\ndata: \n\n"


def test_comments_and_retry_blocks() -> None:
    assert sse.comment("keep-alive") == b": keep-alive\n\n"
    assert sse.comment() == b":\n\n"
    assert sse.comment("two\nlines") == b": two\n: lines\n\n"
    assert sse.retry(3000) == b"retry: 3000\n\n"


def test_fields_cannot_smuggle_line_breaks() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        sse.event(b"x", name="put\ndata: evil")
    with pytest.raises(ValueError, match="line breaks"):
        sse.event(b"x", id="1\r2")
    with pytest.raises(ValueError, match="non-negative"):
        sse.retry(-1)


def test_parser_reads_what_the_builders_write_in_any_chunking() -> None:
    stream = (
        sse.retry(2000)
        + sse.event(b'{"v":1}', name="put", id=1)
        + sse.comment("keep-alive")
        + sse.event(b"a\nb", name="patch", id=2)
        + sse.event(b"plain")
    )
    for size in (1, 2, 3, 7, len(stream)):
        parser = sse.Parser()
        events = []
        for i in range(0, len(stream), size):
            events += parser.feed(stream[i : i + size])
        assert [(e.event, e.id, e.data) for e in events] == [
            ("put", "1", '{"v":1}'),
            ("patch", "2", "a\nb"),
            ("message", "2", "plain"),  # the last id stays in effect
        ]
        assert parser.retry == 2000
        assert parser.comments == ["keep-alive"]


def test_parser_handles_cr_and_crlf_split_across_chunks() -> None:
    parser = sse.Parser()
    assert parser.feed(b"\xef\xbb\xbfdata: one\r") == []
    assert parser.feed(b"\n\r\n") == [sse.Event("one")]
    assert parser.feed(b"data: two\r\r") == []  # a final CR may be half of a CRLF
    assert parser.feed(b"data\n\n") == [sse.Event("two"), sse.Event("")]
    assert parser.feed(b"event: e\n\n") == []  # no data: nothing dispatched
    assert parser.feed(b"id: a\x00b\nretry: soon\ndata: x\n\n") == [sse.Event("x")]
    assert parser.retry is None


class _GeneralPathParser(sse.Parser):
    """The reader with its line-by-line path only (the one any CR takes)."""

    def _split(self, buffer: bytes) -> Iterable[str]:
        return self._lines(buffer)


_NAMES = [b"data", b"event", b"id", b"retry", b"", b"x", b"data\xff", b"\xef\xbb\xbf"]
_VALUES = [b"", b" ", b":", b"x", b"12", b"\xc3\xa9", b"\xe2\x82", b"\x00", b"\xff", b"\xc3"]
_line = st.tuples(
    st.sampled_from(_NAMES),
    st.sampled_from([b": ", b":", b""]),
    st.lists(st.sampled_from(_VALUES), max_size=4).map(b"".join),
    st.sampled_from([b"\n", b"\n", b"\n", b"\r", b"\r\n"]),
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(_line, max_size=20),
    lf_only=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_the_lf_fast_path_reads_exactly_what_the_general_path_reads(
    lines: list[bytes], lf_only: bool, cuts: list[int]
) -> None:
    stream = b"".join(lines)
    if lf_only:  # the fast path's own ground: no CR anywhere
        stream = stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    fast, general = sse.Parser(), _GeneralPathParser()
    for start, end in pairwise(bounds):
        chunk = stream[start:end]
        assert fast.feed(chunk) == general.feed(chunk)
    assert (fast.last_event_id, fast.retry, fast.comments) == (
        general.last_event_id,
        general.retry,
        general.comments,
    )
