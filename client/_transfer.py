"""Checkpoint uploads and downloads: everything but the sending, shared by both clients.

Uploads stream the payload in chunks after one metadata message. When the
payload can be read twice (bytes, a file path, a seekable file) its sha256 is
computed first and sent in the metadata, so the server refuses a payload that
changed on the way (DATA_LOSS) before storing anything. Any other source is
hashed while it streams and checked against the manifest the server returns.

Downloads verify the payload against the manifest (size and sha256) before
handing it over. A file destination is written to a temporary file next to it
and renamed into place only once the stream ended OK and the bytes verified;
otherwise the temporary file is deleted, so a destination path never holds a
partial or corrupt payload.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeAlias

from stateward.v1 import recovery_pb2 as pb

from ._codec import new_request_id, str_map
from ._operation import RECOVERY, Prepared, Rpc
from ._options import MetadataLike
from .errors import DataLoss, UsageError
from .models import Checkpoint

UPLOAD = Rpc(RECOVERY, "UploadCheckpoint")
DOWNLOAD = Rpc(RECOVERY, "DownloadCheckpoint")

MiB = 1 << 20
DEFAULT_CHUNK = MiB
MAX_CHUNK = 4 * MiB
"""The server's limit on one upload chunk."""
SPOOL_IN_MEMORY = 8 * MiB
"""A download to a file object is held in memory up to this size, then on disk."""

Progress: TypeAlias = Callable[[int, int | None], None]
"""Called as bytes move: ``progress(done_bytes, total_bytes_or_None)``."""

UploadSource: TypeAlias = (
    bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | Iterable[bytes]
)
"""What ``upload_checkpoint`` takes: bytes, a file path, a binary file object or an
iterable of byte chunks (``AsyncClient`` also takes an async iterable)."""

Destination: TypeAlias = str | os.PathLike[str] | IO[bytes] | None
"""Where ``download_checkpoint`` puts the payload: None returns it as bytes."""


