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


@given(
    st.lists(
        st.tuples(st.integers(0, 3 * event_packs.MAX_BYTES // 2), st.integers(1, 128)),
        min_size=1,
        max_size=2500,
    )
)
def test_cuts_cover_every_event_and_rows_stay_within_bounds(sizes: list[tuple[int, int]]) -> None:
    datas = [b"x" * size for size, _ in sizes]
    types = ["t" * length for _, length in sizes]
    ends = event_packs.cuts(datas, types)
    starts = [0, *ends[:-1]]
    assert ends[-1] == len(datas) and all(a < b for a, b in zip(starts, ends, strict=True))
    for start, end in zip(starts, ends, strict=True):
        assert end - start <= event_packs.MAX_SPAN
        # The heaviest body (types and client times in it) within the bound, give or take
        # its 8 bytes of header; one more event would have crossed it.
        body = event_packs.pack(datas[start:end], types[start:end], [1] * (end - start))
        assert end - start == 1 or len(body) <= event_packs.MAX_BYTES + 8
        if end < len(datas) and end - start < event_packs.MAX_SPAN:
            times = [1] * (end + 1 - start)
            more = event_packs.pack(datas[start : end + 1], types[start : end + 1], times)
            assert len(more) > event_packs.MAX_BYTES


def test_what_a_body_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="newline"):
        event_packs.pack([b"{}", b"{}"], ["a", "b\nc"], [None, None])
    with pytest.raises(ValueError, match="-2"):
        event_packs.pack([b"{}", b"{}"], None, [event_packs.NO_TIME, None])
