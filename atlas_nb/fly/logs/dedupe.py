"""Dedupe of log entries by id, in bounded memory.

Streams deduplicate on the entry id the API sends (never on timestamps: lines from
several machines share and reorder timestamps, and ``max(ts) + 1 ns`` cursors lose them).
"""

from __future__ import annotations

from ...models import LogEntry

__all__ = ["SeenIds"]


class SeenIds:
    """Recently seen entry ids, for dedupe in bounded memory (two generations of ``size``).

    An id is remembered for at least ``size`` and at most ``2 * size`` newer ids: plenty
    for page overlaps and late lines, and cheaper per id than an LRU.
    """

    def __init__(self, size: int) -> None:
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._size = size

    def fresh(self, ids: tuple[str, ...], entries: tuple[LogEntry, ...]
              ) -> tuple[LogEntry, ...]:
        """The entries whose id was not seen before (and remember them)."""
        current, previous = self._current, self._previous
        if current.isdisjoint(ids) and previous.isdisjoint(ids):
            # The usual page: nothing seen before. Set operations run in C; only a page
            # that repeats an id within itself needs the per-entry loop below.
            before = len(current)
            current.update(ids)
            if len(current) - before == len(ids):
                out = entries
            else:
                current.difference_update(ids)
                out = self._one_by_one(ids, entries)
        else:
            out = self._one_by_one(ids, entries)
        if len(self._current) >= self._size:
            self._previous, self._current = self._current, set()
        return out

    def _one_by_one(self, ids: tuple[str, ...], entries: tuple[LogEntry, ...]
                    ) -> tuple[LogEntry, ...]:
        current, previous = self._current, self._previous
        out = []
        for key, entry in zip(ids, entries, strict=True):
            if key in current or key in previous:
                continue
            current.add(key)
            out.append(entry)
        return tuple(out)
