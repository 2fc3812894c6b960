"""Checkpoints over real gRPC, on SQLite and PostgreSQL, with blobs on file://, memory://
and s3:// (moto's HTTP server): create, upload, list, download, delete, restore, integrity,
traversal refusals, pruning, garbage collection, and a SIGKILL in the middle of an upload.
Small created payloads are stored inline (no blob); tests about blobs use bigger ones."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from stateward.server.config import ConfigError, Settings
from stateward.server.services import retention
from stateward.server.services.checkpoints import INLINE_MAX, PAYLOAD_PAGE
from stateward.v1 import (
    execution_pb2,
    lifecycle_pb2,
    recovery_pb2,
    state_pb2,
)
from tests.support.postgres import free_port
from tests.support.recovery import Client, start_server, upload_messages
from tests.support.s3 import S3Endpoint, start_or_skip
from tests.support.server import ServerProcess, ServerThread

pb = recovery_pb2
MiB = 1 << 20


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    yield start_or_skip()  # shared by the test process; stopped at exit


@pytest.fixture(
    scope="module",
    params=[
        "sqlite-file",
        "sqlite-memory",
        pytest.param("sqlite-s3", marks=pytest.mark.s3),
        pytest.param("postgres-file", marks=pytest.mark.postgres),
        pytest.param("postgres-memory", marks=pytest.mark.postgres),
        pytest.param("postgres-s3", marks=[pytest.mark.postgres, pytest.mark.s3]),
    ],
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """One server per database and blob backend for the module; each test gets its own
    namespace (see ``client``), so tests never see each other's records or blobs."""
    database, backend = request.param.split("-")
    running = start_server(request, tmp_path_factory, database, backend)
    yield running
    running.close()


@pytest.fixture
def client(served: ServerThread) -> Iterator[Client]:
    c = Client(served.target, served.settings, namespace=f"t-{uuid.uuid4().hex[:16]}")
    yield c
    c.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


# -- the basic cycle ---------------------------------------------------------------------------
def test_create_get_list_download_delete(client: Client) -> None:
    agent = client.agent(state={"step": 1})
    payload = os.urandom(300_000)
    made = client.create(agent, payload, labels={"kind": "nightly"})
    assert made.checkpoint_id.startswith("ckpt_")
    assert (made.agent_id, made.state_version, made.size_bytes) == (agent, 1, len(payload))
    assert made.sha256 == sha(payload) and made.compression == "none"
    assert dict(made.labels) == {"kind": "nightly"}
    assert (
        client.recovery.GetCheckpoint(
            pb.GetCheckpointRequest(checkpoint_id=made.checkpoint_id)
        ).checkpoint
        == made
    )
    manifest, data = client.download(made.checkpoint_id)
    assert manifest == made and data == payload
    assert client.keys() == [client.key(agent, made.checkpoint_id)]

    client.recovery.DeleteCheckpoint(pb.DeleteCheckpointRequest(checkpoint_id=made.checkpoint_id))
    gone = pb.GetCheckpointRequest(checkpoint_id=made.checkpoint_id)
    assert code_of(lambda: client.recovery.GetCheckpoint(gone)) == grpc.StatusCode.NOT_FOUND
    assert client.keys() == []
    again = pb.DeleteCheckpointRequest(checkpoint_id=made.checkpoint_id)
    assert code_of(lambda: client.recovery.DeleteCheckpoint(again)) == grpc.StatusCode.NOT_FOUND


