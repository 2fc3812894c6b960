"""The fsspec blob store (storage/blobs.py) on memory://, file:// and s3:// (moto over HTTP)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stateward.storage import StorageUnavailable
from stateward.storage.blobs import (
    BlobCorrupt,
    BlobMissing,
    BlobStore,
    UnsafeBlobKey,
    blob_key,
    check_key,
)
from tests.support.s3 import S3Endpoint, start_or_skip


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    yield start_or_skip()  # shared by the test process; stopped at exit


@pytest.fixture(
    params=[
        "memory-none",
        "file-none",
        "file-zstd",
        pytest.param("s3-none", marks=pytest.mark.s3),  # compression is backend-agnostic
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    backend, compression = request.param.split("-")
    if backend == "memory":
        return BlobStore(f"memory://blobs-{uuid.uuid4().hex}", compression=compression)
    if backend == "file":
        return BlobStore(f"file://{tmp_path / 'blobs'}", compression=compression)
    s3: S3Endpoint = request.getfixturevalue("s3")
    return BlobStore(
        f"s3://{s3.bucket()}/prefix", compression=compression, storage_options=s3.storage_options
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_all(store: BlobStore, key: str, data: bytes, **extra: Any) -> bytes:
    info = dict(sha256=sha(data), size=len(data), compression=store.compression) | extra
    return b"".join(store.read(key, **info))


def test_put_then_read_round_trips_and_verifies(store: BlobStore) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # several read chunks, not a multiple of one
    key = blob_key("default", "agent-1", "ckpt_1")
    info = store.put(key, data)
    assert (info.size, info.sha256, info.compression) == (len(data), sha(data), store.compression)
    assert read_all(store, key, data, stored_size=info.stored_size) == data
    store.verify(key, sha256=info.sha256, size=info.size, compression=info.compression)


def test_empty_payload_is_a_real_blob(store: BlobStore) -> None:
    key = blob_key("default", "agent-1", "ckpt_empty")
    info = store.put(key, b"")
    assert info.sha256 == sha(b"")
    assert read_all(store, key, b"") == b""
    assert [b.key for b in store.list()] == [key]


def test_streaming_writer_commits_only_on_commit(store: BlobStore) -> None:
    writer = store.writer()
    writer.write(b"a" * 1000)
    writer.write(b"b" * 1000)
    assert store.is_active(writer.tmp_key)
    keys = [b.key for b in store.list()]
    # An object store shows an upload only once it completes; files show it at once.
    assert keys == ([] if store.protocol == "s3" else [writer.tmp_key])
    info = writer.commit(blob_key("ns-1", "a.b:c@d", "ckpt_2"))
    assert [b.key for b in store.list()] == ["ns-1/a.b:c@d/ckpt_2"]
    assert info.sha256 == sha(b"a" * 1000 + b"b" * 1000)
    assert not store.is_active(writer.tmp_key)


def test_abort_removes_the_temporary_blob(store: BlobStore) -> None:
    writer = store.writer()
    writer.write(b"partial")
    writer.abort()
    assert list(store.list()) == []


def test_committed_blobs_are_immutable(store: BlobStore) -> None:
    key = blob_key("default", "agent-1", "ckpt_3")
    store.put(key, b"first")
    with pytest.raises(Exception, match="immutable"):
        store.put(key, b"second")
    assert read_all(store, key, b"first") == b"first"
    assert [b.key for b in store.list()] == [key]  # the refused upload left nothing behind


def test_compression_is_recorded_per_blob(store: BlobStore) -> None:
    data = b"x" * 100_000
    key = blob_key("default", "agent-1", "ckpt_4")
    info = store.put(key, data)
    if store.compression == "zstd":
        assert info.stored_size < len(data) // 10
    else:
        assert info.stored_size == len(data)
    # A store configured differently still reads it: the manifest says how it was stored.
    other = BlobStore(store.url, compression="none" if store.compression == "zstd" else "zstd")
    other.fs = store.fs
    assert read_all(other, key, data, compression=info.compression) == data


def test_hash_mismatch_is_corruption(store: BlobStore) -> None:
    key = blob_key("default", "agent-1", "ckpt_5")
    store.put(key, b"payload")
    with pytest.raises(BlobCorrupt, match="sha256"):
        b"".join(store.read(key, sha256=sha(b"other!!"), size=7, compression=store.compression))


def test_changed_bytes_on_the_backend_are_corruption(store: BlobStore) -> None:
    data = os.urandom(50_000)
    key = blob_key("default", "agent-1", "ckpt_6")
    info = store.put(key, data)
    raw = bytearray(store.fs.cat_file(store.path(key)))
    raw[len(raw) // 2] ^= 0xFF  # same length, one flipped byte
    store.fs.pipe_file(store.path(key), bytes(raw))
    with pytest.raises(BlobCorrupt):
        read_all(store, key, data, stored_size=info.stored_size)


def test_truncated_blob_fails_before_any_byte_when_stored_size_is_known(store: BlobStore) -> None:
    data = os.urandom(10_000)
    key = blob_key("default", "agent-1", "ckpt_7")
    info = store.put(key, data)
    store.fs.pipe_file(store.path(key), store.fs.cat_file(store.path(key))[:-10])
    chunks = store.read(
        key,
        sha256=info.sha256,
        size=info.size,
        compression=info.compression,
        stored_size=info.stored_size,
    )
    with pytest.raises(BlobCorrupt, match="manifest says"):
        next(chunks)


def test_missing_blob(store: BlobStore) -> None:
    key = blob_key("default", "agent-1", "ckpt_gone")
    with pytest.raises(BlobMissing, match="missing"):
        read_all(store, key, b"")
    store.delete(key)  # deleting what is gone is fine


def test_delete_and_list(store: BlobStore) -> None:
    keys = [blob_key("default", f"agent-{i}", f"ckpt_{i}") for i in range(3)]
    for key in keys:
        store.put(key, key.encode())
    assert sorted(b.key for b in store.list()) == keys
    assert all(b.modified_us for b in store.list())
    store.delete(keys[1])
    assert sorted(b.key for b in store.list()) == [keys[0], keys[2]]


TRAVERSALS = [
    ("..", "agent", "ckpt_1"),
    ("default", "..", "ckpt_1"),
    ("default", "agent", ".."),
    ("default", "a/../../etc", "ckpt_1"),
    ("default", "agent", "../../../../etc/passwd"),
    ("default", "%2e%2e", "ckpt_1"),
    ("default", "agent", "%2e%2e%2fx"),
    ("default", "/etc", "passwd"),
    ("/abs", "agent", "ckpt_1"),
    ("default", "agent", "/tmp/x"),
    ("default", "a\\..\\b", "ckpt_1"),
    ("default", ".hidden", "ckpt_1"),
    ("default", "", "ckpt_1"),
    ("default", "agent", "ckpt\x00"),
    ("UPPER", "agent", "ckpt_1"),
]


class _NoTouching:
    """Stands in for the filesystem: any use at all fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the filesystem was called ({name}) for an unsafe key")


