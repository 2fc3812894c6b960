"""The Stateward calls ``StatewardSaver`` makes, blocking and asyncio.

Both stores offer the same operations over a thread's agent and its
checkpoints; the saver decides what to read and write (see
``_langgraph_codec``). Payloads above ``INLINE_LIMIT`` are streamed with
``upload_checkpoint``. Small payloads come back inside a labelled listing
(``include_payloads``: the server stores them inline and verifies them); the
others are downloaded, and every download is verified against its manifest.

The two hot calls, creating a checkpoint and listing manifests, are sent as
prepared requests through the client's ``_send`` (its retries, deadlines and
errors) and read straight from the response messages: the saver needs four
fields of a manifest, not a ``models.Checkpoint``. Concurrent graph threads'
creates and first listing pages are coalesced (``_coalesce``) into
BatchCreateCheckpoints and BatchListCheckpoints calls, where a unary call per
request would cost each about as much as the work it asks for; against a server
without those methods each request goes alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from google.rpc import status_pb2

from stateward.v1 import recovery_pb2 as pb
from stateward.v1.common_pb2 import ItemStatus

from ._coalesce import AsyncCoalescer, Coalescer, Outcome
from ._langgraph_codec import AGENT_LABELS, AGENT_TYPE, Manifest, plain_thread_id
from ._operation import RECOVERY, Prepared, Rpc
from ._options import RetryPolicy
from .aio import AsyncClient
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    StatewardError,
    Unimplemented,
    from_status,
)
from .sync import Client

T = TypeVar("T")

INLINE_LIMIT = 1 << 20
"""Payloads up to this size go in one CreateCheckpoint; larger ones are uploaded in chunks."""
PARALLEL = 8
"""Transfers in flight at once for one operation."""
PAGE_SIZE = 1000
"""Manifests asked for per listing page."""

BATCHED_PAYLOAD = 64 << 10
"""Creates with payloads up to this size are coalesced; bigger ones go alone."""
MAX_BATCH = 64
"""Requests per coalesced call (the server takes up to 100)."""
BATCH_BYTES = 1 << 20
"""Most request bytes in one coalesced create call (the server's limit is 8 MiB by
default); its first request goes whatever it weighs."""
UNBATCHED_FOR = 60.0
"""Seconds a store sends one call per request after a server answered a batch call
UNIMPLEMENTED (a replica older than batch calls, say during an upgrade)."""
ANSWER_FULL = "BATCH_ANSWER_FULL"
"""The reason of a batch item the server had no room left to answer."""

CREATE = Rpc(RECOVERY, "CreateCheckpoint")
LIST = Rpc(RECOVERY, "ListCheckpoints")
BATCH_CREATE = Rpc(RECOVERY, "BatchCreateCheckpoints")
BATCH_LIST = Rpc(RECOVERY, "BatchListCheckpoints")


def _creating(agent_id: str, payload: bytes, labels: Mapping[str, str]) -> Prepared[None]:
    """CreateCheckpoint without a request_id. The saver's records are idempotent by
    content, like the upserts of LangGraph's own savers: a retry whose first attempt did
    commit stores a second, identical record, which the codec reads as one (the newest copy
    of a checkpoint; writes merged by task and index). Without a request_id the server
    stores no answer to replay, so each put is two statements lighter."""
    request = pb.CreateCheckpointRequest(agent_id=agent_id, payload=payload, labels=labels)
    return Prepared(request, _ignore)


def _ignore(response: Any) -> None:
    return None


def _listing(
    agent_id: str, labels: Mapping[str, str] | None, payloads: bool
) -> Prepared[tuple[list[Manifest], str]]:
    request = pb.ListCheckpointsRequest(
        agent_id=agent_id, page_size=PAGE_SIZE, labels=labels, include_payloads=payloads
    )
    return Prepared(request, _page)


def _page(response: pb.ListCheckpointsResponse) -> tuple[list[Manifest], str]:
    found = [
        Manifest(
            m.checkpoint_id,
            m.agent_id,
            dict(m.labels),
            m.payload if m.HasField("payload") else None,
        )
        for m in response.checkpoints
    ]
    return found, response.next_page_token


def _item_error(status: ItemStatus) -> StatewardError:
    return from_status(status_pb2.Status.FromString(status.SerializeToString()))


def _created(response: pb.BatchCreateCheckpointsResponse) -> list[Outcome[None]]:
    return [_item_error(r.error) if r.HasField("error") else None for r in response.results]


def _pages(
    response: pb.BatchListCheckpointsResponse,
) -> list[Outcome[tuple[list[Manifest], str]]]:
    return [
        _item_error(r.error) if r.HasField("error") else _page(r.response) for r in response.results
    ]


def _weight(request: pb.CreateCheckpointRequest) -> int:
    return request.ByteSize()


class _Batching:
    """Whether batch calls are in use, and which failed items go again alone."""

    def __init__(self, retry: RetryPolicy) -> None:
        self.retry = retry
        self.off_until = 0.0

    @property
    def on(self) -> bool:
        return time.monotonic() >= self.off_until

    def turn_off(self) -> None:
        self.off_until = time.monotonic() + UNBATCHED_FOR

    def again(self, outcome: Outcome[Any]) -> bool:
        """A failed item goes again alone when the batch's answer had no room for it, or
        when its own call would be retried (the alone call retries it then)."""
        if not isinstance(outcome, StatewardError):
            return False
        code = outcome.code
        return outcome.reason == ANSWER_FULL or (
            code is not None and self.retry.should_retry(code, 1)
        )


def _batch_create(requests: list[pb.CreateCheckpointRequest]) -> Prepared[list[Outcome[None]]]:
    return Prepared(pb.BatchCreateCheckpointsRequest(requests=requests), _created)


def _batch_list(
    requests: list[pb.ListCheckpointsRequest],
) -> Prepared[list[Outcome[tuple[list[Manifest], str]]]]:
    return Prepared(pb.BatchListCheckpointsRequest(requests=requests), _pages)


class SyncStore:
    """Blocking calls; transfers of one operation run in a small thread pool."""

    def __init__(self, client: Client, known_agents: set[str]) -> None:
        self.client = client
        self.known_agents = known_agents
        self.thread_ids: dict[str, str] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._batching = _Batching(client.options.retry)
        self._creates = Coalescer(
            self._send_creates, MAX_BATCH, weight=_weight, max_weight=BATCH_BYTES
        )
        self._lists = Coalescer(self._send_lists, MAX_BATCH)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _map(self, fn: Callable[[str], Any], items: Sequence[str]) -> list[Any]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="stateward-saver")
        return list(self._pool.map(fn, items))

    def manifests(
        self, agent_id: str, labels: Mapping[str, str] | None = None, *, payloads: bool = False
    ) -> list[Manifest]:
        """Every checkpoint manifest of ``agent_id`` ("" for the namespace) carrying
        ``labels``, newest first; with ``payloads``, inline payloads too."""
        call = _listing(agent_id, labels, payloads)
        if self._batching.on:
            found, token = self._lists.call(call.request)
        else:
            found, token = self.client._send(LIST, call)
        while token:
            call = call.with_page_token(token)
            page, token = self.client._send(LIST, call)
            found += page
        return found

    def _send_creates(self, requests: list[pb.CreateCheckpointRequest]) -> list[Outcome[None]]:
        return self._send_batch(BATCH_CREATE, _batch_create(requests), CREATE, _ignore)

    def _send_lists(
        self, requests: list[pb.ListCheckpointsRequest]
    ) -> list[Outcome[tuple[list[Manifest], str]]]:
        return self._send_batch(BATCH_LIST, _batch_list(requests), LIST, _page)

    def _send_batch(
        self,
        batch_rpc: Rpc,
        batch: Prepared[list[Outcome[T]]],
        rpc: Rpc,
        convert: Callable[[Any], T],
    ) -> list[Outcome[T]]:
        requests = list(batch.request.requests)
        outcomes: list[Outcome[T]]
        try:
            outcomes = self.client._send(batch_rpc, batch)
        except Unimplemented:
            self._batching.turn_off()  # an older server: one call per request for a while
            outcomes = [Unimplemented("not sent")] * len(requests)
        return [
            self._alone(rpc, Prepared(r, convert))
            if isinstance(o, Unimplemented) or self._batching.again(o)
            else o
            for r, o in zip(requests, outcomes, strict=True)
        ]

    def _alone(self, rpc: Rpc, call: Prepared[T]) -> Outcome[T]:
        try:
            return self.client._send(rpc, call)
        except StatewardError as error:
            return error

    def fetch(self, manifest_ids: Sequence[str]) -> list[bytes | None]:
        """The payloads, None for a manifest deleted meanwhile."""
        return self._map(self._download, manifest_ids)

    def payloads(self, manifests: Sequence[Manifest]) -> list[bytes | None]:
        """The payloads of ``manifests``: those listed with them, the others downloaded."""
        missing = [m.checkpoint_id for m in manifests if m.payload is None]
        fetched = iter(self.fetch(missing) if missing else ())
        return [m.payload if m.payload is not None else next(fetched) for m in manifests]

    def _download(self, manifest_id: str) -> bytes | None:
        try:
            return self.client.download_checkpoint(manifest_id, timeout=self.client.options.timeout)
        except NotFound:
            return None

    def store(
        self, agent_id: str, thread_id: str, payload: bytes, labels: Mapping[str, str]
    ) -> None:
        """A new checkpoint of the thread's agent, creating the agent when needed."""
        self._ensure_agent(agent_id, thread_id)
        try:
            self._create(agent_id, payload, labels)
        except NotFound:  # the thread was deleted meanwhile: start it again
            self.known_agents.discard(agent_id)
            self._ensure_agent(agent_id, thread_id)
            self._create(agent_id, payload, labels)

    def _ensure_agent(self, agent_id: str, thread_id: str) -> None:
        if agent_id in self.known_agents:
            return
        try:
            self.client.create_agent(
                agent_id, AGENT_TYPE, config={"thread_id": thread_id}, labels=AGENT_LABELS
            )
        except AlreadyExists:
            pass
        self.known_agents.add(agent_id)

    def _create(self, agent_id: str, payload: bytes, labels: Mapping[str, str]) -> None:
        if len(payload) <= BATCHED_PAYLOAD and self._batching.on:
            self._creates.call(_creating(agent_id, payload, labels).request)
        elif len(payload) <= INLINE_LIMIT:
            self.client._send(CREATE, _creating(agent_id, payload, labels))
        else:
            self.client.upload_checkpoint(
                agent_id, payload, labels=labels, timeout=self.client.options.timeout
            )

    def delete(self, manifest_ids: Sequence[str]) -> None:
        self._map(self._delete_one, manifest_ids)

    def _delete_one(self, manifest_id: str) -> None:
        try:
            self.client.delete_checkpoint(manifest_id)
        except NotFound:
            pass

    def drop_thread(self, agent_id: str) -> None:
        """Delete the thread's agent with all its checkpoints (terminate, then delete)."""
        self.known_agents.discard(agent_id)
        try:
            self.client.terminate_agent(agent_id, reason="LangGraph thread deleted")
        except NotFound:
            return
        except FailedPrecondition:
            pass  # already terminated by an earlier, interrupted delete
        try:
            self.client.delete_agent(agent_id)
        except NotFound:
            pass

    def thread_id(self, agent_id: str) -> str | None:
        """The thread an agent stores (its config says, when the id is hashed); None when
        the agent is gone."""
        plain = plain_thread_id(agent_id)
        if plain is not None:
            return plain
        if agent_id not in self.thread_ids:
            try:
                config = self.client.get_agent(agent_id).config
            except NotFound:
                return None
            self.thread_ids[agent_id] = str(config.get("thread_id", ""))
        return self.thread_ids[agent_id]


