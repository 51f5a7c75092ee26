"""Hypothesis strategies for hostile HTTP input, and the oracles that judge each answer.

Strategies produce raw bytes where real clients would produce text: odd methods, path
segments with traversal, percent-encoded bytes that are not UTF-8 (overlong encodings,
lone surrogates), NUL, RTL and zero-width characters, garbage ETags and event ids,
oversized and duplicated headers, bodies that are not JSON, JSON of the wrong shape and
contexts nested deeper or wider than any limit.

The oracles say what every answer must be, whatever was sent:

- never a 5xx (a documented 503 — a refetch naming a version this proxy lacks — is the
  one exception, and only with ``Retry-After``), and an answer within the deadline;
- an application error is the service's JSON shape (OFREP ``errorCode``/``errorDetails``
  for the proxy, RFC 9457 problem+json for control) with a human message; only framing
  errors caught by the HTTP parser itself (before any route) are aiohttp's short text;
- no body ever carries a traceback, a file path, a library name, a memory address or a
  SQL statement.

Run sizes: ``CRIVLINE_FUZZ_SCALE`` multiplies every example count (default 1, which
keeps the suite within its time budget); ``CRIVLINE_FUZZ_RANDOM=1`` draws new examples
instead of the fixed derandomised ones CI runs. A longer hunt, for manual runs::

    CRIVLINE_FUZZ_RANDOM=1 CRIVLINE_FUZZ_SCALE=10 .venv/bin/pytest tests/adversarial \
        -k fuzz -p no:randomly --timeout 0
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from rawhttp import Reply

SCALE = float(os.environ.get("CRIVLINE_FUZZ_SCALE", "1"))
RANDOM = os.environ.get("CRIVLINE_FUZZ_RANDOM") == "1"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


# -- the oracles --------------------------------------------------------------------------

LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|site-packages|0x[0-9a-fA-F]{6,}|<class |NoneType|KeyError|"
    r"IndexError|AttributeError|object has no attribute|asyncpg|psycopg|redis\.|aiohttp\.|"
    r"orjson\.|\bSELECT\b|\bINSERT INTO\b|Server got itself in trouble|\bLine \d+\b|"
    r"\b[A-Z]\w*(?:Error|Exception)\b"
)


def no_leak(reply: Reply, what: object) -> None:
    text = reply.body.decode("utf-8", "replace")
    found = LEAKS.search(text)
    assert found is None, f"internal detail {found.group(0)!r} in the answer to {what}: {reply}"


def check_proxy(
    reply: Reply, what: bytes, *, allow_503: bool = False, request: bytes = b""
) -> None:
    """Every proxy answer: no 5xx, errors as OFREP JSON with a message, nothing leaked."""
    no_leak(reply, what)
    if reply.status == 503 and allow_503:
        assert reply.header("retry-after"), (what, str(reply))
    else:
        assert reply.status < 500, f"{reply.status} for {what}: {reply}"
    if reply.status < 400:
        return
    if reply.content_type == "text/html" and b" /status" in request.split(b"\r\n", 1)[0]:
        # the status page's sign-in form (429 once an address has failed too often)
        assert reply.status in (401, 429), (what, str(reply))
        return
    assert reply.content_type == "application/json", (what, str(reply))
    if reply.head:
        return
    body = reply.json()
    assert isinstance(body.get("errorCode"), str), (what, body)
    assert body["errorCode"], (what, body)
    assert isinstance(body.get("errorDetails"), str), (what, body)
    assert len(body["errorDetails"]) > 5, (what, body)


def check_control(reply: Reply, what: object, *, request: bytes = b"") -> None:
    """Every control answer: no 5xx, errors as problem+json with a message, nothing leaked."""
    no_leak(reply, what)
    assert reply.status < 500, f"{reply.status} for {what}: {reply}"
    if reply.status < 400:
        return
    assert reply.content_type == "application/problem+json", (what, str(reply))
    if reply.head:
        return
    body = reply.json()
    assert body["status"] == reply.status, body
    assert isinstance(body.get("title"), str), (what, body)
    assert body["title"], (what, body)
    assert isinstance(body.get("detail"), str), (what, body)
    assert len(body["detail"]) > 5, (what, body)
    for problem in body.get("errors", []):
        assert isinstance(problem["path"], str), (what, body)
        assert isinstance(problem["message"], str), (what, body)


# -- text and bytes ---------------------------------------------------------------------

# Characters that trip up naive code: NUL and controls, RTL override, zero-width joiners,
# BOM, line and paragraph separators, combining marks, astral-plane emoji, fullwidth
# solidus, and the replacement character.
TRICKY_CHARS = (
    "\x00\x01\x1b\x7f\r\n\t\u0085\u00a0\u200b\u200d\u200e\u202e\u2066\u2028\u2029"
    "\ufeff\ufffd\ufffe\u0301\u0663\u00b2\u2460\U0001f600\U0001f9d1\u200d\U0001f4bb\uff0f\u2215"
)
tricky_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(TRICKY_CHARS), st.characters(codec="utf-8"), st.sampled_from("a.-_/%")
    ),
    max_size=40,
)

# Raw byte sequences that are not valid UTF-8: overlong '/', lone surrogates (CESU),
# truncated multi-byte, code points past U+10FFFF, bare continuation bytes.
BAD_UTF8 = (
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xc3",
    b"\x80",
    b"\xff\xfe",
)

TRAVERSAL = (
    "..",
    "../..",
    "%2e%2e",
    "%2e%2e%2f%2e%2e",
    "..%2f..%2fetc%2fpasswd",
    "..%5c..%5cwindows",
    "%252e%252e%252f",
    ".%00.",
    "%c0%ae%c0%ae%c0%af",
    "/%2f/",
    "~root",
    "*",
    "%",
    "%zz",
    "%00",
    "a%0d%0aSet-Cookie:x=1",
    "flag;jsessionid=1",
    "flag?x=1",
    "flag#frag",
)


def _percent(data: bytes) -> str:
    return "".join(f"%{b:02X}" for b in data)


path_segment = st.one_of(
    st.sampled_from(TRAVERSAL),
    st.sampled_from(BAD_UTF8).map(_percent),
    tricky_text.map(lambda s: quote(s, safe="")),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    st.just("a" * 300),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.just("\u00b2"),
    st.just("checkout"),
    st.just("shop"),
)

# A segment as raw bytes on the wire (not percent-encoded): some clients do that.
raw_segment = st.one_of(
    path_segment.map(str.encode),
    st.sampled_from(BAD_UTF8),
    tricky_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
)

header_value = st.one_of(
    st.sampled_from(
        [
            b"",
            b" ",
            b"*",
            b'"',
            b'""',
            b'W/""',
            b"W/",
            b'"1"',
            b'W/"1"',
            b"\t",
            b"-1",
            b"0",
            b"18446744073709551616",
            b"99999999999999999999",
            b"1e9",
            b"0x10",
            b"\xd9\xa3",
            b"1,2",
            b'"a", "b"',
            b"\x7f",
            b"\x1b[31m",
            b"null",
        ]
    ),
    st.sampled_from(BAD_UTF8),
    tricky_text.map(lambda s: s.replace("\r", "").replace("\n", "").encode("utf-8", "replace")),
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.integers(min_value=1, max_value=20_000).map(lambda n: b"x" * n),
)

odd_methods = st.sampled_from(
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND",
     "CONNECT", "get", "G@T", "MKCOL", "LINK", "QUERY", "X" * 100, "BREW"]
)  # fmt: skip

# -- JSON -------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    tricky_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(tricky_text, inner, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int, leaf: Any = 1, as_list: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


# Bodies that are bytes, not documents: truncated, binary, not UTF-8, huge numbers,
# duplicate keys, escapes of lone surrogates, and nesting past any parser's limit.
raw_bodies = st.one_of(
    st.sampled_from(
        [
            b"",
            b"{",
            b"}",
            b"[",
            b"null",
            b"0",
            b'"x"',
            b"{}",
            b"[]",
            b'{"context":',
            b'{"context": {"a": 1,}}',
            b'{"context": NaN}',
            b'{"context": {"n": Infinity}}',
            b'{"context": {"s": "\\ud800"}}',
            b'{"context": {"s": "\\udfff\\ud800"}}',
            b'{"a":1,"a":2}',
            b'{"context": {"x": 1e99999}}',
            b"\xef\xbb\xbf{}",
            b'{"context": {"k": "' + b"\xed\xa0\x80" + b'"}}',
            b"\x00\x00\x00",
            b'{"context": {"targetingKey": 123456789012345678901234567890}}',
            b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 3000 + b"1" + b"}" * 3000,
        ]
    ),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
)
