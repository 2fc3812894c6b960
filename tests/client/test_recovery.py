"""Checkpoint uploads and downloads, recovery and retention calls, against the real server."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stateward.client import (
    Client,
    DataLoss,
    ErrorKind,
    NotFound,
    RecoveryStrategy,
    RunStatus,
    TaskStatus,
    UsageError,
)
from stateward.server.config import Settings
from tests.client.conftest import async_twin
from tests.support.server import ServerThread

MiB = 1 << 20


def payload(size: int) -> bytes:
    return hashlib.sha256(str(size).encode()).digest() * (size // 32) + b"!" * (size % 32)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_file(server: ServerThread, checkpoint_id: str) -> Path:
    """Where the server keeps a checkpoint's payload (file:// under its data directory)."""
    (found,) = Path(server.settings.data_dir).rglob(f"{checkpoint_id}*")
    return found


def test_upload_and_download_bytes_with_progress(live: Client, agent: str) -> None:
    data = payload(3 * MiB + 5)
    sent: list[tuple[int, int | None]] = []
    made = live.upload_checkpoint(
        agent, data, labels={"kind": "full"}, chunk_size=MiB, progress=lambda *p: sent.append(p)
    )
    assert (made.size_bytes, made.sha256, made.labels) == (len(data), sha(data), {"kind": "full"})
    assert sent[-1] == (len(data), len(data)) and len(sent) == 4  # one call per chunk
    got: list[tuple[int, int | None]] = []
    assert live.download_checkpoint(made.checkpoint_id, progress=lambda *p: got.append(p)) == data
    assert got[-1] == (len(data), len(data))


def test_upload_from_a_file_path_a_file_object_and_an_iterator(
    live: Client, agent: str, tmp_path: Path
) -> None:
    data = payload(2 * MiB + 100)
    path = tmp_path / "state.bin"
    path.write_bytes(data)

    def pieces() -> Iterator[bytes]:  # uneven, one larger than a chunk
        yield data[:10]
        yield data[10 : 2 * MiB]
        yield data[2 * MiB :]

    with path.open("rb") as file:
        made = [
            live.upload_checkpoint(agent, path),
            live.upload_checkpoint(agent, str(path)),
            live.upload_checkpoint(agent, file),
            live.upload_checkpoint(agent, pieces()),
            live.upload_checkpoint(agent, io.BufferedReader(io.BytesIO(data))),
        ]
    assert {(c.size_bytes, c.sha256) for c in made} == {(len(data), sha(data))}
    for checkpoint in made:
        assert live.download_checkpoint(checkpoint.checkpoint_id) == data


def test_a_failing_source_aborts_the_upload_with_its_own_error(live: Client, agent: str) -> None:
    def broken() -> Iterator[bytes]:
        yield b"some bytes"
        raise OSError("disk went away")

    before = list(live.iter_checkpoints(agent))
    with pytest.raises(OSError, match="disk went away"):
        live.upload_checkpoint(agent, broken())
    assert list(live.iter_checkpoints(agent)) == before  # nothing half-stored
    with pytest.raises(UsageError, match="bytes"):
        live.upload_checkpoint(agent, iter(["text, not bytes"]))  # type: ignore[list-item]
    with pytest.raises(NotFound):  # a refusal mid-stream is the server's error, as usual
        live.upload_checkpoint("ghost", payload(3 * MiB), chunk_size=MiB)


def test_download_to_a_path_and_to_a_file_object(live: Client, agent: str, tmp_path: Path) -> None:
    data = payload(MiB + 1)
    made = live.upload_checkpoint(agent, data)
    dest = tmp_path / "out" / "copy.bin"
    dest.parent.mkdir()
    manifest = live.download_checkpoint(made.checkpoint_id, dest)
    assert manifest == made
    assert dest.read_bytes() == data
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left behind
    sink = io.BytesIO()
    live.download_checkpoint(made.checkpoint_id, sink)
    assert sink.getvalue() == data


def test_a_corrupt_blob_never_reaches_the_destination(
    live: Client, shared_server: ServerThread, agent: str, tmp_path: Path
) -> None:
    data = payload(MiB)
    made = live.upload_checkpoint(agent, data)
    stored = blob_file(shared_server, made.checkpoint_id)
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    stored.write_bytes(bytes(raw))

    dest = tmp_path / "restore.bin"
    dest.write_bytes(b"previous good copy")
    with pytest.raises(DataLoss):
        live.download_checkpoint(made.checkpoint_id, dest)
    assert dest.read_bytes() == b"previous good copy"
    assert list(tmp_path.iterdir()) == [dest]
    with pytest.raises(DataLoss):
        live.download_checkpoint(made.checkpoint_id)


def test_async_upload_and_download(live: Client, agent: str, tmp_path: Path) -> None:
    data = payload(MiB + 7)
    path = tmp_path / "p.bin"
    path.write_bytes(data)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    async def broken() -> AsyncIterator[bytes]:
        yield b"some"
        raise OSError("gone")

    async def main() -> None:
        async with async_twin(live) as client:
            with pytest.raises(OSError, match="gone"):
                await client.upload_checkpoint(agent, broken())
            made = [
                await client.upload_checkpoint(agent, data),
                await client.upload_checkpoint(agent, path),
                await client.upload_checkpoint(agent, chunks()),
            ]
            assert {c.sha256 for c in made} == {sha(data)}
            assert await client.download_checkpoint(made[2].checkpoint_id) == data
            out = tmp_path / "back.bin"
            await client.download_checkpoint(made[0].checkpoint_id, out)
            assert out.read_bytes() == data

    asyncio.run(main())
    with pytest.raises(UsageError, match="AsyncClient"):
        live.upload_checkpoint(agent, chunks())  # type: ignore[arg-type]


