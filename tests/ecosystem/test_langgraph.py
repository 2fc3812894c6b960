"""StatewardSaver: LangGraph's conformance suite at full level, real graphs across a
server restart, and the corners of the storage mapping (docs/notes/ecosystem.md).

LangGraph and its conformance suite come with the ``dev`` extra: without them this
module fails to import, on purpose (make test must run the suite)."""

from __future__ import annotations

import asyncio
import operator
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.report import CapabilityReport
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from stateward.client import Client, RetryPolicy
from stateward.client import _langgraph_codec as codec
from stateward.client._langgraph_store import INLINE_LIMIT
from stateward.client.langgraph import StatewardSaver
from stateward.storage.errors import StorageUnavailable
from tests.support.server import ServerThread


def assert_full(report: CapabilityReport) -> None:
    report.print_report()
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert not failures, failures
    assert {name for name, r in report.results.items() if r.detected} == {
        c.value for c in ALL_CAPABILITIES
    }
    assert report.conformance_level() == "FULL"


# -- the conformance suite -----------------------------------------------------------


async def test_conformance_full_level(sqlite_server: ServerThread) -> None:
    """Base plus every extended capability, through the asyncio methods. (The saver only
    sees the gRPC API: the graph tests below run on both databases.)"""

    @checkpointer_test(name="StatewardSaver")
    async def saver() -> AsyncIterator[StatewardSaver]:
        async with StatewardSaver(sqlite_server.target) as s:
            yield s

    assert_full(await validate(saver))


class BlockingMethodsOnly(BaseCheckpointSaver[str]):
    """Exposes a saver's *blocking* methods as the async ones the suite calls, so the
    same suite checks the sync implementation too."""

    def __init__(self, inner: StatewardSaver) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.inner.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def collect() -> list[CheckpointTuple]:
            return list(self.inner.list(config, filter=filter, before=before, limit=limit))

        for item in await asyncio.to_thread(collect):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.inner.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.inner.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.inner.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.inner.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.inner.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.inner.prune, thread_ids, strategy=strategy)


async def test_conformance_full_level_blocking_methods(sqlite_server: ServerThread) -> None:
    @checkpointer_test(name="StatewardSaver (blocking methods)")
    async def saver() -> AsyncIterator[BaseCheckpointSaver[str]]:
        with StatewardSaver(sqlite_server.target) as s:
            yield BlockingMethodsOnly(s)

    assert_full(await validate(saver))


# -- real graphs across a server restart ------------------------------------------


class Counter(TypedDict):
    count: int
    log: Annotated[list[str], operator.add]


def counter_graph(approve_node: Any = None) -> StateGraph[Counter]:
    """inc -> approve -> finish (the tests interrupt before or inside ``approve``)."""

    def inc(state: Counter) -> dict[str, Any]:
        return {"count": state["count"] + 1, "log": [f"inc to {state['count'] + 1}"]}

    def approve(state: Counter) -> dict[str, Any]:
        return {"log": ["approved"]}

    def finish(state: Counter) -> dict[str, Any]:
        return {"count": state["count"] * 10, "log": ["done"]}

    builder = StateGraph(Counter)
    builder.add_node("inc", inc)
    builder.add_node("approve", approve_node or approve)
    builder.add_node("finish", finish)
    builder.add_edge(START, "inc")
    builder.add_edge("inc", "approve")
    builder.add_edge("approve", "finish")
    builder.add_edge("finish", END)
    return builder


def test_graph_interrupted_resumes_after_server_restart(server: ServerThread) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": "counter-1"}}
    with StatewardSaver(server.target) as saver:
        graph = counter_graph().compile(checkpointer=saver, interrupt_before=["approve"])
        assert graph.invoke({"count": 1, "log": []}, config) == {"count": 2, "log": ["inc to 2"]}
        assert graph.get_state(config).next == ("approve",)

    server.restart()

    with StatewardSaver(server.target) as fresh:  # a new process would do the same
        graph = counter_graph().compile(checkpointer=fresh, interrupt_before=["approve"])
        assert graph.get_state(config).next == ("approve",)
        final = graph.invoke(None, config)
        assert final == {"count": 20, "log": ["inc to 2", "approved", "done"]}
        assert graph.get_state(config).next == ()
        steps = [s.metadata["step"] for s in graph.get_state_history(config)]
        assert steps == [3, 2, 1, 0, -1]


