"""Hostile input to every RPC: the server never answers INTERNAL or UNKNOWN, never touches a
file outside its roots, and is SERVING afterwards (issue 6, part 6).

RPCs are read from the service descriptors, so a new RPC is fuzzed without editing this file.
One real server per database backend; a few real agents, runs and checkpoints are seeded so
valid-looking ids reach existing records. The number of cases is printed at the end of the
session (tests/fuzz/conftest.py) and must reach MIN_CASES per backend.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateward.server.config import Settings
from stateward.server.services.checkpoints import INLINE_MAX
from stateward.v1 import (
    common_pb2,
    execution_pb2,
    execution_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    recovery_pb2,
    recovery_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)
from tests.fuzz import strategies as hs
from tests.support.server import ServerThread

MODULES = (lifecycle_pb2, state_pb2, execution_pb2, recovery_pb2)
SERVICES = ("LifecycleService", "StateService", "ExecutionService", "RecoveryService")
METHODS: list[MethodDescriptor] = [
    method
    for module in MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    if service.name in SERVICES
    for method in service.methods
]
EXAMPLES_PER_RPC = 40
MIN_CASES = 2000
CALL_TIMEOUT = 20.0
STREAM_TIMEOUT = 0.2  # a subscription that is accepted just runs until this deadline
NEVER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
STREAM_ENDS = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)

CASES: Counter[tuple[str, str]] = Counter()  # (backend, RPC) -> cases sent

# -- file audit ---------------------------------------------------------------------------------
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
WRITE_EVENTS = {
    "os.mkdir": 1,
    "os.rename": 2,
    "os.remove": 1,
    "os.rmdir": 1,
    "os.truncate": 1,
    "os.link": 2,
    "os.symlink": 2,
    "os.chmod": 1,
    "os.utime": 1,
    "shutil.rmtree": 1,
    "shutil.move": 2,
    "shutil.copyfile": 2,
    "sqlite3.connect": 1,
}
TOUCHED: list[tuple[str, str]] = []  # (event, path) recorded while AUDITING is set
AUDITING = threading.Event()


def audit(event: str, args: tuple[Any, ...]) -> None:
    if not AUDITING.is_set() or threading.current_thread() is threading.main_thread():
        return  # the server runs in other threads; the main one is pytest's and hypothesis'
    paths: tuple[Any, ...] = ()
    if event == "open":
        path, mode, flags = (args + (None, None, None))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE_FLAGS
        )
        paths = (path,) if writes else ()
    elif event in WRITE_EVENTS:
        paths = args[: WRITE_EVENTS[event]]
    for path in paths:
        if isinstance(path, (str, bytes, os.PathLike)):
            TOUCHED.append((event, os.fsdecode(path)))


sys.addaudithook(audit)  # cannot be removed: it only records while AUDITING is set


def outside(path: str, roots: list[Path]) -> bool:
    if path in (":memory:", "") or path.startswith("file::memory:"):
        return False
    real = Path(os.path.realpath(os.path.abspath(path)))
    if "__pycache__" in real.parts:  # the import system writing bytecode, not the server
        return False
    return not any(real == root or root in real.parents for root in roots)


# -- the server ---------------------------------------------------------------------------------
class Fuzzed:
    """The server under test, a channel to it and what was seeded."""

    def __init__(self, backend: str, server: ServerThread, roots: list[Path]) -> None:
        self.backend = backend
        self.server = server
        self.roots = roots
        self.channel = grpc.insecure_channel(server.target)
        self.seeds = hs.Seeds()

    def callable(self, method: MethodDescriptor) -> Any:
        path = f"/{method.containing_service.full_name}/{method.name}"
        kind = (
            ("stream" if method.client_streaming else "unary")
            + "_"
            + ("stream" if method.server_streaming else "unary")
        )
        return getattr(self.channel, kind)(
            path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=bytes
        )


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzzed]:
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    data, blobs, archives = root / "data", root / "blobs", root / "archives"
    data.mkdir()
    if request.param == "sqlite":
        database_url = f"sqlite:///{data / 'stateward.db'}"
    else:
        database_url = request.getfixturevalue("postgres").create_database()
    config = Settings(
        listen="127.0.0.1:0",
        data_dir=str(data),
        database_url=database_url,
        blob_url=f"file://{blobs}",
        archive_url=f"file://{archives}",
        grace_period=0.5,
        log_level="CRITICAL",
        sweep_interval=0.05,
    )
    roots = [Path(os.path.realpath(p)) for p in (data, blobs, archives)]
    roots.append(Path(os.path.realpath(tmp_path_factory.getbasetemp())))
    roots += [Path(os.path.realpath(p)) for p in sys.path if "site-packages" in p]
    TOUCHED.clear()
    AUDITING.set()
    server = ServerThread(config).start()
    fuzz = Fuzzed(request.param, server, roots)
    try:
        seed(fuzz)
        yield fuzz
    finally:
        fuzz.channel.close()
        server.close()
        AUDITING.clear()


def seed(fuzz: Fuzzed) -> None:
    """Real agents, states, runs, task runs, checkpoints and page tokens in the namespace."""
    md = [("x-stateward-namespace", hs.NAMESPACE)]
    stub_l = lifecycle_pb2_grpc.LifecycleServiceStub(fuzz.channel)
    state = state_pb2_grpc.StateServiceStub(fuzz.channel)
    exe = execution_pb2_grpc.ExecutionServiceStub(fuzz.channel)
    rec = recovery_pb2_grpc.RecoveryServiceStub(fuzz.channel)
    ids: dict[str, list[str]] = {k: [] for k in hs.ID_KINDS}
    for n in range(3):
        agent_id = f"fuzz-agent-{n}"
        stub_l.CreateAgent(
            lifecycle_pb2.CreateAgentRequest(agent_id=agent_id, type="fuzzer"), metadata=md
        )
        stub_l.InitializeAgent(lifecycle_pb2.InitializeAgentRequest(agent_id=agent_id), metadata=md)
        ids["agent_id"].append(agent_id)
        state.SaveState(
            state_pb2.SaveStateRequest(agent_id=agent_id, document_json=b'{"n": %d}' % n),
            metadata=md,
        )
        run = exe.StartWorkflowRun(
            execution_pb2.StartWorkflowRunRequest(workflow_name="job-a", agent_id=agent_id),
            metadata=md,
        ).run
        ids["run_id"].append(run.run_id)
        task = exe.StartTaskRun(
            execution_pb2.StartTaskRunRequest(run_id=run.run_id, task_id="t1", agent_id=agent_id),
            metadata=md,
        ).task_run
        ids["task_run_id"].append(task.task_run_id)
        if n == 0:
            exe.CompleteTaskRun(
                execution_pb2.CompleteTaskRunRequest(
                    task_run_id=task.task_run_id, result_json=b"{}"
                ),
                metadata=md,
            )
            exe.FailWorkflowRun(
                execution_pb2.FailWorkflowRunRequest(
                    run_id=run.run_id, error=common_pb2.ErrorDetail(message="boom")
                ),
                metadata=md,
            )
        # The first payload is too large to be stored inline: one blob file for the audit.
        size = INLINE_MAX + 1 if n == 0 else n + 1
        checkpoint = rec.CreateCheckpoint(
            recovery_pb2.CreateCheckpointRequest(agent_id=agent_id, payload=b"x" * size),
            metadata=md,
        ).checkpoint
        ids["checkpoint_id"].append(checkpoint.checkpoint_id)
    tokens = [
        stub_l.ListAgents(lifecycle_pb2.ListAgentsRequest(page_size=1), metadata=md),
        exe.ListWorkflowRuns(execution_pb2.ListWorkflowRunsRequest(page_size=1), metadata=md),
        rec.ListCheckpoints(
            recovery_pb2.ListCheckpointsRequest(agent_id=ids["agent_id"][0], page_size=1),
            metadata=md,
        ),
        exe.ListEvents(execution_pb2.ListEventsRequest(page_size=1), metadata=md),
        stub_l.ListTransitions(
            lifecycle_pb2.ListTransitionsRequest(agent_id=ids["agent_id"][0], page_size=1),
            metadata=md,
        ),
    ]
    fuzz.seeds = hs.Seeds(
        ids=ids, page_tokens=[t.next_page_token for t in tokens if t.next_page_token]
    )
    assert fuzz.seeds.page_tokens, "seeding produced no page token to reuse"


# -- the cases ----------------------------------------------------------------------------------
def describe(requests: Any, metadata: list[tuple[str, str]]) -> str:
    text = repr(requests)
    if len(text) > 3000:
        text = text[:3000] + f"... ({len(text)} characters)"
    return f"metadata={metadata!r}\nrequest={text}"


def send(fuzz: Fuzzed, method: MethodDescriptor, data: st.DataObject) -> None:
    md = data.draw(hs.metadata(), label="metadata")
    call = fuzz.callable(method)
    if method.client_streaming:
        requests = data.draw(
            st.lists(hs.message(method.input_type, fuzz.seeds), max_size=6), label="requests"
        )
    else:
        requests = data.draw(hs.message(method.input_type, fuzz.seeds), label="request")
    CASES[(fuzz.backend, method.full_name)] += 1
    try:
        if method.server_streaming:
            for _ in call(requests, timeout=STREAM_TIMEOUT, metadata=md):
                pass
        elif method.client_streaming:
            call(iter(requests), timeout=CALL_TIMEOUT, metadata=md)
        else:
            call(requests, timeout=CALL_TIMEOUT, metadata=md)
    except grpc.RpcError as error:
        code = error.code()
        if method.server_streaming and code in STREAM_ENDS:
            return
        assert code not in NEVER, (
            f"{method.full_name} answered {code.name}: {error.details()}\n{describe(requests, md)}"
        )
        assert code != grpc.StatusCode.DEADLINE_EXCEEDED, (
            f"{method.full_name} took over {CALL_TIMEOUT}s\n{describe(requests, md)}"
        )


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name.removeprefix("stateward.v1."))
@settings(
    derandomize=True,
    deadline=None,
    max_examples=EXAMPLES_PER_RPC,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(data=st.data())
def test_hostile_requests(fuzzed: Fuzzed, method: MethodDescriptor, data: st.DataObject) -> None:
    send(fuzzed, method, data)


def test_every_rpc_got_cases_and_the_server_is_unharmed(fuzzed: Fuzzed) -> None:
    sent = {name: n for (backend, name), n in CASES.items() if backend == fuzzed.backend}
    starved = [m.full_name for m in METHODS if sent.get(m.full_name, 0) < EXAMPLES_PER_RPC // 2]
    assert not starved, f"RPCs without enough hostile cases: {starved}"
    assert sum(sent.values()) >= MIN_CASES, f"only {sum(sent.values())} cases"
    with grpc.insecure_channel(fuzzed.server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert any(not outside(path, fuzzed.roots[:3]) for _, path in TOUCHED), "the audit saw nothing"
    strays = sorted({f"{event} {path}" for event, path in TOUCHED if outside(path, fuzzed.roots)})
    assert not strays, "the server touched files outside its roots:\n" + "\n".join(strays)
