"""AppendEvents' fast payload checks never accept what the full check refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateward.server.domain.errors import Violations
from stateward.server.services.execution import (
    _check_event_data,
    _small_json_object,
    _small_json_objects,
)
from tests.fuzz.strategies import hostile_json

ACCEPTED_FAST = [
    b"{}",
    b'{"tag":"ev","pad":"xxxx"}',
    b'{"big": 123456789012345678901234567890, "f": 1.5e300, "u": "\xc3\xa9\\u00e9"}',
    b'{"a": {"b": [1, {"c": null}]}, "t": true}',
    b'{"s": "{{{{[[[["}',
    b'{"s": "[", "t": "{"}',
    b'{"a":' * 60 + b"1" + b"}" * 60,
]
REFUSED = [
    b"[1]",
    b'"text"',
    b"{bad",
    b'{"a": 1}{"b": 2}',
    b'{"a": 1},{"b": 2}',
    b'{"n": NaN}',
    b'{"n": -Infinity}',
    b'{"s": "\xff"}',
    b'{"a":' * 70 + b"1" + b"}" * 70,
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
    b'{"s": "' + b"x" * 65536 + b'"}',
    b'{"a": 1',
]
# Valid, but left to the full check (which accepts them): whitespace, many brackets in strings.
ACCEPTED_SLOW = [
    b' {"a": [1, {}]} ',
    b'{"a": {"s": "' + b"[" * 100 + b'"}}',
]


def violations(raw: bytes) -> list[object]:
    v = Violations()
    _check_event_data(v, "events[0].data_json", raw)
    return list(v.items)


@pytest.mark.parametrize("raw", ACCEPTED_FAST)
def test_common_payloads_take_the_fast_path(raw: bytes) -> None:
    assert _small_json_object(raw)
    assert violations(raw) == []


def test_an_empty_payload_is_accepted_as_it_means_an_empty_object() -> None:
    assert _small_json_object(b"")


@pytest.mark.parametrize("raw", REFUSED)
def test_bad_payloads_go_to_the_full_check_which_refuses_them(raw: bytes) -> None:
    assert not _small_json_object(raw)
    assert violations(raw)


@pytest.mark.parametrize("raw", ACCEPTED_SLOW)
def test_unusual_valid_payloads_are_accepted_by_the_full_check(raw: bytes) -> None:
    assert not _small_json_object(raw)
    assert violations(raw) == []


# -- the batch check (orjson) ---------------------------------------------------------------
GOOD = b'{"tag":"ev","pad":"xxxx"}'
# What Python's json accepts and orjson refuses: the batch goes to the per-payload checks.
ORJSON_REFUSES = [b'{"f": 1e999}', b'{"s": "\\ud800"}']


def test_a_batch_of_common_payloads_passes_in_one_check() -> None:
    assert _small_json_objects([GOOD] * 100)
    assert _small_json_objects([GOOD, b"", b"{}", b'{"a": {"b": [1, {"c": null}]}}'])
    assert _small_json_objects([b"", b""])


@pytest.mark.parametrize("raw", REFUSED)
def test_one_bad_payload_sends_the_batch_to_the_full_check(raw: bytes) -> None:
    assert not _small_json_objects([GOOD, raw, GOOD])


@pytest.mark.parametrize("raw", ORJSON_REFUSES)
def test_valid_payloads_the_batch_check_is_unsure_of_are_accepted_by_the_full_check(
    raw: bytes,
) -> None:
    assert not _small_json_objects([GOOD, raw])
    assert violations(raw) == []


def test_the_batch_check_bounds_nesting_per_payload() -> None:
    nested = b'{"a":' * 40 + b"1" + b"}" * 40  # 40 levels: fine alone, and twice
    assert _small_json_objects([nested, nested])
    assert not _small_json_objects([GOOD, b'{"a":' * 70 + b"1" + b"}" * 70])


JSONISH = st.lists(
    st.sampled_from(
        [
            b"{",
            b"}",
            b"[",
            b"]",
            b'"',
            b"\\",
            b":",
            b",",
            b" ",
            b"a",
            b"1",
            b"-",
            b"e",
            b".",
            b"null",
            b"true",
            b"NaN",
            b"\\u",
            b"d800",
            b"\x00",
            b"\xff",
            b"\xc3\xa9",
            b"\t",
            b"\n",
            b"0",
            b"+",
        ]
    ),
    max_size=40,
).map(b"".join)
VALID_OBJECTS = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=8,
    ),
    max_size=5,
).map(lambda d: json.dumps(d).encode())


@given(raw=st.one_of(JSONISH.map(lambda b: b"{" + b), JSONISH, hostile_json(), VALID_OBJECTS))
def test_the_batch_check_never_accepts_what_the_full_check_refuses(raw: bytes) -> None:
    valid = not raw or violations(raw) == []  # empty means {}
    if _small_json_objects([raw]) or _small_json_objects([GOOD, raw, GOOD]):
        assert valid