def test_list_is_newest_first_and_paged(client: Client) -> None:
    first, second = client.agent("a-1", {"n": 1}), client.agent("a-2")
    made = [client.create(first, b"1"), client.create(second, b"2"), client.create(first, b"3")]
    page = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest(page_size=2))
    assert [c.checkpoint_id for c in page.checkpoints] == [
        made[2].checkpoint_id,
        made[1].checkpoint_id,
    ]
    rest = client.recovery.ListCheckpoints(
        pb.ListCheckpointsRequest(page_size=2, page_token=page.next_page_token)
    )
    assert [c.checkpoint_id for c in rest.checkpoints] == [made[0].checkpoint_id]
    assert rest.next_page_token == ""
    mine = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest(agent_id=first))
    assert [c.checkpoint_id for c in mine.checkpoints] == [
        made[2].checkpoint_id,
        made[0].checkpoint_id,
    ]
    foreign = pb.ListCheckpointsRequest(agent_id=second, page_token=page.next_page_token)
    assert code_of(lambda: client.recovery.ListCheckpoints(foreign)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_list_filters_by_labels(client: Client) -> None:
    agent = client.agent()
    red = client.create(agent, labels={"color": "red", "run": "r1"})
    client.create(agent, labels={"color": "blue", "run": "r1"})
    client.create(agent)

    def listed(**labels: str) -> list[str]:
        request = pb.ListCheckpointsRequest(agent_id=agent, labels=labels)
        return [c.checkpoint_id for c in client.recovery.ListCheckpoints(request).checkpoints]

    assert listed(color="red") == [red.checkpoint_id]
    assert len(listed(run="r1")) == 2
    assert listed(color="red", run="r2") == []
    assert len(listed()) == 3
    bad = pb.ListCheckpointsRequest(labels={"": "x"})
    assert code_of(lambda: client.recovery.ListCheckpoints(bad)) == grpc.StatusCode.INVALID_ARGUMENT


def test_small_payloads_are_stored_inline_and_listed_with_their_payloads(client: Client) -> None:
    agent = client.agent()
    empty = client.create(agent)
    assert (empty.size_bytes, empty.sha256, empty.state_version) == (0, sha(b""), 0)
    assert client.download(empty.checkpoint_id)[1] == b""
    largest, blob = os.urandom(INLINE_MAX), os.urandom(INLINE_MAX + 1)
    inline = client.create(agent, largest, labels={"size": "max"})
    stored = client.create(agent, blob, labels={"size": "max+1"})
    assert client.keys() == [client.key(agent, stored.checkpoint_id)]  # no blob for the others
    assert client.download(inline.checkpoint_id) == (inline, largest)
    assert client.download(stored.checkpoint_id) == (stored, blob)

    def listed(**fields: Any) -> list[pb.Checkpoint]:
        request = pb.ListCheckpointsRequest(agent_id=agent, **fields)
        return list(client.recovery.ListCheckpoints(request).checkpoints)

    assert [c.HasField("payload") for c in listed()] == [False] * 3
    with_payloads = listed(include_payloads=True)
    assert [c.checkpoint_id for c in with_payloads] == [
        stored.checkpoint_id,
        inline.checkpoint_id,
        empty.checkpoint_id,
    ]
    assert not with_payloads[0].HasField("payload")  # a blob: download it
    assert with_payloads[1].payload == largest
    assert with_payloads[2].HasField("payload") and with_payloads[2].payload == b""
    only = listed(include_payloads=True, labels={"size": "max"})
    assert [(c.checkpoint_id, c.payload) for c in only] == [(inline.checkpoint_id, largest)]
    client.save(agent, {"step": 1})
    pinned = client.create(agent, b"small")  # pins the live state version, as a blob does
    assert pinned.state_version == 1 and inline.state_version == 0
    assert code_of(lambda: client.create("nobody", b"small")) == grpc.StatusCode.NOT_FOUND
    client.recovery.DeleteCheckpoint(pb.DeleteCheckpointRequest(checkpoint_id=pinned.checkpoint_id))

    client.recovery.DeleteCheckpoint(pb.DeleteCheckpointRequest(checkpoint_id=inline.checkpoint_id))
    assert [c.checkpoint_id for c in listed()] == [stored.checkpoint_id, empty.checkpoint_id]


def test_a_page_with_payloads_holds_at_most_payload_page_checkpoints(client: Client) -> None:
    agent = client.agent()
    made = [client.create(agent, b"p%d" % n).checkpoint_id for n in range(PAYLOAD_PAGE + 1)]
    first = client.recovery.ListCheckpoints(
        pb.ListCheckpointsRequest(agent_id=agent, page_size=1000, include_payloads=True)
    )
    assert len(first.checkpoints) == PAYLOAD_PAGE and first.next_page_token
    rest = client.recovery.ListCheckpoints(
        pb.ListCheckpointsRequest(
            agent_id=agent, include_payloads=True, page_token=first.next_page_token
        )
    )
    assert [c.checkpoint_id for c in [*first.checkpoints, *rest.checkpoints]] == made[::-1]
    assert [c.payload for c in rest.checkpoints] == [b"p0"] and not rest.next_page_token


def test_label_filters_start_from_a_rare_label_or_scan_the_agent(client: Client) -> None:
    # Both plans of storage/checkpoints.list_page give the same answers, paged: from the
    # owners of a label with fewer than RARE_LABEL (64), else the agent's checkpoints in order.
    agent, other = client.agent("a-1"), client.agent("a-2")
    for n in range(70):
        client.create(agent, labels={"kind": "common", "all": "yes", "n": str(n % 3)})
    client.create(other, labels={"kind": "common", "all": "yes", "n": "0"})
    rare = client.create(agent, labels={"kind": "common", "all": "yes", "n": "rare"})

    def listed(agent_id: str, **labels: str) -> list[str]:
        request = pb.ListCheckpointsRequest(agent_id=agent_id, labels=labels, page_size=10)
        found: list[str] = []
        while True:
            page = client.recovery.ListCheckpoints(request)
            found += [c.checkpoint_id for c in page.checkpoints]
            if not page.next_page_token:
                return found
            request.page_token = page.next_page_token

    everything = listed(agent)
    assert len(everything) == 71
    assert listed(agent, kind="common") == everything  # common: the agent scan
    assert listed(agent, kind="common", all="yes") == everything
    assert listed(agent, n="rare") == listed(agent, kind="common", n="rare") == [rare.checkpoint_id]
    zeros = listed(agent, kind="common", n="0")  # from the owners of n=0
    assert len(zeros) == 24 and zeros == [c for c in everything if c in set(zeros)]
    assert len(listed("", n="0")) == 25  # no agent: the label's owners, every agent
    assert listed("", n="0")[1:] == zeros  # newest first: the other agent's came later


# -- batch calls ---------------------------------------------------------------------------------
def status_of(error: Any) -> tuple[str, str]:
    """The code name and the first detail's type of a batch item's status."""
    code = grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == error.code)).name
    return code, error.details[0].TypeName() if error.details else ""


