"""A byte-bounded LRU of evaluated bulk answers, shared by all environments of a process.

Keyed by (flag-set content hash, context digest): the same context evaluated against
the same flag set gives the same ``"flags": [...]`` bytes, whatever the version number
or the key asking. A new version with other content simply stops hitting the old
entries, which age out. Flag sets whose targeting reads the clock are never cached.
"""

from __future__ import annotations

from collections import OrderedDict


class BulkCache:
    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._size = 0
        self._entries: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, content: str, context: bytes) -> bytes | None:
        key = (content, context)
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, content: str, context: bytes, value: bytes) -> None:
        size = len(value) + len(context) + 100
        if size > self._max // 4:
            return  # one answer must not push out everything else
        key = (content, context)
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= len(old) + len(context) + 100
        self._entries[key] = value
        self._size += size
        while self._size > self._max:
            (_c, ctx), evicted = self._entries.popitem(last=False)
            self._size -= len(evicted) + len(ctx) + 100
