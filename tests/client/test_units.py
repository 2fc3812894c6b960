"""The non-I/O parts of the composite client methods, without any server."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stateward.client import (
    Backoff,
    DataLoss,
    ErrorKind,
    Event,
    InvalidArgument,
    Unavailable,
    UsageError,
)
from stateward.client._subscribe import Keepalive, Resumer
from stateward.client._tracking import ERROR_KINDS, describe_failure, error_kind
from stateward.client._transfer import Download, Upload
from stateward.client.cli._args import duration
from stateward.client.cli._progress import ProgressBar
from stateward.client.cli.events import line
from stateward.client.models import Checkpoint


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    waits = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.5)
    assert [waits.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert waits.delay(2, rand=lambda: 1.0) == pytest.approx(0.1)  # half of 0.2 jittered away
    assert Backoff(jitter=1.0).delay(3, rand=lambda: 1.0) == 0.0


def test_error_kinds_follow_the_class_hierarchy_and_can_be_extended() -> None:
    assert error_kind(TimeoutError(), ERROR_KINDS) == ErrorKind.TIMEOUT
    assert error_kind(UnicodeDecodeError("utf-8", b"", 0, 1, "x"), ERROR_KINDS) == (
        ErrorKind.INVALID_INPUT
    )
    assert error_kind(ConnectionError(), ERROR_KINDS) == ErrorKind.UNKNOWN
    extended = {**ERROR_KINDS, ConnectionError: ErrorKind.DEPENDENCY}
    assert error_kind(ConnectionResetError(), extended) == ErrorKind.DEPENDENCY


def test_failure_descriptions_fit_the_server_limits() -> None:
    message, details = describe_failure(ValueError("x\x00" + "y" * 5000))
    assert message.startswith("ValueError: x\\x00y") and len(message) == 4096
    assert details["exception_type"] == "builtins.ValueError"
    assert describe_failure(MemoryError())[0] == "MemoryError"


def _event(sequence: int) -> Event:
    return Event(sequence, "t", "a1", "", "", {}, None, None)


def _resumer(**kw: object) -> Resumer:
    options: dict[str, object] = dict(
        agent_id="a1",
        run_id="",
        task_run_id="",
        types=("x",),
        after_sequence=0,
        from_head=False,
        keepalive_interval=None,
        reconnect=Backoff(initial=0.1, maximum=0.1, jitter=0),
        metadata=(),
    )
    options.update(kw)
    return Resumer(**options)  # type: ignore[arg-type]


def test_resumer_continues_after_the_last_delivered_event() -> None:
    cursor = _resumer(after_sequence=4)
    assert cursor.prepared().request.after_sequence == 4
    assert cursor.accept(_event(5)) is not None
    assert cursor.accept(_event(5)) is None  # a repeat is never handed out
    assert cursor.accept(_event(3)) is None
    request = cursor.prepared().request
    assert (request.after_sequence, request.from_head) == (5, False)
    # A keepalive's head is the stream's watermark: nothing below it is still to come.
    assert cursor.accept(Keepalive(head=99)) is None
    assert cursor.prepared().request.after_sequence == 99
    assert cursor.accept(Keepalive(head=50)) is None  # never backwards
    assert cursor.accept(_event(60)) is None
    assert cursor.prepared().request.after_sequence == 99
    assert list(request.filter.types) == ["x"]


def test_resumer_from_head_learns_its_position_from_keepalives_or_events() -> None:
    cursor = _resumer(from_head=True)
    assert cursor.prepared().request.from_head
    cursor.accept(Keepalive(head=12))
    assert (cursor.prepared().request.after_sequence, cursor.prepared().request.from_head) == (
        12,
        False,
    )
    cursor = _resumer(from_head=True)
    cursor.accept(_event(40))
    assert cursor.prepared().request.after_sequence == 40


def test_resumer_retries_transport_trouble_and_clean_ends_but_not_refusals() -> None:
    cursor = _resumer()
    assert cursor.retry_delay(None) == pytest.approx(0.1)
    assert cursor.retry_delay(Unavailable("down")) == pytest.approx(0.1)
    assert cursor.failures == 2
    cursor.accept(_event(1))
    assert cursor.failures == 0
    with pytest.raises(InvalidArgument):
        cursor.retry_delay(InvalidArgument("bad filter"))


def _manifest(data: bytes) -> Checkpoint:
    return Checkpoint("ck1", "a1", 0, len(data), hashlib.sha256(data).hexdigest(), "none", {}, None)


def test_download_to_a_path_appears_only_once_verified(tmp_path: Path) -> None:
    dest = tmp_path / "payload.bin"
    dest.write_bytes(b"old")
    good = Download("ck1", dest, None)
    good.feed(_manifest(b"abcdef"))
    good.feed(b"abc")
    assert dest.read_bytes() == b"old"  # nothing replaced mid-stream
    good.feed(b"def")
    good.finish()
    assert dest.read_bytes() == b"abcdef"
    assert list(tmp_path.iterdir()) == [dest]

    bad = Download("ck1", dest, None)
    bad.feed(_manifest(b"abcdef"))
    bad.feed(b"abcdeX")
    with pytest.raises(DataLoss, match="hash"):
        bad.finish()
    bad.abort()
    assert dest.read_bytes() == b"abcdef"
    assert list(tmp_path.iterdir()) == [dest]  # the temporary file is gone


def test_download_checks_size_and_manifest() -> None:
    short = Download("ck1", None, None)
    short.feed(_manifest(b"abcdef"))
    short.feed(b"abc")
    with pytest.raises(DataLoss, match="received 3 bytes"):
        short.finish()
    with pytest.raises(DataLoss, match="without its manifest"):
        Download("ck1", None, None).finish()
    target = io.BytesIO()
    sink = Download("ck1", target, None)
    sink.feed(_manifest(b"xyz"))
    sink.feed(b"xyz")
    assert sink.finish() == _manifest(b"xyz") and target.getvalue() == b"xyz"


def test_upload_chunks_and_hashes_every_kind_of_source(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10
    path = tmp_path / "p.bin"
    path.write_bytes(data)
    chunks = iter([data[:1000], data[1000:]])
    sources: list[object] = [data, path, str(path), io.BytesIO(data), chunks]
    for source in sources:
        upload = Upload("a1", source, None, 1000, None, None)  # type: ignore[arg-type]
        upload.prepare()
        sent = [m.chunk for m in list(upload.messages())[1:]]
        assert b"".join(sent) == data and max(map(len, sent)) <= 1000
        known = not isinstance(source, type(iter([])))
        assert bool(upload.first_message().metadata.sha256) is known
        assert upload.digest.hexdigest() == hashlib.sha256(data).hexdigest()
    with pytest.raises(UsageError, match="chunk_size"):
        Upload("a1", b"", None, 5 << 20, None, None)
    with pytest.raises(UsageError, match="upload source"):
        Upload("a1", 42, None, 10, None, None)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="cannot read"):
        Upload("a1", tmp_path / "missing", None, 10, None, None).prepare()


def test_progress_bar_draws_in_place_and_ends_the_line() -> None:
    out = io.StringIO()
    ticks = iter([0.0, 0.01, 1.0, 2.0])
    bar = ProgressBar("uploading", stream=out, enabled=True, clock=lambda: next(ticks))
    bar.update(0, 4 << 20)
    bar.update(1 << 20, 4 << 20)  # too soon after the last draw: skipped
    bar.update(2 << 20, 4 << 20)
    bar.close()
    frames = out.getvalue().split("\r")[1:]
    assert frames[0].startswith("uploading [------------------------]   0%  0 B / 4.0 MiB")
    assert "[############------------]  50%  2.0 MiB / 4.0 MiB" in frames[1]
    assert out.getvalue().endswith("\n")
    silent = io.StringIO()
    quiet = ProgressBar("x", stream=silent)  # not a terminal: draws nothing
    quiet.update(1, 2)
    quiet.close()
    assert silent.getvalue() == ""


def test_durations_for_the_command_line() -> None:
    assert duration("90") == timedelta(seconds=90)
    assert duration("15m") == timedelta(minutes=15)
    assert duration("1.5h") == timedelta(minutes=90)
    assert duration("7d") == timedelta(days=7)


def test_event_lines_are_readable_and_coloured_on_request() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    event = Event(7, "task.failed", "a1", "run-1", "task-1", {"error": "boom"}, when, None)
    plain = line(event)
    assert plain == (
        "2026-01-02 03:04:05.678Z  #7  task.failed  agent=a1  run=run-1  task=task-1  "
        '{"error":"boom"}'
    )
    coloured = line(event, color=True)
    assert "\033[31mtask.failed\033[0m" in coloured  # failures are red
    assert coloured.count("\033[") > 4
