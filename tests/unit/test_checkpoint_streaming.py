"""The checkpoint streaming paths without a server: the upload pipeline (receive while a
worker thread hashes and writes, bounded), the download read-ahead and the hand-encoded
download chunks."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest

from stateward.server.domain.errors import DataLoss
from stateward.server.servicers.recovery import chunk_message, read_ahead
from stateward.server.services.checkpoints import WRITE_AHEAD, CheckpointService
from stateward.storage import StorageFull
from stateward.storage.blobs import BlobInfo
from stateward.v1 import recovery_pb2 as pb

CHUNK = 256 * 1024


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16383, 16384, (1 << 21) + 5])
def test_download_chunks_are_encoded_as_protobuf_would(size: int) -> None:
    chunk = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    encoded = chunk_message(chunk)
    assert encoded == pb.DownloadCheckpointResponse(chunk=chunk).SerializeToString()
    assert pb.DownloadCheckpointResponse.FromString(encoded).chunk == chunk


# -- download read-ahead ------------------------------------------------------------------


class Source:
    """A blocking chunk iterator (like a blob read) that records when it is closed."""

    def __init__(self, count: int, fail_after: int | None = None) -> None:
        self.count = count
        self.fail_after = fail_after
        self.closed = threading.Event()
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        try:
            for n in range(self.count):
                self.read += 1
                if n == self.fail_after:
                    raise DataLoss("does not match its sha256")
                yield bytes([n]) * 10
        finally:
            self.closed.set()


async def test_read_ahead_yields_every_chunk_in_order() -> None:
    source = Source(5)
    got = [chunk async for chunk in read_ahead(iter(source))]
    assert got == [bytes([n]) * 10 for n in range(5)]
    assert source.closed.is_set()


async def test_read_ahead_raises_the_iterators_error_after_the_good_chunks() -> None:
    source = Source(5, fail_after=2)
    got = []
    with pytest.raises(DataLoss):
        async for chunk in read_ahead(iter(source)):
            got.append(chunk)
    assert got == [bytes([0]) * 10, bytes([1]) * 10]


async def test_read_ahead_stays_one_chunk_ahead_and_closes_when_the_consumer_stops() -> None:
    source = Source(100)
    stream = read_ahead(iter(source))
    assert await anext(stream) == bytes(10)
    for _ in range(50):  # time for the reader to run ahead, if it were unbounded
        await asyncio.sleep(0.01)
    assert source.read <= 2  # the chunk taken and the one read ahead
    await stream.aclose()
    assert source.closed.is_set()
    assert source.read < source.count


# -- upload pipeline ----------------------------------------------------------------------


class Writer:
    """A blob writer whose batches block until ``release`` is set (a slow disk)."""

    def __init__(self, fail_on_batch: int | None = None) -> None:
        self.release = threading.Event()
        self.fail_on_batch = fail_on_batch
        self.batches = 0
        self.data = bytearray()
        self.writing = threading.Lock()  # held while a batch is being written
        self.aborted_while_writing: bool | None = None
        self.closed = False
        self.digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    def write_all(self, chunks: Iterable[bytes]) -> None:
        with self.writing:
            assert self.release.wait(10)
            self.batches += 1
            if self.batches == self.fail_on_batch:
                raise StorageFull("the blob store has no space left")
            for chunk in chunks:
                self.data += chunk
                self.digest.update(chunk)

    def close(self) -> None:
        self.closed = True

    def commit(self, key: str) -> BlobInfo:
        self.close()
        size = len(self.data)
        return BlobInfo(key, size, size, self.sha256, "none")

    def abort(self) -> None:
        self.aborted_while_writing = self.writing.locked()


class Store:
    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def writer(self) -> Writer:
        return self._writer


def service(writer: Writer) -> CheckpointService:
    return CheckpointService(db=None, blobs=Store(writer), state_history=1)  # type: ignore[arg-type]


class Chunks:
    """An upload's chunk stream that counts how many chunks were taken from it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for n in range(self.count):
            self.taken += 1
            yield bytes([n]) * CHUNK

    def payload(self) -> bytes:
        return b"".join(bytes([n]) * CHUNK for n in range(self.count))


async def spin() -> None:
    """Give the receiving task every chance to run ahead (no wall-clock waiting)."""
    for _ in range(500):
        await asyncio.sleep(0)


async def test_receiving_pauses_while_the_writer_is_behind() -> None:
    writer, chunks = Writer(), Chunks(64)
    receive: Any = service(writer)._receive
    task = asyncio.create_task(receive("k", "", aiter(chunks), 0.0))
    await spin()
    # One chunk went to the writer thread, which is stuck; the rest waiting for it holds
    # at most WRITE_AHEAD bytes (the chunk that reached the limit included).
    assert not task.done()
    assert (chunks.taken - 1) * CHUNK <= WRITE_AHEAD + CHUNK < chunks.count * CHUNK
    writer.release.set()
    info = await task
    payload = chunks.payload()
    assert bytes(writer.data) == payload and writer.closed
    assert (info.size, info.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert writer.batches < chunks.count  # chunks that waited went over in batches


async def test_a_write_error_ends_the_upload_and_drops_the_blob() -> None:
    writer, chunks = Writer(fail_on_batch=2), Chunks(64)
    writer.release.set()
    receive: Any = service(writer)._receive
    with pytest.raises(StorageFull):
        await receive("k", "", aiter(chunks), 0.0)
    assert writer.aborted_while_writing is False


async def test_a_cancelled_upload_drops_the_blob_once_its_writer_thread_is_done() -> None:
    writer, chunks = Writer(), Chunks(64)
    receive: Any = service(writer)._receive
    task = asyncio.create_task(receive("k", "", aiter(chunks), 0.0))
    await spin()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert writer.aborted_while_writing is None  # not yet: a batch is being written
    writer.release.set()
    for _ in range(1000):
        if writer.aborted_while_writing is not None:
            break
        await asyncio.sleep(0.01)
    assert writer.aborted_while_writing is False


async def test_a_wrong_announced_sha256_stores_nothing() -> None:
    writer, chunks = Writer(), Chunks(4)
    writer.release.set()
    receive: Any = service(writer)._receive
    with pytest.raises(DataLoss):
        await receive("k", "0" * 64, aiter(chunks), 0.0)
    assert writer.aborted_while_writing is False