async def test_async_graph_with_dynamic_interrupt_resumes_after_restart(
    server: ServerThread,
) -> None:
    def ask(state: Counter) -> dict[str, Any]:
        answer = interrupt({"question": f"count is {state['count']}; go on?"})
        return {"log": [f"answer: {answer}"]}

    builder = counter_graph(approve_node=ask)
    config: RunnableConfig = {"configurable": {"thread_id": "counter-async"}}

    async with StatewardSaver(server.target) as saver:
        graph = builder.compile(checkpointer=saver)
        first = await graph.ainvoke({"count": 4, "log": []}, config)
        assert first["__interrupt__"][0].value == {"question": "count is 5; go on?"}

    await asyncio.to_thread(server.restart)

    async with StatewardSaver(server.target) as fresh:
        graph = builder.compile(checkpointer=fresh)
        state = await graph.aget_state(config)
        assert state.next == ("approve",) and state.interrupts
        final = await graph.ainvoke(Command(resume="yes"), config)
        assert final == {"count": 50, "log": ["inc to 5", "answer: yes", "done"]}


# -- the storage mapping's corners --------------------------------------------------


def thread(thread_id: str, ns: str = "") -> RunnableConfig:
    """A config for exactly ``thread_id`` (generate_config replaces "" with a uuid)."""
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}


def put(saver: StatewardSaver, thread_id: str, ns: str = "", **metadata: Any) -> RunnableConfig:
    checkpoint = generate_checkpoint(channel_values={"v": thread_id}, channel_versions={"v": 1})
    return saver.put(thread(thread_id, ns), checkpoint, generate_metadata(**metadata), {"v": 1})


def test_any_thread_id_and_namespace_round_trip(sqlite_server: ServerThread) -> None:
    odd = ["with space", "a/b/../c", "ünïcødé", "x" * 300, "-leading-dash", ""]
    long_ns = "parent:" + "p" * 300 + "|child:1"
    with StatewardSaver(sqlite_server.target) as saver:
        for thread_id in odd:
            stored = put(saver, thread_id, ns=long_ns)
            tup = saver.get_tuple(stored)
            assert tup is not None and tup.config["configurable"]["thread_id"] == thread_id
            assert tup.config["configurable"]["checkpoint_ns"] == long_ns
            saver.put_writes(stored, [("ch", thread_id)], "task-1")
            again = saver.get_tuple(thread(thread_id, long_ns))
            assert again is not None and again.pending_writes == [("task-1", "ch", thread_id)]

        listed = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
        assert listed == set(odd)
        agents = {codec.thread_agent_id(t) for t in odd}
        assert all(a.startswith(("lg.", "lg:")) and len(a) <= 128 for a in agents)

        saver.delete_thread("x" * 300)
        assert saver.get_tuple(thread("x" * 300, long_ns)) is None
        every_namespace: RunnableConfig = {"configurable": {"thread_id": ""}}
        assert [t.config["configurable"]["thread_id"] for t in saver.list(every_namespace)] == [""]


def test_large_checkpoint_is_uploaded_in_chunks(sqlite_server: ServerThread) -> None:
    big = "z" * (INLINE_LIMIT * 3)
    with StatewardSaver(sqlite_server.target) as saver:
        checkpoint = generate_checkpoint(channel_values={"big": big}, channel_versions={"big": 1})
        stored = saver.put(generate_config("big"), checkpoint, generate_metadata(), {"big": 1})
        tup = saver.get_tuple(stored)
        assert tup is not None and tup.checkpoint["channel_values"]["big"] == big
        sizes = [m.size_bytes for m in saver.client.iter_checkpoints("lg.big")]
        assert len(sizes) == 1 and sizes[0] > INLINE_LIMIT * 3


async def test_async_large_checkpoint_and_metadata_only_in_payload(
    sqlite_server: ServerThread,
) -> None:
    """Values too big or too nested for labels are filtered from the payload."""
    big = "y" * (INLINE_LIMIT + 1)
    async with StatewardSaver(sqlite_server.target) as saver:
        for step, tags in enumerate([["a", "b"], ["c"], ["a", "b"]]):
            checkpoint = generate_checkpoint(channel_values={"big": big})
            config = generate_config("tags")
            metadata = generate_metadata(step=step, tags=tags, note="n" * 400)
            await saver.aput(config, checkpoint, metadata, {})
        wanted = {"tags": ["a", "b"]}
        matched = [t async for t in saver.alist(generate_config("tags"), filter=wanted)]
        assert [t.metadata["step"] for t in matched] == [2, 0]
        assert matched[0].checkpoint["channel_values"]["big"] == big
        by_note = [t async for t in saver.alist(None, filter={"note": "n" * 400, "step": 1})]
        assert [t.metadata["step"] for t in by_note] == [1]


