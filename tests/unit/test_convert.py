"""Durations from the wire (server/rpc/convert.py)."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from stateward.server.domain.errors import InvalidArgument
from stateward.server.rpc import convert


@pytest.mark.parametrize(
    ("seconds", "nanos", "micros"),
    [
        (0, 0, 0),
        (0, 999, 1),  # under a microsecond, but positive: not "must be positive"
        (0, 1000, 1),
        (0, 1001, 2),
        (1, 500_000_000, 1_500_000),
        (0, -999, -1),
        (-2, -1, -2_000_001),
    ],
)
def test_durations_round_to_microseconds_away_from_zero(
    seconds: int, nanos: int, micros: int
) -> None:
    duration = duration_pb2.Duration(seconds=seconds, nanos=nanos)
    assert convert.duration_micros(duration, "timeout") == micros


def test_an_out_of_range_duration_names_its_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert.duration_micros(duration_pb2.Duration(seconds=10**12), "heartbeat_timeout")
    assert caught.value.violations[0].field == "heartbeat_timeout"