def test_restore_and_the_recovery_plan(live: Client, agent: str) -> None:
    live.save_state(agent, {"step": 1})
    checkpoint = live.create_checkpoint(agent, b"extra")
    live.save_state(agent, {"step": 2})
    restored = live.restore_checkpoint(checkpoint.checkpoint_id, expected_version=2)
    assert restored.state_version == 3
    assert live.get_state(agent).document == {"step": 1}

    run = live.start_workflow_run("wf", agent_id=agent)
    with pytest.raises(TimeoutError):
        with live.track_task(run.run_id, "slow", agent, timeout=5) as _:
            raise TimeoutError("the model took too long")
    plan = live.recover_agent(agent)
    assert plan.strategy == RecoveryStrategy.RETRY_WITH_LONGER_TIMEOUT
    assert plan.suggested_timeout is not None and plan.suggested_timeout > timedelta(seconds=5)
    assert plan.last_failure is not None and plan.last_failure.task_id == "slow"
    assert plan.checkpoint is not None and plan.checkpoint.checkpoint_id == checkpoint.checkpoint_id


def test_retry_a_failed_run_and_compensate(live: Client, agent: str) -> None:
    run = live.start_workflow_run("book-trip", agent_id=agent)
    for task_id, undo in (("flight", "cancel flight"), ("hotel", "cancel hotel")):
        with live.track_task(run.run_id, task_id, agent) as task:
            task.complete({"booked": task_id}, compensation={"do": undo})
    with pytest.raises(ValueError):
        with live.track_task(run.run_id, "car", agent):
            raise ValueError("no cars left")
    live.fail_workflow_run(run.run_id, "car failed", ErrorKind.INVALID_INPUT)

    steps = live.get_compensation_plan(run.run_id)
    assert [s.task_id for s in steps] == ["hotel", "flight"]  # last completed first
    assert steps[0].compensation == {"do": "cancel hotel"} and not steps[0].done
    first = live.list_compensation_steps(run.run_id, page_size=1)
    assert [s.task_id for s in first] == ["hotel"] and first.next_page_token
    assert list(live.iter_compensation_steps(run.run_id, page_size=1)) == steps
    done = live.complete_compensation(run.run_id, steps[0].task_run_id)
    assert done.done and done.done_time is not None

    retried = live.retry_workflow_run(run.run_id)
    assert retried.run.status == RunStatus.RUNNING
    assert retried.run.retry_of_run_id == run.run_id and retried.run.attempt == 2
    assert sorted(t.task_id for t in retried.carried_over) == ["flight", "hotel"]
    assert retried.pending_task_ids == ["car"]
    carried = live.get_task_run(retried.carried_over[0].task_run_id)
    assert carried.status == TaskStatus.COMPLETED


def test_prune_gc_and_archive(live: Client, agent: str, shared_server: ServerThread) -> None:
    made = [live.create_checkpoint(agent, bytes([n]) * 10) for n in range(3)]
    dry = live.prune_checkpoints(agent, keep_last=1, dry_run=True)
    assert {c.checkpoint_id for c in dry.deleted} == {c.checkpoint_id for c in made[:2]}
    assert len(list(live.iter_checkpoints(agent))) == 3
    pruned = live.prune_checkpoints(agent, keep_last=1)
    assert pruned.freed_bytes == 20
    assert [c.checkpoint_id for c in live.iter_checkpoints(agent)] == [made[2].checkpoint_id]
    with pytest.raises(NotFound):
        live.get_checkpoint(made[0].checkpoint_id)

    assert live.collect_garbage(grace_period=0, dry_run=True).deleted_blobs == []

    run = live.start_workflow_run("old-job", agent_id=agent)
    live.complete_workflow_run(run.run_id, {"ok": True})
    archives = Path(shared_server.settings.resolved_archive_url.removeprefix("file://"))
    name = f"runs-{live.options.namespace}.jsonl.gz"
    url = f"file://{archives / name}"  # archives must be under the server's archive root
    later = datetime.now(UTC) + timedelta(minutes=1)
    counted = live.archive_runs(later, url, dry_run=True)
    assert (counted.runs, counted.archive_url) == (1, url)
    archived = live.archive_runs(later, url)
    assert (archived.runs, archived.archive_url) == (1, url)
    assert (archives / name).exists()
    with pytest.raises(NotFound):
        live.get_workflow_run(run.run_id)


def test_a_compensation_plan_bigger_than_one_answer_comes_whole(tmp_path: Path) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        database_url=f"sqlite:///{tmp_path / 'stateward.db'}",
        max_message_bytes=MiB,
        log_level="WARNING",
    )
    server = ServerThread(settings).start()
    try:
        with Client.connect(server.target, timeout=10) as client:
            client.create_agent("a1", "planner")
            run = client.start_workflow_run("big", agent_id="a1")
            for n in range(5):  # 5 x 300 KB of compensations: at least two answers
                with client.track_task(run.run_id, f"t{n}", "a1") as task:
                    task.complete(None, compensation={"undo": n, "pad": "x" * 300_000})
            client.fail_workflow_run(run.run_id, "stop", ErrorKind.DEPENDENCY)
            expected = [f"t{n}" for n in reversed(range(5))]
            assert len(client.list_compensation_steps(run.run_id).items) < 5
            assert [s.task_id for s in client.get_compensation_plan(run.run_id)] == expected

            async def from_asyncio() -> list[str]:
                async with async_twin(client) as twin:
                    return [s.task_id for s in await twin.get_compensation_plan(run.run_id)]

            assert asyncio.run(from_asyncio()) == expected
    finally:
        server.close()