@pytest.mark.parametrize("parts", TRAVERSALS)
def test_traversal_ids_are_refused_before_any_filesystem_call(parts: tuple[str, str, str]) -> None:
    store = BlobStore(f"memory://blobs-{uuid.uuid4().hex}")
    store.fs = _NoTouching()
    with pytest.raises(UnsafeBlobKey):
        blob_key(*parts)
    key = "/".join(parts)
    with pytest.raises(UnsafeBlobKey):
        store.put(key, b"x")
    with pytest.raises(UnsafeBlobKey):
        store.read(key, sha256="", size=0, compression="none")
    with pytest.raises(UnsafeBlobKey):
        store.delete(key)


@pytest.mark.parametrize(
    "key", ["", "a", "a/b", "a/b/c/d", ".tmp/../x", ".tmp/NOTHEX", "../x/y", "/a/b/c", "a//b"]
)
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(UnsafeBlobKey):
        check_key(key)


def test_traversal_on_a_real_directory_writes_nothing_outside(tmp_path: Path) -> None:
    store = BlobStore(f"file://{tmp_path / 'root'}")
    for parts in TRAVERSALS:
        with pytest.raises(UnsafeBlobKey):
            store.put("/".join(parts), b"escape")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even the root was created


def test_urls_need_a_supported_scheme(tmp_path: Path) -> None:
    for url in (str(tmp_path), "ftp://host/x", "file://", "gs://bucket"):
        with pytest.raises(ValueError, match="must start with"):
            BlobStore(url)
    with pytest.raises(ValueError, match="compression"):
        BlobStore("memory://x", compression="lz4")


