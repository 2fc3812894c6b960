"""Generated request ids: unique, and telling nothing about other calls."""

from __future__ import annotations

from stateward.server import request_id


def test_generated_ids_are_32_hex_digits_and_unique() -> None:
    ids = [request_id.generate() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_consecutive_ids_do_not_count_the_calls_between_them() -> None:
    # Every error answer carries its id: a sequence would let a tenant count the others'
    # calls between two of its own (the gap between their ids).
    first, second = request_id.generate(), request_id.generate()
    assert abs(int(second, 16) - int(first, 16)) > 1 << 64
    assert first[:16] != second[:16]


def test_a_sane_client_id_is_kept_and_a_malformed_one_replaced() -> None:
    assert request_id.from_metadata([("x-request-id", "req-1")]) == "req-1"
    replaced = request_id.from_metadata([("x-request-id", "bad id\nforged log line")])
    assert len(replaced) == 32 and "\n" not in replaced
