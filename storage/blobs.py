"""Checkpoint payloads as immutable blobs on an fsspec backend.

Selected by URL: ``file:///dir`` (local, parent folders made on demand), ``s3://bucket/prefix``
(s3fs; storage options such as ``endpoint_url`` from the ``blob_options`` setting, credentials
from the usual AWS environment) and ``memory://name`` (tests).

Layout under the root::

    <root>/<namespace>/<agent_id>/<checkpoint_id>   committed, immutable blobs
    <root>/.tmp/<32 hex digits>                     uploads in progress (or abandoned)

Keys are built only from validated ids, and every key is checked again here before any
filesystem call: a segment must be a plain name (no ``/``, ``\\``, ``%``, ``..``, no leading
``.`` or ``/``). A blob is streamed to a temporary key while its sha256 is computed, then moved
to its final key; the caller commits the manifest row after that, so a manifest always
names a complete blob. A blob without a manifest (a crash between the two steps, or a
failed manifest write) is an orphan that garbage collection removes after a grace period.

Reads stream and verify the sha256 and size recorded in the manifest as they go; a
mismatch, a missing blob or an undecodable stream raises ``BlobCorrupt``. Backend failures
become ``StorageUnavailable`` (connection errors, S3 errors) or ``StorageFull`` (no space).

Compression (``zstd``) is applied on write when configured and recorded per blob, so
changing the setting never breaks reading older blobs; sizes and hashes are always of the
uncompressed payload the client sent.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

import fsspec
import zstandard

from stateward.storage.errors import StorageError, StorageFull, StorageUnavailable

log = logging.getLogger(__name__)

SCHEMES = ("file", "s3", "memory")
COMPRESSIONS = ("none", "zstd")
READ_CHUNK = 1 << 20
WRITEBACK = 8 << 20
"""On ``file://``, a writer has the kernel start writing back every this many bytes."""
TMP_DIR = ".tmp"
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_TMP_NAME = re.compile(r"[0-9a-f]{32}")


class BlobError(StorageError):
    """Base of the blob store's own errors."""


class UnsafeBlobKey(BlobError, ValueError):
    """A key or id that could escape the blob root; refused before touching the backend."""


class BlobCorrupt(BlobError):
    """Stored bytes do not match their manifest (hash, size or encoding)."""


class BlobMissing(BlobCorrupt):
    """The manifest names a blob that is not there."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What a committed blob holds: the payload's size and hash, and how it is stored."""

    key: str
    size: int
    stored_size: int
    sha256: str
    compression: str


@dataclass(frozen=True, slots=True)
class ListedBlob:
    """A blob found under the root: its relative key, stored size and modification time."""

    key: str
    stored_size: int
    modified_us: int | None  # None when the backend does not say

    @property
    def temporary(self) -> bool:
        return self.key.startswith(TMP_DIR + "/")


# -- keys ----------------------------------------------------------------------------------


def _check_segment(kind: str, value: str, pattern: re.Pattern[str]) -> None:
    # The patterns already exclude these; the explicit test keeps the guarantee obvious and
    # independent of any future loosening of the id rules.
    if (
        not value
        or value in (".", "..")
        or any(bad in value for bad in ("/", "\\", "%", "\x00"))
        or not pattern.fullmatch(value)
    ):
        raise UnsafeBlobKey(f"{kind} {value[:140]!r} cannot be part of a blob key")


def blob_key(namespace: str, agent_id: str, checkpoint_id: str) -> str:
    """The relative key of a checkpoint's blob, from validated ids only."""
    _check_segment("namespace", namespace, _NAMESPACE)
    _check_segment("agent id", agent_id, _ID)
    _check_segment("checkpoint id", checkpoint_id, _ID)
    return f"{namespace}/{agent_id}/{checkpoint_id}"


def check_key(key: str) -> str:
    """Re-validate a relative key (from the database or a listing) before using it."""
    parts = key.split("/")
    if len(parts) == 2 and parts[0] == TMP_DIR:
        _check_segment("temporary name", parts[1], _TMP_NAME)
    elif len(parts) == 3:
        blob_key(*parts)
    else:
        raise UnsafeBlobKey(f"{key[:140]!r} is not a blob key")
    return key