class Upload:
    """One upload: its metadata message, its chunks, and the hash to check."""

    def __init__(
        self,
        agent_id: str,
        source: UploadSource | AsyncIterable[bytes],
        labels: Mapping[str, str] | None,
        chunk_size: int,
        request_id: str | None,
        progress: Progress | None,
    ) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK:
            raise UsageError(f"chunk_size must be 1 to {MAX_CHUNK} bytes (got {chunk_size})")
        self.agent_id = agent_id
        self.labels = str_map(labels)
        self.chunk_size = chunk_size
        self.request_id = new_request_id(request_id)
        self.progress = progress
        self.sha256 = ""
        """Hex sha256 sent in the metadata; empty when the source is read only once."""
        self.total: int | None = None
        self.sent = 0
        self.digest = hashlib.sha256()
        self.failure: BaseException | None = None
        """An error reading the source; it aborted the call and is what the caller sees."""
        self._data: memoryview | None = None
        self._path: Path | None = None
        self._file: IO[bytes] | None = None
        self._chunks: Iterable[bytes] | None = None
        self.async_source: AsyncIterable[bytes] | None = None
        if isinstance(source, bytes | bytearray | memoryview):
            self._data = memoryview(source).cast("B")
        elif isinstance(source, str | os.PathLike):
            self._path = Path(source)
        elif hasattr(source, "read"):
            self._file = source  # type: ignore[assignment]
        elif isinstance(source, AsyncIterable):
            self.async_source = source
        elif isinstance(source, Iterable):
            self._chunks = source
        else:
            raise UsageError(
                "upload source must be bytes, a file path, a binary file object "
                f"or an iterable of bytes (got {type(source).__name__})"
            )

    @property
    def reads_files(self) -> bool:
        """Whether preparing and chunking read from disk (the async client offloads it)."""
        return self._path is not None or self._file is not None

    def prepare(self) -> None:
        """Hash the payload up front when it can be read again (blocking file reads)."""
        if self._data is not None:
            self.sha256, self.total = hashlib.sha256(self._data).hexdigest(), len(self._data)
        elif self._path is not None:
            try:
                with self._path.open("rb") as file:
                    self.sha256, self.total = _hash(file, self.chunk_size)
            except OSError as exc:
                raise UsageError(f"cannot read {str(self._path)!r}: {exc.strerror}") from exc
        elif self._file is not None and _seekable(self._file):
            start = self._file.tell()
            self.sha256, self.total = _hash(self._file, self.chunk_size)
            self._file.seek(start)

    def first_message(self) -> pb.UploadCheckpointRequest:
        return pb.UploadCheckpointRequest(
            metadata=pb.UploadCheckpointMetadata(
                agent_id=self.agent_id,
                labels=self.labels,
                request_id=self.request_id,
                sha256=self.sha256,
            )
        )

    def chunk_message(self, chunk: bytes | memoryview) -> pb.UploadCheckpointRequest:
        """A chunk as sent: counted, hashed, reported."""
        self.digest.update(chunk)
        self.sent += len(chunk)
        if self.progress is not None:
            self.progress(self.sent, self.total)
        return pb.UploadCheckpointRequest(chunk=bytes(chunk))

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The payload in pieces of at most ``chunk_size`` (blocking reads for files)."""
        size = self.chunk_size
        if self._data is not None:
            for start in range(0, len(self._data), size):
                yield self._data[start : start + size]
        elif self._path is not None:
            with self._path.open("rb") as file:
                yield from iter(lambda: file.read(size), b"")
        elif self._file is not None:
            yield from iter(lambda: self._file.read(size), b"")  # type: ignore[union-attr]
        elif self._chunks is not None:
            for chunk in self._chunks:
                yield from _split(chunk, size)

    def messages(self) -> Iterator[pb.UploadCheckpointRequest]:
        """The whole request stream, for the blocking client."""
        yield self.first_message()
        try:
            for chunk in self.chunks():
                yield self.chunk_message(chunk)
        except Exception as exc:  # not GeneratorExit: gRPC closing us is no failure of ours
            self.failure = exc  # gRPC cancels the call; the caller gets this instead
            raise

    async def async_messages(self) -> AsyncIterator[pb.UploadCheckpointRequest]:
        """The whole request stream for the asyncio client; file reads run in a thread."""
        yield self.first_message()
        try:
            if self.async_source is not None:
                async for piece in self.async_source:
                    for chunk in _split(piece, self.chunk_size):
                        yield self.chunk_message(chunk)
            elif self.reads_files:
                chunks = self.chunks()
                while (block := await asyncio.to_thread(_next_or_none, chunks)) is not None:
                    yield self.chunk_message(block)
            else:
                for chunk in self.chunks():
                    yield self.chunk_message(chunk)
        except Exception as exc:
            self.failure = exc
            raise

    def prepared(
        self, requests: Any, timeout: float | None, metadata: MetadataLike
    ) -> Prepared[Checkpoint]:
        """The call, with ``requests`` (a sync or async iterator of messages) as its request."""
        return Prepared(requests, self.verify, self.request_id, timeout, metadata)

    def verify(self, response: pb.UploadCheckpointResponse) -> Checkpoint:
        """The stored manifest, once it matches what was sent."""
        checkpoint = Checkpoint.from_proto(response.checkpoint)
        sent = self.digest.hexdigest()
        if checkpoint.sha256 and checkpoint.sha256 != sent:
            raise DataLoss(
                f"checkpoint {checkpoint.checkpoint_id} was stored with sha256 "
                f"{checkpoint.sha256}, but the bytes sent hash to {sent}; "
                "delete it and upload again",
                request_id=self.request_id,
            )
        return checkpoint


def _next_or_none(chunks: Iterator[bytes | memoryview]) -> bytes | memoryview | None:
    return next(chunks, None)


def _hash(file: IO[bytes], size: int) -> tuple[str, int]:
    digest, total = hashlib.sha256(), 0
    for block in iter(lambda: file.read(size), b""):
        digest.update(block)
        total += len(block)
    return digest.hexdigest(), total


def _seekable(file: IO[bytes]) -> bool:
    try:
        return bool(file.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _split(chunk: bytes, size: int) -> Iterator[bytes | memoryview]:
    if not isinstance(chunk, bytes | bytearray | memoryview):
        raise UsageError(f"upload chunks must be bytes (got {type(chunk).__name__})")
    if len(chunk) <= size:
        if chunk:
            yield chunk
        return
    view = memoryview(chunk).cast("B")
    for start in range(0, len(view), size):
        yield view[start : start + size]


# -- downloads ---------------------------------------------------------------------------


def download_call(
    checkpoint_id: str, timeout: float | None, metadata: MetadataLike
) -> Prepared[Checkpoint | bytes | None]:
    return Prepared(
        pb.DownloadCheckpointRequest(checkpoint_id=checkpoint_id),
        _download_item,
        None,
        timeout,
        metadata,
    )


def _download_item(response: pb.DownloadCheckpointResponse) -> Checkpoint | bytes | None:
    if response.HasField("checkpoint"):
        return Checkpoint.from_proto(response.checkpoint)
    return response.chunk


class Download:
    """Where one download's bytes go until they are verified, then where they end up."""

    def __init__(self, checkpoint_id: str, dest: Destination, progress: Progress | None) -> None:
        self.checkpoint_id = checkpoint_id
        self.progress = progress
        self.checkpoint: Checkpoint | None = None
        self.received = 0
        self.digest = hashlib.sha256()
        self._path: Path | None = None
        self._target: IO[bytes] | None = None
        self._buffer: IO[bytes]
        self._temp: Path | None = None
        if dest is None:
            self._buffer = io.BytesIO()
        elif isinstance(dest, str | os.PathLike):
            self._path = Path(dest)
            handle, name = tempfile.mkstemp(
                dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".part"
            )
            self._temp = Path(name)
            self._buffer = os.fdopen(handle, "wb")
        elif hasattr(dest, "write"):
            self._target = dest
            self._buffer = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        else:
            raise UsageError(
                f"download destination must be a path or a binary file (got {type(dest).__name__})"
            )

    @property
    def writes_files(self) -> bool:
        return self._target is not None or self._path is not None

    def feed(self, item: Checkpoint | bytes) -> None:
        """Take the next stream message: the manifest first, then chunks."""
        if isinstance(item, Checkpoint):
            self.checkpoint = item
            return
        self._buffer.write(item)
        self.digest.update(item)
        self.received += len(item)
        if self.progress is not None:
            total = self.checkpoint.size_bytes if self.checkpoint else None
            self.progress(self.received, total)

    def finish(self) -> bytes | Checkpoint:
        """Verify, then deliver: the bytes (no destination) or the manifest."""
        checkpoint = self.checkpoint
        if checkpoint is None:
            raise DataLoss(f"the download of {self.checkpoint_id} ended without its manifest")
        if self.received != checkpoint.size_bytes:
            raise DataLoss(
                f"checkpoint {checkpoint.checkpoint_id}: received {self.received} bytes, "
                f"the manifest says {checkpoint.size_bytes}"
            )
        got = self.digest.hexdigest()
        if checkpoint.sha256 and got != checkpoint.sha256:
            raise DataLoss(
                f"checkpoint {checkpoint.checkpoint_id}: received bytes hash to {got}, "
                f"the manifest says {checkpoint.sha256}"
            )
        if isinstance(self._buffer, io.BytesIO):
            return self._buffer.getvalue()
        if self._path is not None and self._temp is not None:
            self._buffer.flush()
            os.fsync(self._buffer.fileno())
            self._buffer.close()
            os.replace(self._temp, self._path)
            self._temp = None
        elif self._target is not None:
            self._buffer.seek(0)
            for block in iter(lambda: self._buffer.read(MiB), b""):
                self._target.write(block)
            self._buffer.close()
        return checkpoint

    def abort(self) -> None:
        """Drop what was received; a destination path is left untouched."""
        self._buffer.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


def open_download(checkpoint_id: str, dest: Destination, progress: Progress | None) -> Download:
    """A download sink; UsageError for a destination that cannot be written."""
    try:
        return Download(checkpoint_id, dest, progress)
    except OSError as exc:
        raise UsageError(f"cannot write next to {str(dest)!r}: {exc.strerror}") from exc
