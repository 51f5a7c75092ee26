"""Each part's database login in the tests, as in production: control, syncd and the
relay connect as members of their group roles (migration 0005, :mod:`crivline.roles`),
never as the owner the fixtures seed with."""

from __future__ import annotations

from crivline.roles import GROUPS, role_url


def part_url(database_url: str, part: str) -> str:
    """``database_url`` (the owner's) as ``part``'s login role."""
    return role_url(database_url, GROUPS[part])