def test_batch_create_answers_each_request_on_its_own(client: Client) -> None:
    agent = client.agent()
    payload = os.urandom(INLINE_MAX + 1)  # a blob: batches take any size a create takes
    batch = pb.BatchCreateCheckpointsRequest(
        requests=[
            pb.CreateCheckpointRequest(agent_id=agent, payload=b"one", labels={"n": "1"}),
            pb.CreateCheckpointRequest(agent_id="nobody", payload=b"x"),
            pb.CreateCheckpointRequest(agent_id=agent, labels={"": "bad"}),
            pb.CreateCheckpointRequest(agent_id=agent, payload=payload, request_id="req-b1"),
        ]
    )
    results = client.recovery.BatchCreateCheckpoints(batch).results
    assert [r.WhichOneof("result") for r in results] == ["response", "error", "error", "response"]
    assert status_of(results[1].error) == ("NOT_FOUND", "google.rpc.ErrorInfo")
    assert status_of(results[2].error) == ("INVALID_ARGUMENT", "google.rpc.BadRequest")
    one, blob = results[0].response.checkpoint, results[3].response.checkpoint
    assert client.download(one.checkpoint_id)[1] == b"one"
    assert client.download(blob.checkpoint_id)[1] == payload
    listed = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest(agent_id=agent))
    assert {c.checkpoint_id for c in listed.checkpoints} == {one.checkpoint_id, blob.checkpoint_id}
    # A request_id means the same in a batch and alone: the retry returns the original.
    again = client.recovery.CreateCheckpoint(batch.requests[3])
    assert again.checkpoint.checkpoint_id == blob.checkpoint_id


def test_batch_list_answers_each_request_on_its_own(client: Client) -> None:
    agent = client.agent()
    made = [client.create(agent, f"p{n}".encode(), labels={"n": str(n)}) for n in range(3)]
    batch = pb.BatchListCheckpointsRequest(
        requests=[
            pb.ListCheckpointsRequest(agent_id=agent, labels={"n": "1"}, include_payloads=True),
            pb.ListCheckpointsRequest(agent_id=agent, page_size=-1),
            pb.ListCheckpointsRequest(agent_id=agent, page_size=2),
            pb.ListCheckpointsRequest(agent_id=agent, page_token="garbage"),
            pb.ListCheckpointsRequest(agent_id="nobody"),
        ]
    )
    results = client.recovery.BatchListCheckpoints(batch).results
    assert [r.WhichOneof("result") for r in results] == [
        "response",
        "error",
        "response",
        "error",
        "response",
    ]
    found = results[0].response.checkpoints
    assert [(c.checkpoint_id, c.payload) for c in found] == [(made[1].checkpoint_id, b"p1")]
    assert status_of(results[1].error)[0] == "INVALID_ARGUMENT"
    assert status_of(results[3].error)[0] == "INVALID_ARGUMENT"
    assert list(results[4].response.checkpoints) == []
    # A batch page pages on like the call it stands for.
    first = results[2].response
    assert [c.checkpoint_id for c in first.checkpoints] == [m.checkpoint_id for m in made[:0:-1]]
    rest = client.recovery.ListCheckpoints(
        pb.ListCheckpointsRequest(agent_id=agent, page_size=2, page_token=first.next_page_token)
    )
    assert [c.checkpoint_id for c in rest.checkpoints] == [made[0].checkpoint_id]


def test_a_batch_of_listings_answers_within_its_byte_budget(client: Client) -> None:
    agent = client.agent()
    for n in range(PAYLOAD_PAGE):  # a page of payloads is about 1 MiB
        client.create(agent, bytes([n]) * (60 << 10))
    listing = pb.ListCheckpointsRequest(agent_id=agent, include_payloads=True)
    batch = pb.BatchListCheckpointsRequest(requests=[listing] * 8)
    results = client.recovery.BatchListCheckpoints(batch).results
    served = [r for r in results if r.WhichOneof("result") == "response"]
    # Half the server's 8 MiB message limit: four pages fit, the rest are refused alone.
    assert len(served) == 4 and results[:4] == served
    for refused in results[4:]:
        assert status_of(refused.error) == ("RESOURCE_EXHAUSTED", "google.rpc.ErrorInfo")
        info = error_details_pb2.ErrorInfo()
        refused.error.details[0].Unpack(info)
        assert info.reason == "BATCH_ANSWER_FULL"
    assert all(len(r.response.checkpoints) == PAYLOAD_PAGE for r in served)
    # The first listing is answered whatever it holds.
    alone = client.recovery.BatchListCheckpoints(pb.BatchListCheckpointsRequest(requests=[listing]))
    assert alone.results[0].WhichOneof("result") == "response"