def test_foreign_files_under_the_root_are_not_listed(tmp_path: Path) -> None:
    store = BlobStore(f"file://{tmp_path}")
    (tmp_path / "README").write_text("not ours")
    (tmp_path / "a" / "b" / "c" / "d").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "d" / "e").write_text("too deep")
    key = blob_key("default", "agent", "ckpt_1")
    store.put(key, b"ours")
    assert [b.key for b in store.list()] == [key]


def test_unreachable_object_store_is_unavailable() -> None:
    store = BlobStore(
        "s3://bucket/prefix",
        storage_options={
            "endpoint_url": "http://127.0.0.1:9",  # discard port: nothing listens
            "key": "x",
            "secret": "y",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
        },
    )
    with pytest.raises(StorageUnavailable, match="retry later"):
        store.put(blob_key("default", "agent", "ckpt_1"), b"x")
    with pytest.raises(StorageUnavailable):
        list(store.list())


def test_disk_full_is_resource_exhausted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from stateward.storage import StorageFull

    store = BlobStore(f"file://{tmp_path}")
    writer = store.writer()

    def full(_data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer._counting.raw, "write", full)  # type: ignore[union-attr]
    with pytest.raises(StorageFull, match="no space"):
        writer.write(b"x")
    writer.abort()
    assert list(store.list()) == []


def test_listing_one_namespace_or_the_temporary_area(store: BlobStore) -> None:
    store.put(blob_key("ns-a", "agent", "ckpt_1"), b"a")
    store.put(blob_key("ns-b", "agent", "ckpt_2"), b"b")
    writer = store.writer()
    writer.write(b"pending")
    writer.close()  # complete on the backend, but never committed
    assert [b.key for b in store.list("ns-a")] == ["ns-a/agent/ckpt_1"]
    assert [b.key for b in store.list(".tmp")] == [writer.tmp_key]
    assert [b.temporary for b in store.list(".tmp")] == [True]
    assert list(store.list("ns-c")) == []
    with pytest.raises(UnsafeBlobKey):
        list(store.list("../x"))
    writer.abort()
    assert list(store.list(".tmp")) == []


def test_a_key_stays_protected_until_its_manifest_is_settled(store: BlobStore) -> None:
    key = blob_key("default", "agent", "ckpt_p")
    with store.protect(key):
        assert store.is_active(key)
        store.put(key, b"committed, manifest pending")
        assert store.is_active(key)  # GC in this process must not take it yet
    assert not store.is_active(key)
    with pytest.raises(UnsafeBlobKey):
        with store.protect("../escape"):
            pass


def test_file_writes_start_writeback_as_they_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every WRITEBACK bytes the writer asks the kernel to start writing what it wrote, so
    # the fsync at the end has little left to wait for; the blob is unchanged by it.
    from stateward.storage import blobs

    hinted: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def record(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_DONTNEED:
            hinted.append((offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(blobs, "WRITEBACK", 3 * 1024)
    monkeypatch.setattr(blobs.os, "posix_fadvise", record)
    store = BlobStore(f"file://{tmp_path / 'blobs'}")
    data = os.urandom(10 * 1024)
    key = blob_key("default", "agent", "ckpt_w")
    writer = store.writer()
    for i in range(0, len(data), 1024):
        writer.write(data[i : i + 1024])
    writer.commit(key)
    assert hinted == [(0, 3 * 1024), (3 * 1024, 3 * 1024), (6 * 1024, 3 * 1024)]
    assert read_all(store, key, data) == data
