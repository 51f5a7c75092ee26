"""The evaluation meter is process-wide: each flag's entry resets it, but operations
called directly (as these tests do) spend what the last evaluation left. Every test
starts with it unlimited."""

from __future__ import annotations

import pytest

from crivline.flags.budget import METER


@pytest.fixture(autouse=True)
def unlimited_meter() -> None:
    METER.work = 1 << 62
    METER.close_pool()