# -- errors --------------------------------------------------------------------------------

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@functools.cache
def _remote_errors() -> tuple[type[BaseException], ...]:
    """The client libraries' own error types, imported only once an error needs them."""
    kinds: list[type[BaseException]] = []
    try:
        from botocore import exceptions as boto  # type: ignore[import-untyped]

        kinds += [boto.BotoCoreError, boto.ClientError]
    except ImportError:  # pragma: no cover - s3fs not installed
        pass
    try:
        import aiohttp

        kinds.append(aiohttp.ClientError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


def translate(error: BaseException, action: str) -> BaseException:
    """Map a backend failure to a storage error; programming errors pass through."""
    if isinstance(error, StorageError):
        return error
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return StorageFull(f"the blob store has no space left to {action}")
    if isinstance(error, (OSError, ConnectionError, TimeoutError, *_remote_errors())):
        log.warning("blob store failed to %s: %r", action, error)
        return StorageUnavailable(
            f"the blob store failed to {action} ({type(error).__name__}); retry later"
        )
    return error


def _modified_us(info: dict[str, Any]) -> int | None:
    for name in ("mtime", "LastModified", "created", "modified"):
        value = info.get(name)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1_000_000)
        if isinstance(value, (int, float)):
            return int(value * 1_000_000)
    return None


# -- writing -------------------------------------------------------------------------------