def test_batches_hold_one_to_a_hundred_requests(client: Client) -> None:
    agent = client.agent()
    create = pb.CreateCheckpointRequest(agent_id=agent)
    for count in (0, 101):
        creates = pb.BatchCreateCheckpointsRequest(requests=[create] * count)
        lists = pb.BatchListCheckpointsRequest(requests=[pb.ListCheckpointsRequest()] * count)
        for call in (
            lambda c=creates: client.recovery.BatchCreateCheckpoints(c),
            lambda ls=lists: client.recovery.BatchListCheckpoints(ls),
        ):
            assert code_of(call) == grpc.StatusCode.INVALID_ARGUMENT
    full = pb.BatchCreateCheckpointsRequest(requests=[create] * 100)
    assert len(client.recovery.BatchCreateCheckpoints(full).results) == 100


def test_upload_streams_chunks_and_checks_the_announced_hash(client: Client) -> None:
    agent = client.agent(state={"x": 1})
    chunks = [os.urandom(MiB) for _ in range(3)] + [b"tail"]
    payload = b"".join(chunks)
    made = client.upload(agent, chunks, sha256=sha(payload).upper(), labels={"k": "v"})
    assert (made.size_bytes, made.sha256, made.state_version) == (len(payload), sha(payload), 1)
    assert client.download(made.checkpoint_id)[1] == payload

    wrong = lambda: client.upload(agent, chunks, sha256=sha(b"something else"))  # noqa: E731
    assert code_of(wrong) == grpc.StatusCode.DATA_LOSS
    listed = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest(agent_id=agent))
    assert [c.checkpoint_id for c in listed.checkpoints] == [made.checkpoint_id]
    assert client.keys() == [client.key(agent, made.checkpoint_id)]  # nothing stored


