"""The data directory's disk: fdatasync latency and raw sequential throughput."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.loadgen import percentile

MiB = 1 << 20


def fdatasync_latency(directory: Path, count: int = 200, size: int = 4096) -> dict[str, Any]:
    """p50/p99 of ``count`` small appends each followed by fdatasync."""
    path = directory / "fdatasync.probe"
    block = os.urandom(size)
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            samples.append((time.perf_counter() - t0) * 1e3)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    samples.sort()
    return {
        "count": count,
        "bytes": size,
        "p50_ms": percentile(samples, 0.5),
        "p99_ms": percentile(samples, 0.99),
        "max_ms": samples[-1],
    }


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache so the next read hits the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sequential(directory: Path, total: int, chunk: int = MiB) -> dict[str, Any]:
    """Write ``total`` bytes in ``chunk`` pieces then fsync; evict; read it all back."""
    path = directory / "sequential.probe"
    block = os.urandom(chunk)
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as handle:
        written = 0
        while written < total:
            written += handle.write(block)
        os.fsync(handle.fileno())
    write_s = time.perf_counter() - t0
    evict(path)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.read(chunk):
            pass
    read_s = time.perf_counter() - t0
    path.unlink()
    return {
        "bytes": total,
        "write_MiBps": total / MiB / write_s,
        "read_MiBps": total / MiB / read_s,
    }
