"""AppendEvents' fast payload check never accepts what the full check refuses."""

from __future__ import annotations

import pytest

from stateward.server.domain.errors import Violations
from stateward.server.services.execution import _check_event_data, _small_json_object

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