def test_upload_protocol_errors(client: Client) -> None:
    agent = client.agent()
    chunk_first = iter([pb.UploadCheckpointRequest(chunk=b"x")])
    assert code_of(lambda: client.recovery.UploadCheckpoint(chunk_first)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    twice = iter(
        [
            pb.UploadCheckpointRequest(metadata=pb.UploadCheckpointMetadata(agent_id=agent)),
            pb.UploadCheckpointRequest(metadata=pb.UploadCheckpointMetadata(agent_id=agent)),
        ]
    )
    assert code_of(lambda: client.recovery.UploadCheckpoint(twice)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    too_big = lambda: client.upload(agent, [b"x" * (4 * MiB + 1)])  # noqa: E731
    assert code_of(too_big) == grpc.StatusCode.INVALID_ARGUMENT
    bad_hash = lambda: client.upload(agent, [b"x"], sha256="not-hex")  # noqa: E731
    assert code_of(bad_hash) == grpc.StatusCode.INVALID_ARGUMENT
    nobody = lambda: client.upload("nobody", [b"x"])  # noqa: E731
    assert code_of(nobody) == grpc.StatusCode.NOT_FOUND
    # Chunk messages are read by hand: one that does not parse, after good ones, is still
    # INVALID_ARGUMENT, and its half-written blob goes.
    raw_upload = client.channel.stream_unary("/stateward.v1.RecoveryService/UploadCheckpoint")
    for corrupt in (b"\x12\x05ab", b"\xff\xff\xff\xff"):
        messages = [
            pb.UploadCheckpointRequest(
                metadata=pb.UploadCheckpointMetadata(agent_id=agent)
            ).SerializeToString(),
            pb.UploadCheckpointRequest(chunk=b"y" * 1024).SerializeToString(),
            corrupt,
        ]
        with pytest.raises(grpc.RpcError) as refused:
            raw_upload(iter(messages))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UploadCheckpoint" in (refused.value.details() or "")
    listed = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest(agent_id=agent))
    assert list(listed.checkpoints) == []
    deadline = time.monotonic() + 30
    while client.keys(temporary=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.keys(temporary=True) == []


def test_a_client_that_goes_away_mid_upload_leaves_nothing(client: Client) -> None:
    agent = client.agent()
    started = threading.Event()

    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b"z" * (64 * 1024)
            started.set()
            time.sleep(0.01)

    future = client.recovery.UploadCheckpoint.future(upload_messages(agent, chunks()))
    assert started.wait(30)
    time.sleep(0.2)  # let some chunks reach the temporary blob
    future.cancel()
    deadline = time.monotonic() + 30
    while client.keys(temporary=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.keys(temporary=True) == []
    listed = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest(agent_id=agent))
    assert list(listed.checkpoints) == []


# -- idempotency ---------------------------------------------------------------------------------
def test_create_and_upload_are_idempotent_by_request_id(client: Client) -> None:
    agent = client.agent()
    first = client.create(agent, b"payload", request_id="req-create")
    again = client.create(agent, b"payload", request_id="req-create")
    assert again == first
    reused = lambda: client.create(agent, b"different", request_id="req-create")  # noqa: E731
    assert code_of(reused) == grpc.StatusCode.INVALID_ARGUMENT

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"c" * 1000

    up = client.upload(agent, list(chunks()), request_id="req-upload")
    retried = client.upload(agent, chunks(), request_id="req-upload")
    assert retried == up
    # Without an announced sha256 the payload is part of the request only once received:
    # a retry with other bytes is refused, not answered with the first checkpoint.
    other = lambda: client.upload(agent, [b"d" * 4000], request_id="req-upload")  # noqa: E731
    assert code_of(other) == grpc.StatusCode.INVALID_ARGUMENT
    # With it announced, the metadata names the whole request (the server answers a retry
    # before reading its chunks).
    payload = b"c" * 4000
    announced = client.upload(agent, [payload], sha256=sha(payload), request_id="req-sha")
    again_sha = client.upload(agent, chunks(), sha256=sha(payload), request_id="req-sha")
    assert again_sha == announced
    big = os.urandom(INLINE_MAX + 1)
    stored = client.create(agent, big, request_id="req-blob")
    assert client.create(agent, big, request_id="req-blob") == stored
    listed = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest(agent_id=agent))
    assert len(listed.checkpoints) == 4  # the retries stored nothing
    assert len(client.keys()) == 3  # the uploads' blobs and the big one's; "payload" is inline
    deadline = time.monotonic() + 30
    while client.keys(temporary=True) != client.keys() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.keys(temporary=True) == client.keys()  # no temporary blob left behind


# -- integrity -------------------------------------------------------------------------------------
def _rewrite_blob(client: Client, made: pb.Checkpoint, change: Any) -> None:
    path = client.blobs.path(client.key(made.agent_id, made.checkpoint_id))
    client.blobs.fs.pipe_file(path, change(bytes(client.blobs.fs.cat_file(path))))


def test_a_corrupted_blob_is_data_loss_never_silent_bytes(client: Client) -> None:
    agent = client.agent()
    payload = os.urandom(3 * MiB)
    made = client.create(agent, payload)

    def flip(raw: bytes) -> bytes:
        return raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0xFF]) + raw[len(raw) // 2 + 1 :]

    _rewrite_blob(client, made, flip)
    stream = client.recovery.DownloadCheckpoint(
        pb.DownloadCheckpointRequest(checkpoint_id=made.checkpoint_id)
    )
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for message in stream:
            received.append(message)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert "sha256" in (caught.value.details() or "")
    assert received[0].WhichOneof("item") == "checkpoint"  # the manifest came first

    _rewrite_blob(client, made, lambda raw: raw[:-1])  # a short blob fails before any byte
    stream = client.recovery.DownloadCheckpoint(
        pb.DownloadCheckpointRequest(checkpoint_id=made.checkpoint_id)
    )
    assert next(stream).WhichOneof("item") == "checkpoint"
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS

    client.blobs.delete(client.key(agent, made.checkpoint_id))
    with pytest.raises(grpc.RpcError) as caught:
        client.download(made.checkpoint_id)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert "missing" in (caught.value.details() or "")


def test_a_corrupted_inline_payload_is_data_loss(client: Client, served: ServerThread) -> None:
    agent = client.agent(state={"ok": True})
    good = client.create(agent, b"good")
    made = client.create(agent, b"inline payload")
    engine = sqlalchemy.create_engine(served.settings.resolved_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text(
                    "UPDATE checkpoints SET payload = :p "
                    "WHERE namespace = :ns AND checkpoint_id = :id"
                ),
                {"p": b"inline pAyload", "ns": client.namespace, "id": made.checkpoint_id},
            )
    finally:
        engine.dispose()
    stream = client.recovery.DownloadCheckpoint(
        pb.DownloadCheckpointRequest(checkpoint_id=made.checkpoint_id)
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)  # verified before anything is sent
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    with_payloads = pb.ListCheckpointsRequest(agent_id=agent, include_payloads=True)
    assert code_of(lambda: client.recovery.ListCheckpoints(with_payloads)) == (
        grpc.StatusCode.DATA_LOSS
    )
    manifests = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest(agent_id=agent))
    assert [c.checkpoint_id for c in manifests.checkpoints] == [
        made.checkpoint_id,
        good.checkpoint_id,
    ]
    plan = client.recovery.RecoverAgent(pb.RecoverAgentRequest(agent_id=agent)).plan
    assert plan.checkpoint.checkpoint_id == good.checkpoint_id  # the newest that verifies


TRAVERSALS = [
    "..",
    "../x",
    "a/../../b",
    "%2e%2e",
    "%2e%2e%2fetc",
    "/etc/passwd",
    "a/b",
    ".",
    "a\\b",
    ".tmp",
    "x" * 129,
]


def _calls_with(client: Client, bad: str) -> list[Any]:
    """Every RPC that takes an id, called with ``bad`` in it."""
    r = client.recovery
    return [
        lambda: client.create(bad, b"x"),
        lambda: client.upload(bad, [b"x"]),
        lambda: r.GetCheckpoint(pb.GetCheckpointRequest(checkpoint_id=bad)),
        lambda: client.download(bad),
        lambda: r.DeleteCheckpoint(pb.DeleteCheckpointRequest(checkpoint_id=bad)),
        lambda: r.RestoreCheckpoint(pb.RestoreCheckpointRequest(checkpoint_id=bad)),
        lambda: r.ListCheckpoints(pb.ListCheckpointsRequest(agent_id=bad)),
        lambda: r.PruneCheckpoints(pb.PruneCheckpointsRequest(agent_id=bad)),
    ]