def test_get_tuple_by_id_is_one_listing_with_small_payloads_inline(
    sqlite_server: ServerThread,
) -> None:
    with StatewardSaver(sqlite_server.target) as saver:
        store = saver._sync
        calls: list[tuple[str, Any]] = []
        manifests, fetch = store.manifests, store.fetch

        def listing(agent_id: str, labels: Any = None, **options: Any) -> Any:
            calls.append(("list", (labels,)))
            return manifests(agent_id, labels, **options)

        def download(ids: Sequence[str]) -> Any:
            calls.append(("download", len(ids)))
            return fetch(ids)

        store.manifests, store.fetch = listing, download  # type: ignore[method-assign]
        older = put(saver, "t3")
        for n in range(20):  # 21 records with this id: two pages of payloads
            saver.put_writes(older, [("ch", n)], f"task-{n:02}")
        newer = put(saver, "t3")
        calls.clear()
        tup = saver.get_tuple(older)
        assert tup is not None and len(tup.pending_writes) == 20
        assert tup.pending_writes[-1] == ("task-19", "ch", 19)
        older_id = older["configurable"]["checkpoint_id"]
        assert calls == [("list", ({codec.ID: older_id},))]  # no download, one listing

        calls.clear()  # the latest: the checkpoint manifests first, then the same listing
        latest = saver.get_tuple(thread("t3"))
        assert latest is not None and latest.config == newer
        assert [c[0] for c in calls] == ["list", "list"]

        # Above the server's inline limit (64 KiB) a payload is a blob: downloaded.
        big = generate_checkpoint(channel_values={"big": "b" * 100_000})
        stored = saver.put(thread("t3"), big, generate_metadata(), {})
        calls.clear()
        tup = saver.get_tuple(stored)
        assert tup is not None and tup.checkpoint["channel_values"]["big"] == "b" * 100_000
        assert calls[-1] == ("download", 1)


def test_records_of_other_agents_are_left_alone(sqlite_server: ServerThread) -> None:
    with Client.connect(sqlite_server.target) as client, StatewardSaver(client) as saver:
        client.create_agent("planner-1", "planner")
        mine = client.create_checkpoint("planner-1", b"not langgraph", {"lg.run_id": "run-1"})
        put(saver, "t1", run_id="run-1")
        assert [t.config["configurable"]["thread_id"] for t in saver.list(None)] == ["t1"]
        saver.delete_for_runs(["run-1"])
        assert list(saver.list(None)) == []
        assert client.get_checkpoint(mine.checkpoint_id).agent_id == "planner-1"
        assert not client._closed  # a shared client stays open


def test_blocking_corners(sqlite_server: ServerThread) -> None:
    with StatewardSaver(sqlite_server.target) as saver:
        stored = put(saver, "t2")
        saver.put_writes(stored, [], "task-empty")  # nothing to store
        assert saver.get_tuple(stored).pending_writes == []  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="strategy"):
            saver.prune(["t2"], strategy="keep_some")
        saver.delete_for_runs([])
        saver.delete_thread("t2")
        saver.delete_thread("t2")  # twice is fine
        again = put(saver, "t2")  # and the thread can start over
        assert saver.get_tuple(again) is not None
        # Another process deleted the thread behind this saver's back: puts still land.
        with StatewardSaver(sqlite_server.target) as other:
            other.delete_thread("t2")
        assert saver.get_tuple(put(saver, "t2")) is not None


