"""The ``$ref`` graph of segments: cycles, and sizes once inlined."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class SegmentGraph:
    """Which segments refer to which, computed lazily, without recursion."""

    def __init__(self, segments: Mapping[Any, Any], max_depth: int) -> None:
        self.segments = segments
        self.max_depth = max_depth
        self._own: dict[str, tuple[int, list[str]]] = {}
        self._acyclic: set[str] = set()
        self._sizes: dict[str, int] = {}

    def _scan(self, node: Any) -> tuple[int, list[str]]:
        """Nodes in ``node`` other than ``$ref``s, and the ``$ref`` names it holds."""
        count = 0
        refs: list[str] = []
        stack: list[tuple[Any, int]] = [(node, 1)]
        while stack:
            item, depth = stack.pop()
            if depth > self.max_depth:
                continue
            t = type(item)
            if t is dict:
                if len(item) == 1 and "$ref" in item and type(item["$ref"]) is str:
                    refs.append(item["$ref"])
                    continue
                count += 1
                stack.extend((v, depth + 1) for v in item.values())
            elif t is list:
                count += 1
                stack.extend((v, depth + 1) for v in item)
            else:
                count += 1
        return count, refs

    def _own_of(self, name: str) -> tuple[int, list[str]]:
        hit = self._own.get(name)
        if hit is None:
            hit = self._own[name] = self._scan(self.segments[name])
        return hit

    def _children(self, name: str) -> Iterator[str]:
        _, refs = self._own_of(name)
        return iter(sorted({r for r in refs if r in self.segments}))

    def cycle_from(self, start: Any) -> list[str] | None:
        """A cycle reachable from segment ``start``, as ``[a, b, a]``, or None."""
        if type(start) is not str or start not in self.segments or start in self._acyclic:
            return None
        path = [start]
        on_path = {start}
        stack = [self._children(start)]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                done = path.pop()
                on_path.discard(done)
                self._acyclic.add(done)
                continue
            if nxt in self._acyclic:
                continue
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            path.append(nxt)
            on_path.add(nxt)
            stack.append(self._children(nxt))
        return None

    def segment_size(self, name: str, cap: int) -> int:
        """Nodes of segment ``name`` with every ``$ref`` inlined (at most ``cap + 1``)."""
        stack = [name]
        visiting: set[str] = set()
        while stack:
            current = stack[-1]
            if current in self._sizes:
                stack.pop()
                continue
            own, refs = self._own_of(current)
            if current not in visiting:
                visiting.add(current)
                pending = [
                    r
                    for r in refs
                    if r in self.segments and r not in self._sizes and r not in visiting
                ]
                if pending:
                    stack.extend(pending)
                    continue
            total = own + sum(self._sizes.get(r, 0) for r in refs if r in self.segments)
            self._sizes[current] = min(total, cap + 1)
            visiting.discard(current)
            stack.pop()
        return self._sizes[name]

    def expanded_size(self, node: Any, cap: int) -> int:
        """Nodes of ``node`` with every ``$ref`` inlined (at most ``cap + 1``)."""
        own, refs = self._scan(node)
        total = own
        for r in refs:
            if r in self.segments:
                total += self.segment_size(r, cap)
                if total > cap:
                    return cap + 1
        return min(total, cap + 1)
