"""Secrets are compared in constant time, everywhere.

A source scan: every ``==`` / ``!=`` in the packages whose operand looks like a secret
(a token, MAC, signature, digest, hash, ticket, cookie, password) must be on the
reviewed list below, with why it is not a secret comparison. The secret comparisons
themselves use :func:`hmac.compare_digest` (ticket MACs, the status page's operator
token and session cookie, :class:`crivline.settings.Secret`). API keys and management
tokens are never compared at all: they are hashed (SHA-256) and looked up by that
hash — in a dict at the proxy, through a unique index in Postgres — so the time a
lookup takes depends on a hash the caller cannot steer, not on the secret.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from crivline.settings import Secret

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("crivline", "control", "proxy", "syncd")
SECRETISH = re.compile(
    r"secret|token|password|passwd|\bmac\b|_mac\b|signature|digest|hash|ticket|cookie|credential|"
    r"\._value\b",  # what a crivline.settings.Secret holds
    re.IGNORECASE,
)

# file, comparison (as written): why it is not a comparison of secrets.
REVIEWED = {
    ("control/idempotency.py", 'bytes(row["request_hash"]) != key.fingerprint'):
        "the SHA-256 of a request (method, path, body): no secret in it",
    ("proxy/routes/ofrep.py", "info.environment != ticket.environment"):
        "environment ids, after the ticket's MAC was checked in constant time",
    ("control/store/tokens.py", '[row["id"] for row in live] == [token_id]'):
        "management tokens' row ids (public uuids, listed by GET /tokens), not secrets",
    ("control/store/tokens.py", '(await self._get(token_id)).scope == "admin"'):
        "a token's scope name (read/write/admin), not its secret",
}  # fmt: skip


def _harmless(src: str, node: ast.expr) -> bool:
    """Lengths and counts of secrets say nothing their format does not already say."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id == "len":
            return True
        if isinstance(func, ast.Attribute) and func.attr == "count":
            return True
    return isinstance(node, ast.Constant) and isinstance(node.value, int)


def secret_comparisons() -> list[tuple[str, str]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            src = path.read_text()
            for node in ast.walk(ast.parse(src)):
                if not isinstance(node, ast.Compare):
                    continue
                if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                    continue
                operands = [node.left, *node.comparators]
                if any(_harmless(src, o) for o in operands):
                    continue
                if any(SECRETISH.search(ast.get_source_segment(src, o) or "") for o in operands):
                    name = str(path.relative_to(ROOT))
                    found.append((name, ast.get_source_segment(src, node) or ""))
    return found


def test_no_secret_is_compared_with_eq() -> None:
    unreviewed = [c for c in secret_comparisons() if c not in REVIEWED]
    assert not unreviewed, (
        "compare secrets with hmac.compare_digest, or add the comparison to REVIEWED "
        f"saying why it is not one: {unreviewed}"
    )


def test_secrets_compare_in_constant_time_and_stay_equal() -> None:
    assert Secret("crv_mgt_abc") == Secret("crv_mgt_abc")
    assert Secret("crv_mgt_abc") != Secret("crv_mgt_abd")
    assert Secret("\udcff") == Secret("\udcff")  # from an environment that is not UTF-8
    assert Secret("a") != "a"
