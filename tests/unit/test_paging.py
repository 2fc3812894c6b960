"""Opaque page tokens (server/domain/paging.py): round trips, and forged or foreign tokens."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateward.server.domain import paging
from stateward.server.domain.errors import InvalidArgument
from stateward.server.domain.validation import ID_PATTERN

DIGEST = paging.filter_digest("default", "agents", "ACTIVE", "worker", [("team", "a")])


def raw_token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_round_trip() -> None:
    token = paging.encode(DIGEST, ["agent-7"])
    assert paging.decode(token, DIGEST, (str,)) == ["agent-7"]


def test_round_trip_with_several_cursor_parts() -> None:
    token = paging.encode(DIGEST, [42, "x", 7])
    assert paging.decode(token, DIGEST, (int, str, int)) == [42, "x", 7]


def test_an_empty_token_means_the_first_page() -> None:
    assert paging.decode("", DIGEST, (str,)) is None


def test_tokens_are_url_safe_and_unpadded() -> None:
    token = paging.encode(DIGEST, ["ü?/+" * 10])
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# Cursor parts are ids (at most 128 characters of a small alphabet) and integers.
INT64 = st.integers(-(2**63), 2**63 - 1)  # what the databases store
IDS = st.from_regex(ID_PATTERN, fullmatch=True)


@given(st.lists(st.one_of(INT64, IDS), min_size=1, max_size=4))
def test_any_cursor_round_trips(cursor: list[object]) -> None:
    shape = tuple(type(item) for item in cursor)
    assert paging.decode(paging.encode(DIGEST, cursor), DIGEST, shape) == cursor


def test_digests_depend_on_every_part() -> None:
    base = ("default", "agents", "ACTIVE", "worker", [("team", "a")])
    digests = {
        paging.filter_digest(*base),
        paging.filter_digest("team-b", "agents", "ACTIVE", "worker", [("team", "a")]),
        paging.filter_digest("default", "agents", None, "worker", [("team", "a")]),
        paging.filter_digest("default", "agents", "ACTIVE", "", [("team", "a")]),
        paging.filter_digest("default", "agents", "ACTIVE", "worker", []),
        paging.filter_digest("default", "agents", "ACTIVE", "worker", [("team", "b")]),
        paging.filter_digest("default", "transitions", "ACTIVE", "worker", [("team", "a")]),
    }
    assert len(digests) == 7
    assert paging.filter_digest(*base) == paging.filter_digest(*base)


def assert_refused(token: str, shape: tuple[type, ...] = (str,), digest: str = DIGEST) -> None:
    with pytest.raises(InvalidArgument) as caught:
        paging.decode(token, digest, shape)
    [violation] = caught.value.violations
    assert violation.field == "page_token"
    assert "previous response with the same filters" in violation.description


def test_a_token_for_other_filters_is_refused() -> None:
    token = paging.encode(paging.filter_digest("default", "agents", None, "", []), ["a"])
    assert_refused(token)


def test_a_token_from_another_namespace_is_refused() -> None:
    token = paging.encode(
        paging.filter_digest("team-a", "agents", "ACTIVE", "worker", [("team", "a")]), ["a"]
    )
    assert_refused(token)


def test_a_token_from_another_list_is_refused() -> None:
    token = paging.encode(paging.filter_digest("default", "transitions", "agent-1"), [5])
    assert_refused(token, (int,), paging.filter_digest("default", "transitions", "agent-2"))
    assert_refused(token, (str,))


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "!!!!",
        "a",
        "é",
        "\x00",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        raw_token({"digest": DIGEST}),
        raw_token("x"),
        raw_token(None),
        raw_token([]),
        raw_token([DIGEST]),
        raw_token([DIGEST, "a", "b"]),
        raw_token([DIGEST, 1]),
        raw_token([DIGEST, None]),
        raw_token([DIGEST, ["a"]]),
        raw_token(["0" * 16, "a"]),
        raw_token([DIGEST, "\ud800"]),  # a lone surrogate: no driver can send it
        raw_token([DIGEST, "a\x00b"]),  # PostgreSQL refuses NUL in text
        raw_token([DIGEST, ""]),
        raw_token([DIGEST, "a b"]),
        raw_token([DIGEST, "x" * 129]),
        base64.urlsafe_b64encode(b"[" * 1500).decode(),  # nested past the recursion limit
        "A" * 2049,
    ],
)
def test_forged_tokens_are_refused(token: str) -> None:
    assert_refused(token)


def test_a_bool_is_not_an_int_cursor() -> None:
    assert_refused(raw_token([DIGEST, True]), (int,))


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 2**64])
def test_an_int_cursor_beyond_64_bits_is_refused(number: int) -> None:
    # Not INTERNAL (SQLite's OverflowError) or UNAVAILABLE (PostgreSQL's out-of-range).
    assert_refused(raw_token([DIGEST, number]), (int,))


def test_an_over_long_but_well_formed_token_is_refused() -> None:
    assert_refused(paging.encode(DIGEST, ["x" * 2000]))


@pytest.mark.parametrize(
    ("weights", "size", "budget", "expected"),
    [
        ([10, 10, 10], 3, 30, 3),  # exactly fits
        ([10, 10, 10], 3, 29, 2),
        ([10, 10, 10], 2, 100, 2),  # page_size first
        ([50, 1], 5, 10, 1),  # the first record goes whatever it weighs
        ([], 5, 10, 0),
        ([1, 1, 1, 1], 10, 100, 4),  # fewer records than a page
    ],
)
def test_fitting_keeps_what_the_budget_allows_and_at_least_one(
    weights: list[int], size: int, budget: int, expected: int
) -> None:
    assert paging.fitting(weights, size, lambda w: w, budget) == expected


def test_page_budget_leaves_room_for_the_rest_of_a_response() -> None:
    assert paging.page_budget(8 << 20) == (8 << 20) - (64 << 10)
    assert paging.page_budget(64 << 10) == 32 << 10  # a tiny limit: half of it
