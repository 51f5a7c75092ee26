"""sem_ver: SemVer 2.0.0 precedence with flagd's normalisation (v prefix, partial
versions, numbers), checked against the ``semver`` package on generated versions."""

from __future__ import annotations

from typing import Any

import pytest
import semver as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from crivline.flags.semver import parse_version, sem_ver, version_of


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3",
        "v1.2.3",
        "V1.2.3",
        "1",
        "1.2",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92",
        "1.0.0+20130313144700",
        "1.0.0-beta+exp.sha.5114f85",
        "1-rc.1",
        "0.0.0",
    ],
)
def test_valid(text: str) -> None:
    assert parse_version(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v",
        "abc",
        "1.2.3.4",
        "01.0.0",
        "1.02.0",
        "1.0.0-01",
        "1.0.0-",
        "1.0.0+",
        "1.0.0-al pha",
        " 1.0.0",
        "1..0",
        "1.0.0-a..b",
        "１.０.０",  # non-ASCII digits
        "not-a-version",
    ],
)
def test_invalid(text: str) -> None:
    assert parse_version(text) is None


@pytest.mark.parametrize(
    ("left", "op", "right", "expected"),
    [
        ("2.0.0", "=", "2.0.0", True),
        ("2.0.0", "!=", "2.0.1", True),
        ("2.0.0-alpha", "<", "2.0.0", True),
        ("2.0.0-alpha", "<", "2.0.0-alpha.1", True),
        ("2.0.0-alpha.1", "<", "2.0.0-alpha.beta", True),
        ("2.0.0-beta.2", "<", "2.0.0-beta.11", True),  # numeric identifiers: numerically
        ("2.0.0-rc.1", "<", "2.0.0", True),
        ("1.0.0+build", "=", "1.0.0+other", True),  # build metadata is ignored
        ("2.1.0", ">", "2.0.0", True),
        ("2.1.0", ">=", "2.1.0", True),
        ("1.9.0", "<=", "2.0.0", True),
        ("3.1.0", "^", "3.0.0", True),
        ("4.0.0", "^", "3.0.0", False),
        ("3.0.1", "~", "3.0.0", True),
        ("3.1.0", "~", "3.0.0", False),
        ("v1.0.0", "=", "1.0.0", True),
        (1, "^", "1.5.0", True),  # numbers use their JavaScript spelling
        (1.2, ">", "1.1", True),
        (2.0, "=", "2.0.0", True),
        ("1.0.0", "===", "1.0.0", None),  # unknown operator
        ("nope", "=", "1.0.0", None),
        (True, "=", "1.0.0", None),
        (None, "=", "1.0.0", None),
        (["1.0.0"], "=", "1.0.0", None),
    ],
)
def test_sem_ver(left: Any, op: Any, right: Any, expected: bool | None) -> None:
    assert sem_ver(left, op, right) is expected


def test_version_of_ignores_other_types() -> None:
    assert version_of({"v": "1.0.0"}) is None
    assert version_of("1.0.0") == parse_version("1.0.0")


_number = st.integers(min_value=0, max_value=30).map(str)
_ident = st.one_of(
    _number,
    st.text(alphabet="abcxyz-", min_size=1, max_size=4),
    st.text(alphabet="0ab", min_size=1, max_size=3),  # sometimes a leading zero: invalid
)
_versions = st.builds(
    lambda core, pre, build: ".".join(core) + (f"-{'.'.join(pre)}" if pre else "") + build,
    st.lists(_number, min_size=3, max_size=3),
    st.lists(_ident, max_size=3),
    st.sampled_from(["", "+b1", "+exp.sha.5"]),
)


def _reference(text: str) -> reference.Version | None:
    try:
        return reference.Version.parse(text)
    except ValueError:
        return None


@settings(max_examples=300, deadline=None)
@given(_versions, _versions)
def test_precedence_agrees_with_the_semver_package(a: str, b: str) -> None:
    ours_a, ours_b = parse_version(a), parse_version(b)
    ref_a, ref_b = _reference(a), _reference(b)
    assert (ours_a is None) == (ref_a is None), a
    assert (ours_b is None) == (ref_b is None), b
    if ref_a is not None and ref_b is not None:
        expected = ref_a.compare(ref_b)
        assert sem_ver(a, "<", b) is (expected < 0)
        assert sem_ver(a, "=", b) is (expected == 0)
        assert sem_ver(a, ">", b) is (expected > 0)
