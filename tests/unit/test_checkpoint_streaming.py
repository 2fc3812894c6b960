"""The checkpoint streaming paths without a server: the upload pipeline (receive while a
worker thread hashes and writes, bounded), the download read-ahead and the hand-encoded
download chunks."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from google.protobuf.message import DecodeError

from stateward.server.domain.errors import DataLoss
from stateward.server.servicers.recovery import _READERS, chunk_message, read_ahead, upload_chunk
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


async def test_read_ahead_keeps_every_chunk_in_order_across_refills() -> None:
    source = Source(200)
    got = [chunk async for chunk in read_ahead(iter(source), depth=3)]
    assert got == [bytes([n % 256]) * 10 for n in range(200)]


async def test_read_ahead_stays_at_most_its_depth_ahead_and_closes_when_the_consumer_stops() -> (
    None
):
    source = Source(100)
    stream = read_ahead(iter(source), depth=4)
    assert await anext(stream) == bytes(10)
    for _ in range(50):  # time for the reader to run ahead, if it were unbounded
        await asyncio.sleep(0.01)
    assert source.read <= 1 + 4  # the chunk taken and at most 4 ready
    await stream.aclose()
    assert source.closed.is_set()
    assert source.read < source.count


async def test_a_slow_consumer_holds_no_reader_thread() -> None:
    source = Source(100)
    stream = read_ahead(iter(source), depth=2)
    assert await anext(stream) == bytes(10)
    for _ in range(50):
        await asyncio.sleep(0.01)
    # The pump filled its depth and gave its thread back: all reader threads can run at once.
    threads = _READERS._max_workers
    barrier = threading.Barrier(threads, timeout=10)
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(_READERS, barrier.wait) for _ in range(threads)))
    await stream.aclose()


# -- upload chunks ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16384, (1 << 21) + 5, 4 << 20])
def test_upload_chunks_are_taken_as_views_of_the_request_bytes(size: int) -> None:
    chunk = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    raw = pb.UploadCheckpointRequest(chunk=chunk).SerializeToString()
    got = upload_chunk(raw)
    assert isinstance(got, memoryview) and got.obj is raw  # no copy
    assert bytes(got) == chunk


def test_other_upload_encodings_go_through_protobuf() -> None:
    chunk = pb.UploadCheckpointRequest(chunk=b"abc").SerializeToString()
    meta = pb.UploadCheckpointRequest(
        metadata=pb.UploadCheckpointMetadata(agent_id="a")
    ).SerializeToString()
    assert upload_chunk(meta) is None
    assert upload_chunk(b"") is None
    assert upload_chunk(chunk + b"\x18\x01") == b"abc"  # an unknown field after the chunk
    assert upload_chunk(chunk + meta) is None  # the last member of the oneof wins
    assert upload_chunk(chunk + chunk) == b"abc"
    with pytest.raises(DecodeError):
        upload_chunk(pb.UploadCheckpointRequest(chunk=b"x" * 300).SerializeToString()[:-1])


# -- upload pipeline ----------------------------------------------------------------------


class Writer:
    """A blob writer whose writes block until ``release`` is set (a slow disk)."""

    def __init__(self, fail_on_write: int | None = None) -> None:
        self.release = threading.Event()
        self.fail_on_write = fail_on_write
        self.writes = 0
        self.threads: set[int] = set()
        self.data = bytearray()
        self.writing = threading.Lock()  # held while a chunk is being written
        self.aborted_while_writing: bool | None = None
        self.closed = False
        self.digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    def write(self, chunk: bytes | memoryview) -> None:
        with self.writing:
            assert self.release.wait(10)
            self.writes += 1
            self.threads.add(threading.get_ident())
            if self.writes == self.fail_on_write:
                raise StorageFull("the blob store has no space left")
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
    assert chunks.taken * CHUNK <= WRITE_AHEAD + CHUNK < chunks.count * CHUNK
    writer.release.set()
    info = await task
    payload = chunks.payload()
    assert bytes(writer.data) == payload and writer.closed
    assert (info.size, info.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())


async def test_a_write_error_ends_the_upload_and_drops_the_blob() -> None:
    writer, chunks = Writer(fail_on_write=2), Chunks(64)
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
    assert writer.aborted_while_writing is None  # not yet: a chunk is being written
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


async def test_a_wrong_announced_sha256_waits_for_a_late_cancellation_first() -> None:
    # A client that cancels mid-upload ends the request stream like a half-close; the
    # cancellation comes a moment later and must win over DATA_LOSS.
    writer, chunks = Writer(), Chunks(4)
    writer.release.set()
    receive: Any = service(writer)._receive
    task = asyncio.create_task(receive("k", "0" * 64, aiter(chunks), 3600.0))
    for _ in range(1000):
        if writer.closed:
            break
        await asyncio.sleep(0.01)
    await spin()
    assert writer.closed and not task.done()  # mismatch found, settling before DATA_LOSS
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(1000):
        if writer.aborted_while_writing is not None:
            break
        await asyncio.sleep(0.01)
    assert writer.aborted_while_writing is False  # nothing stored


async def test_an_announced_sha256_skips_the_wait_for_a_late_cancellation() -> None:
    chunks = Chunks(4)
    expected = hashlib.sha256(chunks.payload()).hexdigest()
    writer = Writer()
    writer.release.set()
    receive: Any = service(writer)._receive
    # A truncated payload cannot match the announced hash: no wait (an hour here) needed.
    info = await asyncio.wait_for(receive("k", expected, aiter(chunks), 3600.0), 30)
    assert info.sha256 == expected

    writer = Writer()
    writer.release.set()
    receive = service(writer)._receive
    task = asyncio.create_task(receive("k", "", aiter(Chunks(4)), 3600.0))
    for _ in range(1000):
        if writer.closed:
            break
        await asyncio.sleep(0.01)
    await spin()
    assert writer.closed and not task.done()  # written, then waiting for a cancellation
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert writer.aborted_while_writing is False