def test_concurrent_graph_threads_share_batch_calls(sqlite_server: ServerThread) -> None:
    with StatewardSaver(sqlite_server.target) as saver:
        store = saver._sync
        sizes: dict[str, list[int]] = {"create": [], "list": []}
        send_creates, send_lists = store._send_creates, store._send_lists
        queued = threading.Event()

        def creates(requests: Any) -> Any:
            if not sizes["create"]:  # hold the first batch until the others queued
                assert queued.wait(10)
            sizes["create"].append(len(requests))
            return send_creates(requests)

        def lists(requests: Any) -> Any:
            sizes["list"].append(len(requests))
            return send_lists(requests)

        def graph_thread(n: int) -> list[str]:
            seen = []
            for step in range(5):
                stored = put(saver, f"c{n}", step=step)
                tup = saver.get_tuple(stored)
                assert tup is not None and tup.checkpoint["channel_values"] == {"v": f"c{n}"}
                seen.append(tup.metadata["step"])
            return seen

        for n in range(8):  # each thread's agent exists: no CreateAgent in the way
            put(saver, f"c{n}")
        store._creates._send, store._lists._send = creates, lists
        with ThreadPoolExecutor(8) as pool:
            running = [pool.submit(graph_thread, n) for n in range(8)]
            for _ in range(1000):
                if len(store._creates._waiting) == 7:
                    break
                threading.Event().wait(0.005)
            queued.set()
            assert [r.result(30) for r in running] == [[0, 1, 2, 3, 4]] * 8
        assert sizes["create"][:2] == [1, 7]  # the seven that queued went together
        assert sum(sizes["create"]) == sum(sizes["list"]) == 40


def test_a_server_without_batch_calls_gets_one_call_per_request(
    sqlite_server: ServerThread,
) -> None:
    with StatewardSaver(sqlite_server.target) as saver:
        # Calls to methods this server does not have answer UNIMPLEMENTED, as an older
        # server answers the batch calls.
        stubs = saver.client.stubs.recovery
        channel = saver.client._channel
        stubs.BatchCreateCheckpoints = channel.unary_unary(  # type: ignore[attr-defined]
            "/stateward.v1.RecoveryService/NoSuchBatchCreate",
            request_serializer=lambda m: m.SerializeToString(),
        )
        stubs.BatchListCheckpoints = channel.unary_unary(  # type: ignore[attr-defined]
            "/stateward.v1.RecoveryService/NoSuchBatchList",
            request_serializer=lambda m: m.SerializeToString(),
        )
        stored = put(saver, "old-1")
        assert not saver._sync._batching.on  # for a while: each request goes alone
        tup = saver.get_tuple(stored)
        assert tup is not None and tup.checkpoint["channel_values"] == {"v": "old-1"}
        saver.put_writes(stored, [("ch", 1)], "task-1")
        assert saver.get_tuple(stored).pending_writes == [("task-1", "ch", 1)]  # type: ignore[union-attr]


def test_a_request_that_fails_transiently_in_a_batch_is_retried(
    sqlite_server: ServerThread,
) -> None:
    with StatewardSaver(sqlite_server.target) as saver:
        put(saver, "blip")  # the thread's agent exists
        db = sqlite_server.server.db  # type: ignore[union-attr]
        write, failures = db.write, [1]

        async def blip(fn: Any) -> Any:  # the next write fails as a database blip does
            if failures[0]:
                failures[0] -= 1
                raise StorageUnavailable("database error: OperationalError")
            return await write(fn)

        db.write = blip
        try:
            stored = put(saver, "blip")  # a batch of one; its item answers UNAVAILABLE
        finally:
            db.write = write
        assert failures == [0] and saver.get_tuple(stored) is not None


def test_coalesced_listings_too_big_for_one_answer_go_again_alone(
    sqlite_server: ServerThread,
) -> None:
    # Without retries: these requests go again for want of room, not as a retry.
    client = Client.connect(sqlite_server.target, retry=RetryPolicy.disabled())
    with client, StatewardSaver(client) as saver:
        store = saver._sync
        store._ensure_agent("lg.big", "big")
        for n in range(16):  # a page of payloads: ~1 MiB, a quarter of a batch's answer
            store._create("lg.big", bytes([n]) * (60 << 10), {"n": str(n)})
        sizes: list[int] = []
        send_lists, queued = store._send_lists, threading.Event()

        def lists(requests: Any) -> Any:
            if not sizes:
                assert queued.wait(10)
            sizes.append(len(requests))
            return send_lists(requests)

        store._lists._send = lists
        with ThreadPoolExecutor(10) as pool:
            running = [
                pool.submit(lambda: store.manifests("lg.big", payloads=True)) for _ in range(10)
            ]
            for _ in range(1000):
                if len(store._lists._waiting) == 9:
                    break
                threading.Event().wait(0.005)
            queued.set()
            listed = [r.result(30) for r in running]
        assert sizes == [1, 9]  # nine in one batch; those without room went again alone
        assert all(len(found) == 16 and found[0].payload for found in listed)