class AsyncStore:
    """The same operations with ``grpc.aio``; use it from the loop that made it."""

    def __init__(self, client: AsyncClient, known_agents: set[str]) -> None:
        self.client = client
        self.known_agents = known_agents
        self.thread_ids: dict[str, str] = {}
        self._limit = asyncio.Semaphore(PARALLEL)
        self._batching = _Batching(client.options.retry)
        self._creates = AsyncCoalescer(
            self._send_creates, MAX_BATCH, weight=_weight, max_weight=BATCH_BYTES
        )
        self._lists = AsyncCoalescer(self._send_lists, MAX_BATCH)

    async def close(self) -> None:
        await self.client.close()

    async def _map(self, fn: Callable[[str], Any], items: Sequence[str]) -> list[Any]:
        async def bounded(item: str) -> Any:
            async with self._limit:
                return await fn(item)

        return list(await asyncio.gather(*(bounded(item) for item in items)))

    async def manifests(
        self, agent_id: str, labels: Mapping[str, str] | None = None, *, payloads: bool = False
    ) -> list[Manifest]:
        call = _listing(agent_id, labels, payloads)
        if self._batching.on:
            found, token = await self._lists.call(call.request)
        else:
            found, token = await self.client._send(LIST, call)
        while token:
            call = call.with_page_token(token)
            page, token = await self.client._send(LIST, call)
            found += page
        return found

    async def _send_creates(
        self, requests: list[pb.CreateCheckpointRequest]
    ) -> list[Outcome[None]]:
        return await self._send_batch(BATCH_CREATE, _batch_create(requests), CREATE, _ignore)

    async def _send_lists(
        self, requests: list[pb.ListCheckpointsRequest]
    ) -> list[Outcome[tuple[list[Manifest], str]]]:
        return await self._send_batch(BATCH_LIST, _batch_list(requests), LIST, _page)

    async def _send_batch(
        self,
        batch_rpc: Rpc,
        batch: Prepared[list[Outcome[T]]],
        rpc: Rpc,
        convert: Callable[[Any], T],
    ) -> list[Outcome[T]]:
        requests = list(batch.request.requests)
        outcomes: list[Outcome[T]]
        try:
            outcomes = await self.client._send(batch_rpc, batch)
        except Unimplemented:
            self._batching.turn_off()
            outcomes = [Unimplemented("not sent")] * len(requests)
        again = [isinstance(o, Unimplemented) or self._batching.again(o) for o in outcomes]
        resent = iter(
            await asyncio.gather(
                *(
                    self._alone(rpc, Prepared(r, convert))
                    for r, go in zip(requests, again, strict=True)
                    if go
                )
            )
        )
        return [next(resent) if go else o for o, go in zip(outcomes, again, strict=True)]

    async def _alone(self, rpc: Rpc, call: Prepared[T]) -> Outcome[T]:
        try:
            return await self.client._send(rpc, call)
        except StatewardError as error:
            return error

    async def fetch(self, manifest_ids: Sequence[str]) -> list[bytes | None]:
        return await self._map(self._download, manifest_ids)

    async def payloads(self, manifests: Sequence[Manifest]) -> list[bytes | None]:
        missing = [m.checkpoint_id for m in manifests if m.payload is None]
        fetched = iter(await self.fetch(missing) if missing else ())
        return [m.payload if m.payload is not None else next(fetched) for m in manifests]

    async def _download(self, manifest_id: str) -> bytes | None:
        try:
            return await self.client.download_checkpoint(
                manifest_id, timeout=self.client.options.timeout
            )
        except NotFound:
            return None

    async def store(
        self, agent_id: str, thread_id: str, payload: bytes, labels: Mapping[str, str]
    ) -> None:
        await self._ensure_agent(agent_id, thread_id)
        try:
            await self._create(agent_id, payload, labels)
        except NotFound:
            self.known_agents.discard(agent_id)
            await self._ensure_agent(agent_id, thread_id)
            await self._create(agent_id, payload, labels)

    async def _ensure_agent(self, agent_id: str, thread_id: str) -> None:
        if agent_id in self.known_agents:
            return
        try:
            await self.client.create_agent(
                agent_id, AGENT_TYPE, config={"thread_id": thread_id}, labels=AGENT_LABELS
            )
        except AlreadyExists:
            pass
        self.known_agents.add(agent_id)

    async def _create(self, agent_id: str, payload: bytes, labels: Mapping[str, str]) -> None:
        if len(payload) <= BATCHED_PAYLOAD and self._batching.on:
            await self._creates.call(_creating(agent_id, payload, labels).request)
        elif len(payload) <= INLINE_LIMIT:
            await self.client._send(CREATE, _creating(agent_id, payload, labels))
        else:
            await self.client.upload_checkpoint(
                agent_id, payload, labels=labels, timeout=self.client.options.timeout
            )

    async def delete(self, manifest_ids: Sequence[str]) -> None:
        await self._map(self._delete_one, manifest_ids)

    async def _delete_one(self, manifest_id: str) -> None:
        try:
            await self.client.delete_checkpoint(manifest_id)
        except NotFound:
            pass

    async def drop_thread(self, agent_id: str) -> None:
        self.known_agents.discard(agent_id)
        try:
            await self.client.terminate_agent(agent_id, reason="LangGraph thread deleted")
        except NotFound:
            return
        except FailedPrecondition:
            pass
        try:
            await self.client.delete_agent(agent_id)
        except NotFound:
            pass

    async def thread_id(self, agent_id: str) -> str | None:
        plain = plain_thread_id(agent_id)
        if plain is not None:
            return plain
        if agent_id not in self.thread_ids:
            try:
                config = (await self.client.get_agent(agent_id)).config
            except NotFound:
                return None
            self.thread_ids[agent_id] = str(config.get("thread_id", ""))
        return self.thread_ids[agent_id]
