"""Disk full: the data directory on a 20 MiB tmpfs, filled up under the server.

Writes answer RESOURCE_EXHAUSTED, reads keep working, and once space is freed writes
resume with nothing acknowledged lost. Needs permission to mount a tmpfs (root, not
in a restricted container); otherwise the test is skipped with the reason.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stateward.client import Client, ResourceExhausted, RetryPolicy
from stateward.server.config import Settings
from tests.faults.workload import report
from tests.support.server import ServerThread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        reason = (
            f"cannot mount a size-limited tmpfs here: {result.stderr.strip() or result.returncode}"
        )
        print(f"[faults] disk full: skipped: {reason}")
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(path: Path) -> int:
    """Write zeros to ``path`` until the filesystem is full; the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\0" * size
            while True:
                try:
                    written += handle.write(block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    return written


def test_disk_full_refuses_writes_keeps_reads(small_disk: Path) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=str(small_disk / "data"),
        grace_period=0.5,
        log_level="ERROR",
        sweep_interval=0.25,
    )
    server = ServerThread(settings).start()
    agent = f"d-{uuid.uuid4().hex[:8]}"
    acked: dict[int, dict[str, object]] = {}
    refused = 0
    try:
        with Client.connect(server.target, timeout=60, retry=RetryPolicy.disabled()) as client:
            client.create_agent(agent, "disk")
            for n in range(5):
                doc = {"n": n, "pad": "x" * 1000}
                acked[client.save_state(agent, doc).version] = doc
            payload = os.urandom(64 << 10)
            before = client.create_checkpoint(agent, payload)
            filler = small_disk / "filler"
            filled = _fill(filler)

            # Writes: RESOURCE_EXHAUSTED (a few may still fit in pages already allocated).
            for n in range(5, 45):
                doc = {"n": n, "pad": os.urandom(32 << 10).hex()}
                try:
                    acked[client.save_state(agent, doc).version] = doc
                except ResourceExhausted:
                    refused += 1
            with pytest.raises(ResourceExhausted):
                client.create_checkpoint(agent, os.urandom(256 << 10))
            refused += 1
            assert refused > 1, "no write was refused on a full disk"

            # Reads keep working.
            latest = client.get_state(agent)
            assert latest.document == acked[max(acked)]
            assert client.download_checkpoint(before.checkpoint_id) == payload
            list(client.iter_events(page_size=1000))

            # Space back: writes resume by themselves.
            filler.unlink()
            deadline = time.monotonic() + 120
            while True:
                doc = {"n": "after"}
                try:
                    acked[client.save_state(agent, doc).version] = doc
                    break
                except ResourceExhausted:
                    assert time.monotonic() < deadline, (
                        "writes did not resume after space was freed"
                    )
                    time.sleep(0.5)
            after = client.create_checkpoint(agent, b"after")
            assert client.download_checkpoint(after.checkpoint_id) == b"after"

            # Nothing corrupted: every acknowledged version, gap-free; every checkpoint verifies.
            versions = {
                v.version: v.document
                for v in client.iter_state_versions(agent, include_documents=True, page_size=1000)
            }
            assert sorted(versions) == list(range(1, len(versions) + 1))
            for version, doc in acked.items():
                assert versions[version] == doc
            for checkpoint in client.iter_checkpoints(agent):
                client.download_checkpoint(checkpoint.checkpoint_id)
            sequences = [e.sequence for e in client.iter_events(page_size=1000)]
            assert sequences == list(range(1, len(sequences) + 1))
    finally:
        server.close()
    report(
        f"[faults] disk full: filler_bytes={filled} writes_refused={refused} "
        f"acknowledged_writes_checked={len(acked)} lost=0"
    )