def test_traversal_ids_are_refused_before_any_blob_is_touched(client: Client) -> None:
    client.agent()
    for bad in TRAVERSALS:
        for call in _calls_with(client, bad):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, caught.value)
    assert client.keys(temporary=True) == []


# -- restore ---------------------------------------------------------------------------------------
def test_restore_writes_a_new_version_with_compare_and_set(client: Client) -> None:
    agent = client.agent(state={"step": 1, "big": 2**60 + 1})
    made = client.create(agent, b"p")
    client.save(agent, {"step": 2})
    stale = pb.RestoreCheckpointRequest(checkpoint_id=made.checkpoint_id, expected_version=1)
    assert code_of(lambda: client.recovery.RestoreCheckpoint(stale)) == grpc.StatusCode.ABORTED

    restored = client.recovery.RestoreCheckpoint(
        pb.RestoreCheckpointRequest(
            checkpoint_id=made.checkpoint_id, expected_version=2, request_id="restore-1"
        )
    )
    assert restored.state_version == 3 and restored.agent.state_version == 3
    current = client.state.GetState(state_pb2.GetStateRequest(agent_id=agent)).state
    assert current.version == 3
    assert json.loads(current.document_json) == {"step": 1, "big": 2**60 + 1}
    replayed = client.recovery.RestoreCheckpoint(
        pb.RestoreCheckpointRequest(
            checkpoint_id=made.checkpoint_id, expected_version=2, request_id="restore-1"
        )
    )
    assert replayed == restored
    events = client.execution.ListEvents(
        execution_pb2.ListEventsRequest(filter=execution_pb2.EventFilter(agent_id=agent))
    ).events
    types = [e.type for e in events]
    assert types.count("state.restored") == 1 and types.count("checkpoint.restored") == 1
    assert "checkpoint.created" in types


def test_restore_can_reinitialize_an_agent_in_error(client: Client) -> None:
    agent = client.agent(state={"ok": True})
    made = client.create(agent)
    client.lifecycle.ReportAgentError(
        lifecycle_pb2.ReportAgentErrorRequest(agent_id=agent, message="state corrupted")
    )
    reply = client.recovery.RestoreCheckpoint(
        pb.RestoreCheckpointRequest(checkpoint_id=made.checkpoint_id, reinitialize=True)
    )
    assert reply.agent.status == lifecycle_pb2.AGENT_STATUS_INITIALIZED
    transitions = client.lifecycle.ListTransitions(
        lifecycle_pb2.ListTransitionsRequest(agent_id=agent)
    ).transitions
    assert (transitions[-1].from_status, transitions[-1].to_status) == (
        lifecycle_pb2.AGENT_STATUS_ERROR,
        lifecycle_pb2.AGENT_STATUS_INITIALIZED,
    )
    assert made.checkpoint_id in transitions[-1].reason
    # Not in ERROR: the state is restored, the status left alone.
    again = client.recovery.RestoreCheckpoint(
        pb.RestoreCheckpointRequest(checkpoint_id=made.checkpoint_id, reinitialize=True)
    )
    assert again.agent.status == lifecycle_pb2.AGENT_STATUS_INITIALIZED
    assert again.state_version == reply.state_version + 1