async def test_async_graph_threads_share_batch_calls(sqlite_server: ServerThread) -> None:
    async with StatewardSaver(sqlite_server.target) as saver:
        for n in range(8):
            checkpoint = generate_checkpoint(channel_values={"v": n}, channel_versions={"v": 1})
            await saver.aput(thread(f"a{n}"), checkpoint, generate_metadata(), {"v": 1})
        store = saver._astore()
        sizes: list[int] = []
        send = store._send_creates

        async def creates(requests: Any) -> Any:
            sizes.append(len(requests))
            return await send(requests)

        store._creates._send = creates

        async def graph_thread(n: int) -> Any:
            checkpoint = generate_checkpoint(channel_values={"v": n}, channel_versions={"v": 1})
            stored = await saver.aput(thread(f"a{n}"), checkpoint, generate_metadata(), {"v": 1})
            return (await saver.aget_tuple(stored)).checkpoint["channel_values"]  # type: ignore[union-attr]

        assert await asyncio.gather(*map(graph_thread, range(8))) == [{"v": n} for n in range(8)]
        assert sizes == [8]


# -- the codec, without a server ---------------------------------------------------


def test_thread_agent_ids() -> None:
    assert codec.thread_agent_id("abc-1") == "lg.abc-1"
    hashed = codec.thread_agent_id("a b")
    assert hashed.startswith("lg:") and len(hashed) == 67
    assert codec.plain_thread_id("lg.abc-1") == "abc-1"
    assert codec.plain_thread_id(hashed) is None
    assert codec.thread_agent_id("x" * 125) == "lg." + "x" * 125
    assert codec.thread_agent_id("x" * 126).startswith("lg:")


def test_labels_and_filter_verdicts() -> None:
    assert codec.label_value("short") == "short"
    assert codec.label_value("x" * 257).startswith("sha256:")
    assert codec.label_value("a\x00b").startswith("sha256:")
    labels = codec.checkpoint_labels("", "id-1", None, {"source": "loop", "step": 3})
    assert labels[codec.META] == "full"
    assert codec.filter_verdict(labels, {"step": 3, "source": "loop"}) is True
    assert codec.filter_verdict(labels, {"step": 4}) is False
    assert codec.filter_verdict(labels, {"missing": None}) is True
    assert codec.filter_verdict(labels, {"missing": 1}) is False
    nested = codec.checkpoint_labels("", "id-1", "id-0", {"step": 3, "tags": ["a"]})
    assert nested[codec.PARENT] == "id-0" and nested["lg.m.tags"] == codec.UNKNOWN
    assert nested[codec.META] == "full"  # every key has a label, "?" for payload-only values
    assert codec.filter_verdict(nested, {"tags": ["a"]}) is None  # only the payload can tell
    assert codec.filter_verdict(nested, {"step": 2, "tags": ["a"]}) is False
    assert codec.filter_verdict(nested, {"absent": "x"}) is False
    many = codec.checkpoint_labels("", "i", None, {f"k{i}": i for i in range(100)})
    assert len(many) <= 64 and many[codec.META] == "partial"
    assert codec.filter_verdict(many, {"k99": 99}) is None  # no label: maybe in the payload


def test_envelopes_round_trip_and_reject_garbage() -> None:
    payload = codec.pack_checkpoint("ns", "id-2", "id-1", ("msgpack", b"\x00cp"), ("json", b"{}"))
    stored = codec.unpack_checkpoint(payload)
    assert (stored.checkpoint_ns, stored.checkpoint_id, stored.parent_id) == ("ns", "id-2", "id-1")
    assert stored.checkpoint == ("msgpack", b"\x00cp") and stored.metadata == ("json", b"{}")
    with pytest.raises(ValueError, match="envelope"):
        codec.unpack(b"hello")
    with pytest.raises(ValueError, match="bytes"):
        codec.unpack(payload + b"x")


def test_merge_writes_keeps_first_regular_and_last_special_write() -> None:
    def batch(task: str, *writes: tuple[int, str, bytes], path: str = "") -> list[Any]:
        packed = codec.pack_writes("", "c1", task, path, [(i, c, ("b", v)) for i, c, v in writes])
        return codec.unpack_writes(packed)

    merged = codec.merge_writes(
        [
            batch("t2", (0, "a", b"first"), (-1, "__error__", b"e1")),
            batch("t2", (0, "a", b"again"), (-1, "__error__", b"e2")),
            batch("t1", (0, "a", b"other"), path="~0"),
        ]
    )
    assert [(w.task_id, w.idx, w.value[1]) for w in merged] == [
        ("t2", -1, b"e2"),
        ("t2", 0, b"first"),
        ("t1", 0, b"other"),
    ]
