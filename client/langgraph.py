"""A LangGraph checkpointer that keeps threads in Stateward: ``StatewardSaver``.

::

    from langgraph.graph import StateGraph
    from stateward.client.langgraph import StatewardSaver

    with StatewardSaver("127.0.0.1:50051") as saver:
        graph = builder.compile(checkpointer=saver)
        graph.invoke(inputs, {"configurable": {"thread_id": "t-1"}})

Needs the ``langgraph`` extra (``pip install 'stateward[langgraph]'``). Sync
methods use a blocking ``Client``; the ``a*`` methods an ``AsyncClient`` made
for the running event loop. How threads, checkpoints and pending writes map
onto Stateward agents and checkpoints is described in ``_langgraph_codec``
and docs/notes/ecosystem.md.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

try:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        get_checkpoint_id,
        get_serializable_checkpoint_metadata,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "stateward.client.langgraph needs LangGraph: pip install 'stateward[langgraph]'"
    ) from missing

from . import _langgraph_codec as codec
from ._langgraph_codec import Manifest
from ._langgraph_store import AsyncStore, SyncStore
from ._options import DEFAULT_TARGET
from .aio import AsyncClient
from .sync import Client

__all__ = ["StatewardSaver"]

LIST_BATCH = 16
"""Checkpoints fetched together while listing."""
STRATEGIES = ("keep_latest", "delete")


@dataclass(frozen=True, slots=True)
class _Wanted:
    """A checkpoint to return, with its pending writes and whether it surely matches."""

    entry: codec.Entry
    writes: list[codec.Entry]
    sure: bool

    def ids(self) -> list[str]:
        return [self.entry.manifest_id, *(w.manifest_id for w in self.writes)]


class StatewardSaver(BaseCheckpointSaver[str]):
    """LangGraph's ``BaseCheckpointSaver`` over a Stateward server, sync and async.

    Each thread is an agent (``lg.<thread_id>``); each checkpoint and each
    ``put_writes`` call is a Stateward checkpoint of that agent.

    ``client`` is a ``Client`` (shared: this saver does not close it) or a
    target such as ``"127.0.0.1:50051"`` (connected in ``namespace`` and
    closed by ``close()``).
    """

    def __init__(
        self,
        client: Client | str = DEFAULT_TARGET,
        *,
        namespace: str = "default",
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._owns_client = isinstance(client, str)
        self.client = (
            Client.connect(client, namespace=namespace) if isinstance(client, str) else client
        )
        self._known_agents: set[str] = set()
        self._sync = SyncStore(self.client, self._known_agents)
        self._async: tuple[asyncio.AbstractEventLoop, AsyncStore] | None = None

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Release the transfer threads and, if this saver opened it, the client."""
        self._sync.close()
        if self._owns_client:
            self.client.close()

    async def aclose(self) -> None:
        """``close()``, plus the asyncio channel of the running loop."""
        if self._async is not None and self._async[0] is asyncio.get_running_loop():
            await self._async[1].close()
        self._async = None
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _astore(self) -> AsyncStore:
        """The asyncio store of the running loop (a grpc.aio channel serves one loop)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            self._async = (loop, AsyncStore(AsyncClient(self.client.options), self._known_agents))
        return self._async[1]

    # -- shared, no I/O ----------------------------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Channel versions as LangGraph's Postgres and in-memory savers make them: a
        zero-padded counter (so versions sort as strings) and a random fraction."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    def _encode_checkpoint(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> tuple[str, str, bytes, dict[str, str], RunnableConfig]:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        checkpoint_ns = conf.get("checkpoint_ns", "") or ""
        parent_id = conf.get("checkpoint_id")
        stored_metadata = get_serializable_checkpoint_metadata(config, metadata)
        payload = codec.pack_checkpoint(
            checkpoint_ns,
            checkpoint["id"],
            parent_id,
            self.serde.dumps_typed(checkpoint),
            self.serde.dumps_typed(stored_metadata),
        )
        labels = codec.checkpoint_labels(
            checkpoint_ns, checkpoint["id"], parent_id, stored_metadata
        )
        result: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }
        return thread_id, codec.thread_agent_id(thread_id), payload, labels, result

    def _encode_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> tuple[str, str, bytes, dict[str, str]]:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        checkpoint_ns = conf.get("checkpoint_ns", "") or ""
        checkpoint_id = conf["checkpoint_id"]
        typed = [
            (WRITES_IDX_MAP.get(channel, idx), channel, self.serde.dumps_typed(value))
            for idx, (channel, value) in enumerate(writes)
        ]
        payload = codec.pack_writes(checkpoint_ns, checkpoint_id, task_id, task_path, typed)
        labels = codec.writes_labels(checkpoint_ns, checkpoint_id, task_id)
        return thread_id, codec.thread_agent_id(thread_id), payload, labels

    @staticmethod
    def _target(config: RunnableConfig) -> tuple[str, str | None]:
        """The namespace and checkpoint id ``get_tuple`` means, as label values; the id is
        None for "the newest in the namespace"."""
        conf = config["configurable"]
        ns = codec.label_value(conf.get("checkpoint_ns", "") or "")
        checkpoint_id = get_checkpoint_id(config)
        return ns, codec.label_value(checkpoint_id) if checkpoint_id else None

    @staticmethod
    def _newest_filter(ns: str) -> dict[str, str]:
        return {codec.KIND: codec.CHECKPOINT, codec.NS: ns}

    @staticmethod
    def _newest(listed: list[Manifest], ns: str) -> str | None:
        """The greatest checkpoint id among ``listed`` (LangGraph's "latest")."""
        for entry in codec.checkpoints(codec.entries(listed)):
            if entry.ns == ns:
                return entry.checkpoint_id
        return None

    @staticmethod
    def _pick(listed: list[Manifest], ns: str, checkpoint_id: str) -> list[Manifest] | None:
        """From the manifests labelled with ``checkpoint_id``: the checkpoint's (its newest
        stored copy), then its writes, oldest first; None when it is not there."""
        found = codec.entries(listed)
        for entry in codec.checkpoints(found):
            if entry.ns == ns and entry.checkpoint_id == checkpoint_id:
                by_id = {m.checkpoint_id: m for m in listed}
                writes = codec.writes_of(found, entry.key)
                return [by_id[entry.manifest_id], *(by_id[w.manifest_id] for w in writes)]
        return None

    @staticmethod
    def _plan_list(
        found: list[codec.Entry],
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
    ) -> list[_Wanted]:
        """The checkpoints ``list`` may return, newest first; labels settle what they can."""
        conf = config["configurable"] if config else {}
        ns = conf.get("checkpoint_ns")
        only_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        plan = []
        for entry in codec.checkpoints(found):
            if ns is not None and entry.ns != codec.label_value(ns):
                continue
            if only_id and entry.checkpoint_id != codec.label_value(only_id):
                continue
            if before_id and entry.checkpoint_id >= codec.label_value(before_id):
                continue
            verdict = codec.filter_verdict(entry.labels, filter) if filter else True
            if verdict is False:
                continue
            plan.append(_Wanted(entry, codec.writes_of(found, entry.key), verdict is True))
        return plan

    def _build(
        self, thread_id: str, payload: bytes, write_payloads: Sequence[bytes | None]
    ) -> CheckpointTuple:
        stored = codec.unpack_checkpoint(payload)
        writes = codec.merge_writes(codec.unpack_writes(p) for p in write_payloads if p is not None)

        def config_for(checkpoint_id: str) -> RunnableConfig:
            return {
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": stored.checkpoint_ns,
                    "checkpoint_id": checkpoint_id,
                }
            }

        return CheckpointTuple(
            config=config_for(stored.checkpoint_id),
            checkpoint=self.serde.loads_typed(stored.checkpoint),
            metadata=self.serde.loads_typed(stored.metadata),
            parent_config=config_for(stored.parent_id) if stored.parent_id else None,
            pending_writes=[
                (w.task_id, w.channel, self.serde.loads_typed(w.value)) for w in writes
            ],
        )

    def _matches(
        self, tup: CheckpointTuple, wanted: _Wanted, filter: dict[str, Any] | None
    ) -> bool:
        return wanted.sure or not filter or codec.metadata_matches(tup.metadata, filter)

    @staticmethod
    def _batches(plan: list[_Wanted], limit: int | None) -> Iterator[list[_Wanted]]:
        """Slices of ``plan`` to fetch together; never more than a known limit needs."""
        start = 0
        while start < len(plan):
            size = LIST_BATCH if limit is None else max(1, min(LIST_BATCH, limit))
            yield plan[start : start + size]
            start += size

    @staticmethod
    def _check_strategy(strategy: str) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown prune strategy {strategy!r}; use one of {STRATEGIES}")

    @staticmethod
    def _latest_per_namespace(found: list[codec.Entry]) -> list[tuple[str, str, str]]:
        latest: dict[str, tuple[str, str, str]] = {}
        for entry in codec.checkpoints(found):  # newest id first
            latest.setdefault(entry.ns, entry.key)
        return list(latest.values())

    @staticmethod
    def _of_runs(found: list[codec.Entry], run_ids: Sequence[str]) -> list[str]:
        """Manifest ids of every checkpoint made by ``run_ids``, with their writes."""
        runs = {codec.label_value(str(run_id)) for run_id in run_ids}
        keys = {
            e.key
            for e in found
            if e.kind == codec.CHECKPOINT and e.labels.get(codec.RUN_ID) in runs
        }
        return [e.manifest_id for e in found if e.key in keys]

    # -- blocking ----------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        # With an id: one listing of the manifests labelled with it (the checkpoint and its
        # writes), small payloads included. Without: first the thread's checkpoint manifests.
        thread_id = str(config["configurable"]["thread_id"])
        agent_id = codec.thread_agent_id(thread_id)
        ns, checkpoint_id = self._target(config)
        if checkpoint_id is None:
            checkpoint_id = self._newest(
                self._sync.manifests(agent_id, self._newest_filter(ns)), ns
            )
            if checkpoint_id is None:
                return None
        listed = self._sync.manifests(agent_id, {codec.ID: checkpoint_id}, payloads=True)
        chosen = self._pick(listed, ns, checkpoint_id)
        if chosen is None:
            return None
        payload, *writes = self._sync.payloads(chosen)
        return None if payload is None else self._build(thread_id, payload, writes)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        config_thread = str(config["configurable"]["thread_id"]) if config else None
        agent_id = codec.thread_agent_id(config_thread) if config_thread is not None else ""
        found = codec.entries(self._sync.manifests(agent_id))
        remaining = limit
        for batch in self._batches(self._plan_list(found, config, filter, before), remaining):
            payloads = iter(self._sync.fetch([i for w in batch for i in w.ids()]))
            for wanted in batch:
                payload = next(payloads)
                writes = [next(payloads) for _ in wanted.writes]
                thread_id = (
                    config_thread
                    if config_thread is not None
                    else self._sync.thread_id(wanted.entry.agent_id)
                )
                if payload is None or thread_id is None:
                    continue
                tup = self._build(thread_id, payload, writes)
                if not self._matches(tup, wanted, filter):
                    continue
                yield tup
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id, agent_id, payload, labels, result = self._encode_checkpoint(
            config, checkpoint, metadata
        )
        self._sync.store(agent_id, thread_id, payload, labels)
        return result

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if not writes:
            return
        thread_id, agent_id, payload, labels = self._encode_writes(
            config, writes, task_id, task_path
        )
        self._sync.store(agent_id, thread_id, payload, labels)

    def delete_thread(self, thread_id: str) -> None:
        self._sync.drop_thread(codec.thread_agent_id(str(thread_id)))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        found = codec.entries(self._sync.manifests(""))
        self._sync.delete(self._of_runs(found, run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        found = codec.entries(self._sync.manifests(codec.thread_agent_id(source_thread_id)))
        oldest_first = list(reversed(found))
        target = codec.thread_agent_id(target_thread_id)
        for start in range(0, len(oldest_first), LIST_BATCH):
            batch = oldest_first[start : start + LIST_BATCH]
            payloads = self._sync.fetch([e.manifest_id for e in batch])
            for entry, payload in zip(batch, payloads, strict=True):
                if payload is not None:  # in creation order: the copy lists the same
                    self._sync.store(target, target_thread_id, payload, entry.labels)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._check_strategy(strategy)
        for thread_id in thread_ids:
            agent_id = codec.thread_agent_id(str(thread_id))
            if strategy == "delete":
                self._sync.drop_thread(agent_id)
                continue
            found = codec.entries(self._sync.manifests(agent_id))
            doomed = codec.superseded(found, self._latest_per_namespace(found))
            self._sync.delete([e.manifest_id for e in doomed])

    # -- asyncio -----------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        store = self._astore()
        thread_id = str(config["configurable"]["thread_id"])
        agent_id = codec.thread_agent_id(thread_id)
        ns, checkpoint_id = self._target(config)
        if checkpoint_id is None:
            checkpoint_id = self._newest(
                await store.manifests(agent_id, self._newest_filter(ns)), ns
            )
            if checkpoint_id is None:
                return None
        listed = await store.manifests(agent_id, {codec.ID: checkpoint_id}, payloads=True)
        chosen = self._pick(listed, ns, checkpoint_id)
        if chosen is None:
            return None
        payload, *writes = await store.payloads(chosen)
        return None if payload is None else self._build(thread_id, payload, writes)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        store = self._astore()
        config_thread = str(config["configurable"]["thread_id"]) if config else None
        agent_id = codec.thread_agent_id(config_thread) if config_thread is not None else ""
        found = codec.entries(await store.manifests(agent_id))
        remaining = limit
        for batch in self._batches(self._plan_list(found, config, filter, before), remaining):
            payloads = iter(await store.fetch([i for w in batch for i in w.ids()]))
            for wanted in batch:
                payload = next(payloads)
                writes = [next(payloads) for _ in wanted.writes]
                thread_id = (
                    config_thread
                    if config_thread is not None
                    else await store.thread_id(wanted.entry.agent_id)
                )
                if payload is None or thread_id is None:
                    continue
                tup = self._build(thread_id, payload, writes)
                if not self._matches(tup, wanted, filter):
                    continue
                yield tup
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id, agent_id, payload, labels, result = self._encode_checkpoint(
            config, checkpoint, metadata
        )
        await self._astore().store(agent_id, thread_id, payload, labels)
        return result

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if not writes:
            return
        thread_id, agent_id, payload, labels = self._encode_writes(
            config, writes, task_id, task_path
        )
        await self._astore().store(agent_id, thread_id, payload, labels)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._astore().drop_thread(codec.thread_agent_id(str(thread_id)))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        store = self._astore()
        found = codec.entries(await store.manifests(""))
        await store.delete(self._of_runs(found, run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        store = self._astore()
        found = codec.entries(await store.manifests(codec.thread_agent_id(source_thread_id)))
        oldest_first = list(reversed(found))
        target = codec.thread_agent_id(target_thread_id)
        for start in range(0, len(oldest_first), LIST_BATCH):
            batch = oldest_first[start : start + LIST_BATCH]
            payloads = await store.fetch([e.manifest_id for e in batch])
            for entry, payload in zip(batch, payloads, strict=True):
                if payload is not None:
                    await store.store(target, target_thread_id, payload, entry.labels)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._check_strategy(strategy)
        store = self._astore()
        for thread_id in thread_ids:
            agent_id = codec.thread_agent_id(str(thread_id))
            if strategy == "delete":
                await store.drop_thread(agent_id)
                continue
            found = codec.entries(await store.manifests(agent_id))
            doomed = codec.superseded(found, self._latest_per_namespace(found))
            await store.delete([e.manifest_id for e in doomed])