def test_restore_refusals(client: Client) -> None:
    agent = client.agent()
    stateless = client.create(agent)
    no_state = pb.RestoreCheckpointRequest(checkpoint_id=stateless.checkpoint_id)
    assert code_of(lambda: client.recovery.RestoreCheckpoint(no_state)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    client.save(agent, {"a": 1})
    made = client.create(agent)
    client.lifecycle.TerminateAgent(lifecycle_pb2.TerminateAgentRequest(agent_id=agent))
    terminated = pb.RestoreCheckpointRequest(checkpoint_id=made.checkpoint_id)
    assert code_of(lambda: client.recovery.RestoreCheckpoint(terminated)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    missing = pb.RestoreCheckpointRequest(checkpoint_id="ckpt_nope")
    assert code_of(lambda: client.recovery.RestoreCheckpoint(missing)) == grpc.StatusCode.NOT_FOUND


def test_checkpointed_state_versions_survive_state_history(settings: Settings) -> None:
    with_short_history = replace(settings, state_history=2, retention_interval=0)
    running = ServerThread(with_short_history).start()
    client = Client(running.target, with_short_history)
    try:
        agent = client.agent(state={"v": 1})
        made = client.create(agent)
        for n in range(2, 7):
            client.save(agent, {"v": n})
        restored = client.recovery.RestoreCheckpoint(
            pb.RestoreCheckpointRequest(checkpoint_id=made.checkpoint_id)
        )
        state = client.state.GetState(state_pb2.GetStateRequest(agent_id=agent)).state
        assert state.version == restored.state_version and json.loads(state.document_json) == {
            "v": 1
        }
    finally:
        client.close()
        running.close()


# -- retention -----------------------------------------------------------------------------------
def test_prune_keeps_the_newest_and_reports_dry_runs(client: Client) -> None:
    a, b = client.agent("a-1"), client.agent("a-2")
    big = INLINE_MAX + 1  # a blob; the others are inline
    old = [client.create(a, b"x" * n) for n in (big, 2, 3 + big)]
    only_b = client.create(b, b"b" * big)
    dry = client.recovery.PruneCheckpoints(pb.PruneCheckpointsRequest(keep_last=1, dry_run=True))
    assert sorted(c.checkpoint_id for c in dry.deleted) == sorted(c.checkpoint_id for c in old[:2])
    assert dry.freed_bytes == big + 2 and len(client.keys()) == 3
    # max_age 0 would take everything: the newest of each agent stays anyway.
    real = client.recovery.PruneCheckpoints(
        pb.PruneCheckpointsRequest(max_age=duration_pb2.Duration(seconds=0))
    )
    assert len(real.deleted) == 2
    assert client.keys() == sorted(
        [client.key(a, old[2].checkpoint_id), client.key(b, only_b.checkpoint_id)]
    )
    listed = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest())
    assert {c.checkpoint_id for c in listed.checkpoints} == {
        old[2].checkpoint_id,
        only_b.checkpoint_id,
    }
    assert client.recovery.PruneCheckpoints(pb.PruneCheckpointsRequest(keep_last=1)).deleted == []
    unset = client.recovery.PruneCheckpoints(pb.PruneCheckpointsRequest())  # no policy configured
    assert unset.deleted == [] and unset.deleted_count == 0 and not unset.deleted_truncated


def test_a_dry_run_past_its_listing_limit_still_counts_everything(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "DRY_RUN_LIMIT", 3)  # the server runs in this process
    agent = client.agent()
    made = [client.create(agent, b"x" * (n + 1)) for n in range(6)]
    request = pb.PruneCheckpointsRequest(agent_id=agent, keep_last=1, dry_run=True)
    dry = client.recovery.PruneCheckpoints(request)
    assert [c.checkpoint_id for c in dry.deleted] == [c.checkpoint_id for c in made[:3]]
    assert (dry.deleted_count, dry.freed_bytes, dry.deleted_truncated) == (5, 15, True)
    real = client.recovery.PruneCheckpoints(pb.PruneCheckpointsRequest(agent_id=agent, keep_last=1))
    assert (real.deleted_count, real.freed_bytes, real.deleted_truncated) == (5, 15, False)
    assert len(real.deleted) == 5


def test_collect_garbage_removes_only_old_orphans(client: Client) -> None:
    agent = client.agent()
    kept_payload = b"kept" * INLINE_MAX  # a blob
    kept = client.create(agent, kept_payload)
    inline = client.create(agent, b"inline")
    orphan = client.key(agent, "ckpt_orphan")
    client.blobs.put(orphan, b"no manifest")
    writer = client.blobs.writer()
    writer.write(b"abandoned upload")
    writer.close()  # a temporary blob no one will commit
    tmp = writer.tmp_key  # (the server's own uploads would be protected; this one is not)

    def ours(keys: Any) -> list[str]:  # GC covers every namespace of this shared server
        return sorted(k for k in keys if k.startswith(client.namespace + "/") or k == tmp)

    patient = client.recovery.CollectGarbage(pb.CollectGarbageRequest())  # 1 h grace
    assert ours(patient.deleted_blobs) == []
    now = duration_pb2.Duration(seconds=0)
    dry = client.recovery.CollectGarbage(pb.CollectGarbageRequest(grace_period=now, dry_run=True))
    expected = sorted([orphan, tmp])
    assert ours(dry.deleted_blobs) == expected
    assert len(client.keys(temporary=True)) == 3
    done = client.recovery.CollectGarbage(pb.CollectGarbageRequest(grace_period=now))
    assert ours(done.deleted_blobs) == expected and done.freed_bytes > 0
    assert client.keys(temporary=True) == [client.key(agent, kept.checkpoint_id)]
    assert client.download(kept.checkpoint_id)[1] == kept_payload
    assert client.download(inline.checkpoint_id)[1] == b"inline"


# -- big payloads and compression ------------------------------------------------------------------
def test_large_payloads_stream_through_upload_and_download(client: Client) -> None:
    # 64 MiB on file://; on memory:// (held in this process) and on the moto server 12 MiB,
    # still several S3 multipart pieces.
    mib = 64 if client.blobs.protocol == "file" else 12
    agent = client.agent()
    block = os.urandom(MiB)
    digest = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        for n in range(mib):
            chunk = bytes([n]) + block[1:]
            digest.update(chunk)
            yield chunk

    made = client.upload(agent, chunks())
    assert made.size_bytes == mib * MiB and made.sha256 == digest.hexdigest()
    stream = client.recovery.DownloadCheckpoint(
        pb.DownloadCheckpointRequest(checkpoint_id=made.checkpoint_id)
    )
    assert next(stream).checkpoint == made
    check, total, sizes = hashlib.sha256(), 0, set()
    for message in stream:
        check.update(message.chunk)
        total += len(message.chunk)
        sizes.add(len(message.chunk))
    assert total == mib * MiB and check.hexdigest() == made.sha256
    assert max(sizes) <= MiB  # streamed in pieces, never as one message


def test_zstd_compression_is_invisible_to_clients(settings: Settings) -> None:
    zstd = replace(
        settings,
        blob_url=f"file://{Path(settings.data_dir) / 'z'}",
        blob_compression="zstd",
        retention_interval=0,
    )
    running = ServerThread(zstd).start()
    client = Client(running.target, zstd)
    try:
        agent = client.agent()
        payload = b"compressible " * 200_000
        made = client.upload(agent, [payload[i : i + MiB] for i in range(0, len(payload), MiB)])
        assert (made.compression, made.size_bytes, made.sha256) == (
            "zstd",
            len(payload),
            sha(payload),
        )
        assert client.download(made.checkpoint_id)[1] == payload
        stored = client.blobs.fs.size(client.blobs.path(client.keys()[0]))
        assert stored < len(payload) // 20
    finally:
        client.close()
        running.close()


@pytest.mark.s3
def test_blob_options_the_backend_does_not_take_refuse_the_start(
    s3: S3Endpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = Settings(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        log_level="WARNING",
        blob_url=f"s3://{s3.bucket()}/cp",
    )
    # "retries" is botocore's word, not an s3fs argument: s3fs only fails on first use.
    wrong = replace(base, blob_options=json.dumps(s3.storage_options | {"retries": 3}))
    server = ServerThread(wrong)
    try:
        with pytest.raises(ConfigError, match="blob_options: the s3:// backend does not take"):
            server.start()
    finally:
        server.close()
    # A store that does not answer is no reason to refuse: only checkpoints need it.
    unreachable = {
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
        "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
    }
    running = ServerThread(replace(base, blob_options=json.dumps(unreachable))).start()
    try:
        client = Client(running.target, running.settings)
        client.agent()  # the rest of the service answers
        client.close()
    finally:
        running.close()
    assert any("did not answer" in r.getMessage() for r in caplog.records)


# -- a crash in the middle of an upload -----------------------------------------------------------
@pytest.mark.slow
def test_sigkill_during_upload_leaves_an_orphan_that_gc_collects(tmp_path: Path) -> None:
    # SQLite only: what a crash leaves is decided by the blob store and the order of the
    # two commits, the same on both databases; a server subprocess start costs seconds.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'stateward.db'}", data_dir=str(tmp_path / "data")
    )
    port = free_port()
    data = Path(settings.data_dir)
    blob_root = data / "blobs"
    args = [
        "--database-url",
        settings.database_url,
        "--data-dir",
        str(data),
        "--blob-url",
        f"file://{blob_root}",
        "--retention-interval",
        "0",
        "--sqlite-synchronous",
        "FULL",
    ]
    server = ServerProcess(port, args).start()
    try:
        client = Client(server.target, replace(settings, blob_url=f"file://{blob_root}"))
        agent = client.agent(state={"safe": True})
        earlier_payload = b"earlier checkpoint " * INLINE_MAX  # a blob
        earlier = client.create(agent, earlier_payload)

        sent = threading.Event()
        stop = threading.Event()

        def slow_chunks() -> Iterator[bytes]:
            for n in range(1000):
                if stop.is_set():
                    return
                yield os.urandom(256 * 1024)
                if n == 8:
                    sent.set()
                time.sleep(0.02)

        outcome: list[BaseException] = []

        def upload() -> None:
            try:
                client.upload(agent, slow_chunks())
            except BaseException as error:  # the server dies under it
                outcome.append(error)

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        assert sent.wait(30)
        deadline = time.monotonic() + 30
        tmp_dir = blob_root / ".tmp"
        while time.monotonic() < deadline:
            partial = (
                [p for p in tmp_dir.glob("*") if p.stat().st_size > 0] if tmp_dir.exists() else []
            )
            if partial:
                break
            time.sleep(0.05)
        assert partial, "the server never started writing the upload"
        server.kill()
        stop.set()
        uploader.join(30)
        assert outcome and isinstance(outcome[0], grpc.RpcError)
        client.close()

        server.start()
        client = Client(server.target, replace(settings, blob_url=f"file://{blob_root}"))
        listed = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest(agent_id=agent))
        assert [c.checkpoint_id for c in listed.checkpoints] == [earlier.checkpoint_id]
        assert client.download(earlier.checkpoint_id)[1] == earlier_payload
        orphans = [k for k in client.keys(temporary=True) if k.startswith(".tmp/")]
        assert len(orphans) == 1
        collected = client.recovery.CollectGarbage(
            pb.CollectGarbageRequest(grace_period=duration_pb2.Duration(seconds=0))
        )
        assert list(collected.deleted_blobs) == orphans
        assert client.keys(temporary=True) == [client.key(agent, earlier.checkpoint_id)]
        assert client.download(earlier.checkpoint_id)[1] == earlier_payload
        client.close()
    finally:
        server.kill()
