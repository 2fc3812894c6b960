"""A thread-safe LRU cache bounded by the bytes its values hold.

Two kinds of writers use it, and it tells them apart to stay coherent:

- the *owner* of the truth (the database writer thread, after a commit) calls
  :meth:`put` and :meth:`discard`; each bumps :attr:`epoch`;
- a *reader* that loaded a value from the database calls :meth:`fill` with the epoch
  it saw before reading. A fill never overwrites a newer value: it is kept only if no
  owner update happened since that epoch, or if ``replaces(current)`` says the loaded
  value is newer than the one cached. A reader that lost a race with a writer
  therefore cannot put an old value back after the writer replaced or removed it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """Least recently used entries are evicted once their sizes add up past ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self._epoch = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    # -- reading -------------------------------------------------------------------
    def get(self, key: K, valid: Callable[[V], bool] | None = None) -> V | None:
        """The cached value (now most recently used), counting a hit or a miss.

        With ``valid``, a cached value it rejects counts as a miss (and stays cached).
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or (valid is not None and not valid(entry[0])):
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def note_miss(self) -> None:
        """Count a miss found without :meth:`get` (e.g. after :meth:`peek`)."""
        with self._lock:
            self.misses += 1

    def peek(self, key: K) -> V | None:
        """The cached value without counting or reordering."""
        with self._lock:
            entry = self._entries.get(key)
            return entry[0] if entry is not None else None

    @property
    def epoch(self) -> int:
        """Bumped by every owner update; read it before loading a value to :meth:`fill`."""
        return self._epoch

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "entries": len(self._entries),
                "bytes": self._bytes,
                "capacity": self.capacity,
            }

    # -- owner updates -------------------------------------------------------------
    def put(self, key: K, value: V, size: int) -> None:
        """Store the authoritative value for ``key``."""
        with self._lock:
            self._epoch += 1
            self._store(key, value, size)

    def discard(self, key: K) -> None:
        """Forget ``key`` (its value changed in a way the owner does not cache)."""
        with self._lock:
            self._epoch += 1
            self._remove(key)

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self._bytes = 0

    # -- read-through fills --------------------------------------------------------
    def fill(
        self, key: K, value: V, size: int, *, epoch: int, replaces: Callable[[V], bool]
    ) -> bool:
        """Store a value a reader loaded, unless a newer one may exist; True if stored."""
        with self._lock:
            current = self._entries.get(key)
            if current is None:
                if epoch != self._epoch:
                    return False  # a writer may have removed this key while we read
            elif not replaces(current[0]):
                return False
            self._store(key, value, size)
            return True

    # -- internals (lock held) -------------------------------------------------------
    def _store(self, key: K, value: V, size: int) -> None:
        self._remove(key)
        if size > self.capacity:
            return
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self.capacity:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted
            self.evictions += 1

    def _remove(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]
