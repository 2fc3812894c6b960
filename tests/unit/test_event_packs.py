"""Packed event bodies round-trip exactly, and a damaged one is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateward.storage import event_packs

TYPES = st.from_regex(r"[A-Za-z][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
TIMES = st.one_of(st.none(), st.integers(-(2**63) + 1, 2**63 - 1))


@given(
    st.lists(st.tuples(st.binary(max_size=64), TYPES, TIMES), min_size=2, max_size=40),
    st.booleans(),
)
def test_round_trip(events: list[tuple[bytes, str, int | None]], with_types: bool) -> None:
    datas = [d for d, _, _ in events]
    types = [t for _, t, _ in events] if with_types else None
    times = [c for _, _, c in events]
    body = event_packs.pack(datas, types, times)
    got_datas, got_types, got_times = event_packs.unpack(body, len(events))
    assert got_datas == datas and got_types == types
    assert got_times == (times if any(t is not None for t in times) else None)


@pytest.mark.parametrize("cut", [1, 5, -1])
def test_a_damaged_body_is_refused(cut: int) -> None:
    body = event_packs.pack([b"{}", b'{"a": 1}', b"[]"], ["x", "y", "z"], [None, 1, None])
    with pytest.raises(ValueError, match="malformed"):
        event_packs.unpack(body[:cut] if cut > 0 else body + b"!", 3)
    with pytest.raises(ValueError, match="malformed"):
        event_packs.unpack(body, 2)  # not the span it was packed with