class _Counting:
    """A write-only file wrapper that counts the bytes reaching the backend."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.written = 0

    def write(self, data: bytes | memoryview) -> int:
        self.raw.write(data)
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class BlobWriter:
    """Streams one payload to a temporary key; ``commit`` moves it under its final key.

    Memory stays bounded: each ``write`` goes straight to the backend's file object (s3fs
    sends multipart pieces of its block size). Not thread-safe; one upload per writer.
    Always end with ``commit`` or ``abort``.
    """

    def __init__(self, store: BlobStore, compression: str) -> None:
        self.store = store
        self.compression = compression
        self.tmp_key = f"{TMP_DIR}/{uuid.uuid4().hex}"
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: Any = None
        self._counting: _Counting | None = None
        self._sink: Any = None
        self._closed = False
        self._done = False
        self._local = store.protocol == "file"
        self._written_back = 0  # bytes of the file whose writeback has been started
        store._active.add(self.tmp_key)
        try:
            self._file = store.fs.open(store.path(self.tmp_key), "wb")
            self._counting = _Counting(self._file)
            if compression == "zstd":
                counting: Any = self._counting  # file-like enough: zstd only calls write()
                self._sink = zstandard.ZstdCompressor(level=3).stream_writer(
                    counting, closefd=False
                )
            else:
                self._sink = self._counting
        except BaseException as error:
            self.abort()
            raise translate(error, "start a blob") from error

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, chunk: bytes | memoryview) -> None:
        try:
            self._sink.write(chunk)
            if self._local:
                self._write_back()
        except BaseException as error:
            raise translate(error, "write a blob") from error
        self._hash.update(chunk)
        self.size += len(chunk)

    def _write_back(self) -> None:
        """Every ``WRITEBACK`` bytes, start writing them to disk without waiting, so the
        final fsync has little left to do: ``posix_fadvise(DONTNEED)`` starts the writeback
        of a range's dirty pages (PostgreSQL's fallback for ``sync_file_range``)."""
        assert self._counting is not None
        end = self._counting.written
        if end - self._written_back < WRITEBACK:
            return
        self._file.flush()
        try:
            os.posix_fadvise(
                self._file.fileno(),
                self._written_back,
                end - self._written_back,
                os.POSIX_FADV_DONTNEED,
            )
        except OSError:  # only a hint: close() fsyncs regardless
            pass
        self._written_back = end

    def close(self) -> None:
        """Finish the temporary blob (flush compression, make it durable)."""
        if self._closed:
            return
        try:
            if self._sink is not self._counting:
                self._sink.close()  # ends the zstd frame; the file stays open (closefd=False)
            if self.store.protocol == "file":
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            self._closed = True
        except BaseException as error:
            raise translate(error, "finish a blob") from error

    def commit(self, key: str) -> BlobInfo:
        """Make the blob visible under ``key`` (which must not exist yet)."""
        check_key(key)
        self.close()
        store = self.store
        try:
            final = store.path(key)
            if store.fs.exists(final):
                raise BlobError(f"blob {key!r} already exists; blobs are immutable")
            store.fs.mv(store.path(self.tmp_key), final)
            if store.protocol == "file":
                _fsync_dir(os.path.dirname(final))
        except BaseException as error:
            self.abort()
            raise translate(error, "commit a blob") from error
        self._done = True
        store._active.discard(self.tmp_key)
        assert self._counting is not None
        return BlobInfo(key, self.size, self._counting.written, self.sha256, self.compression)

    def abort(self) -> None:
        """Drop the temporary blob (best effort: GC collects what this misses)."""
        if self._done:
            return
        self._done = True
        try:
            if self._file is not None and not self._closed:
                if self.store.protocol == "s3":
                    self._file.discard()  # abort the multipart upload; closing would complete it
                    self._file.closed = True  # so its __del__ does not try to finish it
                else:
                    self._file.close()
        except Exception:
            pass
        try:
            self.store.fs.rm_file(self.store.path(self.tmp_key))
        except FileNotFoundError:
            pass
        except Exception as error:
            log.warning("could not remove temporary blob %s: %r", self.tmp_key, error)
        finally:
            self.store._active.discard(self.tmp_key)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the store -----------------------------------------------------------------------------


class BlobStore:
    """Blobs under one fsspec root. Blocking: call it from a thread, not the event loop."""

    def __init__(
        self,
        url: str,
        *,
        compression: str = "none",
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        protocol, _, rest = url.partition("://")
        if protocol not in SCHEMES or not rest:
            raise ValueError(
                f"blob URL {url!r} must start with one of " + ", ".join(f"{s}://" for s in SCHEMES)
            )
        if compression not in COMPRESSIONS:
            raise ValueError(f"blob compression must be one of {', '.join(COMPRESSIONS)}")
        options = dict(storage_options or {})
        if protocol == "file":
            options.setdefault("auto_mkdir", True)
        if protocol == "s3":
            # Other replicas write too: never answer exists/list from a stale listing cache.
            # (fsspec still shares the client between stores with equal options, which
            # spares loading botocore's models again.)
            options.setdefault("use_listings_cache", False)
        self.url = url
        self.protocol = protocol
        self.compression = compression
        self.fs: Any = fsspec.filesystem(protocol, **options)
        self.root = self.fs._strip_protocol(url).rstrip("/")
        if not self.root or ".." in self.root.split("/"):
            raise ValueError(f"blob URL {url!r} does not name a usable root")
        # Keys being written by this process; GC never touches them whatever their age.
        # (set add/discard/in are atomic under the GIL; writers run in worker threads.)
        self._active: set[str] = set()

    def probe(self) -> None:
        """Touch the backend once (does the root exist?). s3fs builds its session on first
        use, so storage options it does not take raise TypeError here, not later."""
        self.fs.exists(self.root)

    def path(self, key: str) -> str:
        """The backend path of a relative key (validated first)."""
        return f"{self.root}/{check_key(key)}"

    # -- write --------------------------------------------------------------------------
    def writer(self) -> BlobWriter:
        return BlobWriter(self, self.compression)

    def put(self, key: str, data: bytes) -> BlobInfo:
        """Store a whole payload under ``key`` (temporary key, then commit)."""
        check_key(key)
        writer = self.writer()
        try:
            for start in range(0, len(data), READ_CHUNK):
                writer.write(data[start : start + READ_CHUNK])
            return writer.commit(key)
        except BaseException:
            writer.abort()
            raise

    # -- read ---------------------------------------------------------------------------
    def read(
        self,
        key: str,
        *,
        sha256: str,
        size: int,
        compression: str,
        stored_size: int | None = None,
        chunk_size: int = READ_CHUNK,
    ) -> Iterator[bytes]:
        """Yield the payload in chunks, verifying it against its manifest.

        The key is checked at once; the backend is touched only when iteration starts. A
        stored size that differs from the manifest fails before the first chunk; the hash
        and length are checked after the last one, so a consumer must treat the bytes as
        valid only when the iterator ends without raising ``BlobCorrupt``.
        """
        path = self.path(key)
        if compression not in COMPRESSIONS:
            raise BlobCorrupt(f"blob {key!r} has an unknown compression {compression!r}")
        return self._stream(key, path, sha256, size, compression, stored_size, chunk_size)

    def _stream(
        self,
        key: str,
        path: str,
        sha256: str,
        size: int,
        compression: str,
        stored_size: int | None,
        chunk_size: int,
    ) -> Iterator[bytes]:
        name = key.rsplit("/", 1)[-1]
        try:
            actual = int(self.fs.size(path))
            handle = self.fs.open(path, "rb")
        except FileNotFoundError:
            raise BlobMissing(f"the blob of checkpoint {name!r} is missing") from None
        except BaseException as error:
            raise translate(error, "open a blob") from error
        digest = hashlib.sha256()
        total = 0
        try:
            if stored_size is not None and actual != stored_size:
                raise BlobCorrupt(
                    f"the blob of checkpoint {name!r} holds {actual} bytes; "
                    f"its manifest says {stored_size}"
                )
            source: Any = handle
            if compression == "zstd":
                source = zstandard.ZstdDecompressor().stream_reader(handle, closefd=False)
            while True:
                try:
                    chunk = source.read(chunk_size)
                except zstandard.ZstdError as error:
                    raise BlobCorrupt(
                        f"the blob of checkpoint {name!r} cannot be decompressed ({error})"
                    ) from None
                except BaseException as error:
                    raise translate(error, "read a blob") from error
                if not chunk:
                    break
                total += len(chunk)
                if total > size:
                    raise BlobCorrupt(
                        f"the blob of checkpoint {name!r} exceeds its manifest's {size} bytes"
                    )
                digest.update(chunk)
                yield chunk
        finally:
            try:
                handle.close()
            except Exception:
                pass
        if total != size:
            raise BlobCorrupt(
                f"the blob of checkpoint {name!r} holds {total} bytes; its manifest says {size}"
            )
        if digest.hexdigest() != sha256:
            raise BlobCorrupt(f"the blob of checkpoint {name!r} does not match its sha256")

    def verify(
        self, key: str, *, sha256: str, size: int, compression: str, stored_size: int | None = None
    ) -> None:
        """Read the whole blob and check it; raises ``BlobCorrupt`` (or an outage) if not OK."""
        for _ in self.read(
            key, sha256=sha256, size=size, compression=compression, stored_size=stored_size
        ):
            pass

    # -- delete and list ----------------------------------------------------------------
    def delete(self, key: str) -> None:
        """Remove a blob; one already gone is fine (object stores cannot tell anyway)."""
        path = self.path(key)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        except BaseException as error:
            raise translate(error, "delete a blob") from error

    def list(self, under: str = "") -> Iterator[ListedBlob]:
        """Every blob-shaped key under the root (or under one namespace, or ``.tmp``);
        anything else found there is left alone."""
        top = self.root
        if under:
            if under != TMP_DIR:
                _check_segment("namespace", under, _NAMESPACE)
            top = f"{self.root}/{under}"
        try:
            found = self.fs.find(top, detail=True)
        except FileNotFoundError:
            return
        except BaseException as error:
            raise translate(error, "list blobs") from error
        prefix = self.root + "/"
        for name, info in found.items():
            name = self.fs._strip_protocol(name)
            if not name.startswith(prefix) or info.get("type") == "directory":
                continue
            key = name[len(prefix) :]
            try:
                check_key(key)
            except UnsafeBlobKey:
                continue
            yield ListedBlob(key, int(info.get("size") or 0), _modified_us(info))

    def is_active(self, key: str) -> bool:
        """Whether this process is writing ``key`` (or holds it until its manifest commits)."""
        return key in self._active

    @contextlib.contextmanager
    def protect(self, key: str) -> Iterator[None]:
        """Keep garbage collection in this process off ``key`` for the duration: from before
        its blob is written until its manifest has committed (or the attempt was given up)."""
        check_key(key)
        self._active.add(key)
        try:
            yield
        finally:
            self._active.discard(key)
