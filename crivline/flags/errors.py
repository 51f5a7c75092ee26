"""The one exception flag validation raises, and the problems it carries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from crivline.errors import CrivlineError


class Problem(NamedTuple):
    """One thing wrong with a flag document.

    ``path`` points into the document the way a person reads it, for example
    ``flags.new-checkout.targeting.if[0].in[1]`` (keys that contain dots or brackets are
    quoted: ``flags["a.b"]``); the empty path is the document itself. ``message`` is a
    sentence that says what is wrong and, where it helps, what would be right.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class FlagSetError(CrivlineError):
    """A flag set, flag or segment is not valid; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        count = len(self.problems)
        head = "; ".join(str(p) for p in self.problems[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{count} {noun}: {head}{more}")
