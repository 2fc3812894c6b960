"""The byte-bounded LRU cache: eviction, accounting, and read-through fills that
never put back a value older than what the owner stored."""

from __future__ import annotations

import threading
from collections.abc import Callable

from stateward.server.cache import ByteLRU


def test_evicts_least_recently_used_once_over_capacity() -> None:
    cache: ByteLRU[str, str] = ByteLRU(100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # "b" is now the least recently used
    cache.put("c", "C", 40)
    assert cache.peek("b") is None
    assert (cache.peek("a"), cache.peek("c")) == ("A", "C")
    assert cache.size_bytes == 80
    assert cache.evictions == 1


def test_replacing_a_key_accounts_its_new_size() -> None:
    cache: ByteLRU[str, str] = ByteLRU(100)
    cache.put("a", "small", 10)
    cache.put("a", "large", 90)
    assert cache.size_bytes == 90 and len(cache) == 1
    cache.discard("a")
    assert cache.size_bytes == 0 and len(cache) == 0


def test_value_larger_than_capacity_is_not_kept_and_drops_the_old_one() -> None:
    cache: ByteLRU[str, str] = ByteLRU(100)
    cache.put("a", "old", 10)
    cache.put("a", "huge", 101)
    assert cache.peek("a") is None
    assert cache.size_bytes == 0


def test_zero_capacity_keeps_nothing() -> None:
    cache: ByteLRU[str, str] = ByteLRU(0)
    cache.put("a", "A", 1)
    assert cache.get("a") is None
    assert cache.stats()["misses"] == 1


def test_hits_and_misses_are_counted_and_invalid_values_are_misses() -> None:
    cache: ByteLRU[str, int] = ByteLRU(100)
    cache.put("a", 1, 1)
    assert cache.get("a") == 1
    assert cache.get("a", valid=lambda value: value == 2) is None
    assert cache.get("missing") is None
    assert (cache.hits, cache.misses) == (1, 2)
    assert cache.peek("a") == 1  # an invalid value stays; peek counts nothing
    assert (cache.hits, cache.misses) == (1, 2)


def test_fill_of_absent_key_needs_an_unchanged_epoch() -> None:
    cache: ByteLRU[str, int] = ByteLRU(100)
    epoch = cache.epoch
    assert cache.fill("a", 1, 1, epoch=epoch, replaces=lambda current: True)
    assert cache.peek("a") == 1

    # A reader loads version 5; meanwhile the owner commits a clear and drops the key.
    epoch = cache.epoch
    cache.discard("a")
    assert not cache.fill("a", 5, 1, epoch=epoch, replaces=lambda current: True)
    assert cache.peek("a") is None


def test_fill_of_present_key_only_replaces_an_older_value() -> None:
    cache: ByteLRU[str, int] = ByteLRU(100)
    epoch = cache.epoch
    cache.put("a", 7, 1)  # the owner stored version 7 while a reader loaded 6

    def newer(value: int) -> Callable[[int], bool]:
        return lambda current: current < value

    assert not cache.fill("a", 6, 1, epoch=epoch, replaces=newer(6))
    assert cache.peek("a") == 7
    assert cache.fill("a", 8, 1, epoch=epoch, replaces=newer(8))
    assert cache.peek("a") == 8


def test_concurrent_use_keeps_the_byte_count_exact() -> None:
    cache: ByteLRU[int, int] = ByteLRU(1000)

    def work(offset: int) -> None:
        for i in range(2000):
            key = (i * 7 + offset) % 50
            if i % 3 == 0:
                cache.discard(key)
            elif i % 3 == 1:
                cache.put(key, i, key + 1)
            else:
                cache.fill(key, i, key + 1, epoch=cache.epoch, replaces=lambda current: True)
                cache.get(key)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = cache.stats()
    assert stats["bytes"] <= 1000
    assert stats["bytes"] == sum(key + 1 for key in range(50) if cache.peek(key) is not None)
