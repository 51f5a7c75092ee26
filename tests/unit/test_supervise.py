"""The restart budget of ``crivline up``: five restarts within any minute, then it gives up."""

from __future__ import annotations

from crivline.supervise import RestartBudget


def test_five_restarts_within_a_minute_then_none() -> None:
    budget = RestartBudget()
    assert all(budget.spend(now) for now in (0.0, 1.0, 2.0, 3.0, 4.0))
    assert not budget.spend(5.0)
    assert len(budget) == 5


def test_restarts_older_than_the_window_no_longer_count() -> None:
    budget = RestartBudget(limit=2, window=10.0)
    assert budget.spend(0.0)
    assert budget.spend(5.0)
    assert not budget.spend(9.9)
    assert budget.spend(10.0)  # the one at 0.0 left the window
    assert not budget.spend(14.0)
