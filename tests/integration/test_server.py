"""The server as a whole: health, reflection, a handler for every RPC, and
`stateward serve` as a process.

The process tests run the real command line on SQLite in a temp data dir: start,
health while the database is not ready, graceful SIGTERM with a call in flight,
migration refusals, and the issue's "Done when" walk from a client that is built
from protos/ alone in another process.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from stateward.server.config import Settings
from stateward.storage import Database, migrate
from stateward.v1 import execution_pb2, lifecycle_pb2, lifecycle_pb2_grpc, recovery_pb2, state_pb2
from tests.support.postgres import free_port
from tests.support.server import ServerProcess, ServerThread

PROTOS = Path(__file__).resolve().parents[2] / "protos"
SERVICES = {
    "stateward.v1.LifecycleService": lifecycle_pb2,
    "stateward.v1.StateService": state_pb2,
    "stateward.v1.ExecutionService": execution_pb2,
    "stateward.v1.RecoveryService": recovery_pb2,
}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health(target: str, service: str = "") -> int | None:
    """The health status at ``target``, or None if the server does not answer."""
    try:
        with grpc.insecure_channel(target) as channel:
            request = health_pb2.HealthCheckRequest(service=service)
            return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status)
    except grpc.RpcError:
        return None


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def stateward(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the ``stateward`` command line in a child process."""
    command = [
        sys.executable,
        "-c",
        "from stateward.client.cli import main; raise SystemExit(main())",
    ]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)


def serve_until_exit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``stateward serve`` that is expected to refuse to start."""
    return stateward(
        "serve",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--log-level",
        "WARNING",
        *args,
        timeout=timeout,
    )


# -- in-process server, both databases --------------------------------------------------------


def test_health_is_serving_overall_and_per_service(server: ServerThread) -> None:
    for service in ["", *SERVICES]:
        assert health(server.target, service) == SERVING, service
    with grpc.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="stateward.v1.NoSuchService"), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_all_four_services(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        listed = set(database.get_services())
        assert set(SERVICES) <= listed
        assert "grpc.health.v1.Health" in listed
        pool = descriptor_pool.DescriptorPool(database)
        for name, module in SERVICES.items():
            reflected = pool.FindServiceByName(name)
            local = module.DESCRIPTOR.services_by_name[name.rsplit(".", 1)[1]]
            assert [m.name for m in reflected.methods] == [m.name for m in local.methods]


def _call_empty(channel: grpc.Channel, method: MethodDescriptor) -> grpc.RpcError | None:
    """Call ``method`` with an empty request; the error it answers with, if any."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    plain = {"request_serializer": lambda _: b"", "response_deserializer": lambda raw: raw}
    try:
        if method.client_streaming and method.server_streaming:
            list(channel.stream_stream(path, **plain)(iter(()), timeout=2))
        elif method.client_streaming:
            channel.stream_unary(path, **plain)(iter(()), timeout=2)
        elif method.server_streaming:
            list(channel.unary_stream(path, **plain)(b"", timeout=2))
        else:
            channel.unary_unary(path, **plain)(b"", timeout=2)
    except grpc.RpcError as error:
        return error
    return None


def test_every_rpc_of_the_contract_is_implemented(server: ServerThread) -> None:
    """No RPC answers UNIMPLEMENTED: every method of the four services has a handler."""
    with grpc.insecure_channel(server.target) as channel:
        for name, module in SERVICES.items():
            service = module.DESCRIPTOR.services_by_name[name.rsplit(".", 1)[1]]
            for method in service.methods:
                error = _call_empty(channel, method)
                code = error.code() if error is not None else grpc.StatusCode.OK
                assert code != grpc.StatusCode.UNIMPLEMENTED, method.full_name


def _call_raw(channel: grpc.Channel, method: MethodDescriptor, raw: bytes) -> grpc.RpcError | None:
    """Send ``raw`` as the (only) request message of ``method``."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    plain = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    try:
        if method.client_streaming and method.server_streaming:
            list(channel.stream_stream(path, **plain)(iter([raw]), timeout=5))
        elif method.client_streaming:
            channel.stream_unary(path, **plain)(iter([raw]), timeout=5)
        elif method.server_streaming:
            list(channel.unary_stream(path, **plain)(raw, timeout=5))
        else:
            channel.unary_unary(path, **plain)(raw, timeout=5)
    except grpc.RpcError as error:
        return error
    return None


def test_malformed_request_bytes_are_invalid_argument_on_every_rpc(server: ServerThread) -> None:
    """Bytes that do not parse as the request message are never UNKNOWN or INTERNAL."""
    corrupt = {
        "truncated": b"\x0a\x05ab",
        "garbage": b"\xff\xff\xff\xff",
        "string field not UTF-8": b"\x0a\x01\xff",
    }
    with grpc.insecure_channel(server.target) as channel:
        for name, module in SERVICES.items():
            service = module.DESCRIPTOR.services_by_name[name.rsplit(".", 1)[1]]
            for method in service.methods:
                for what, raw in corrupt.items():
                    if what == "string field not UTF-8":
                        first = method.input_type.fields_by_number.get(1)
                        if first is None or first.type != first.TYPE_STRING:
                            continue
                    error = _call_raw(channel, method, raw)
                    assert error is not None, (method.full_name, what)
                    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                        method.full_name,
                        what,
                        error.code(),
                        error.details(),
                    )
                    assert method.name in (error.details() or "")


def test_a_client_built_from_protos_walks_the_lifecycle(
    server: ServerThread, tmp_path: Path
) -> None:
    """The issue's "Done when": another process, stubs generated from protos/ only."""
    script = textwrap.dedent(
        """
        import json, sys
        import os
        import grpc_tools
        from grpc_tools import protoc
        protos, out, target = sys.argv[1:]
        well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        files = [f"{protos}/stateward/v1/{name}.proto" for name in ("common", "lifecycle")]
        assert protoc.main(["protoc", f"-I{protos}", f"-I{well_known}", f"--python_out={out}",
                            f"--grpc_python_out={out}", *files]) == 0
        # Regular packages here shadow an installed stateward (a namespace package).
        for package in ("stateward", "stateward/v1"):
            open(os.path.join(out, package, "__init__.py"), "a").close()
        sys.path.insert(0, out)
        import grpc
        from stateward.v1 import lifecycle_pb2 as pb, lifecycle_pb2_grpc
        assert pb.__file__.startswith(out), pb.__file__
        ours = ("stateward.server", "stateward.client")
        assert not [m for m in sys.modules if m.startswith(ours)]
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(grpc.insecure_channel(target))
        walk = [stub.CreateAgent(pb.CreateAgentRequest(agent_id="walker", type="demo")).agent]
        for method in ("InitializeAgent", "ActivateAgent", "PauseAgent", "ResumeAgent",
                       "TerminateAgent"):
            request = getattr(pb, method + "Request")(agent_id="walker", reason="done-when")
            walk.append(getattr(stub, method)(request).agent)
        trail = stub.ListTransitions(pb.ListTransitionsRequest(agent_id="walker")).transitions
        print(json.dumps({
            "walk": [pb.AgentStatus.Name(a.status) for a in walk],
            "trail": [pb.AgentStatus.Name(t.to_status) for t in trail],
        }))
        """
    )
    out = tmp_path / "generated"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script, str(PROTOS), str(out), server.target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    expected = [
        f"AGENT_STATUS_{s}"
        for s in ("CREATED", "INITIALIZED", "ACTIVE", "PAUSED", "ACTIVE", "TERMINATED")
    ]
    assert result["walk"] == expected
    assert result["trail"] == expected
    with grpc.insecure_channel(server.target) as channel:
        agent = (
            lifecycle_pb2_grpc.LifecycleServiceStub(channel)
            .GetAgent(lifecycle_pb2.GetAgentRequest(agent_id="walker"))
            .agent
        )
    assert agent.status == lifecycle_pb2.AGENT_STATUS_TERMINATED


# -- `stateward serve` as a process, on SQLite -------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def process() -> Iterator[list[ServerProcess]]:
    """Processes a test started; killed if the test left them running."""
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        proc.kill()


def migrated(data_dir: Path) -> Path:
    """An up-to-date database in ``data_dir``, made in-process (faster than a child)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "stateward.db"
    db = Database(f"sqlite:///{path}")
    try:
        migrate.upgrade(db.write_engine)
    finally:
        db.close()
    return path


def test_serve_reports_not_serving_until_ready_then_drains_on_sigterm(
    data_dir: Path, process: list[ServerProcess]
) -> None:
    path = migrated(data_dir)
    lock = sqlite3.connect(path, isolation_level=None, timeout=30)
    lock.execute("BEGIN IMMEDIATE")  # the server's migration check must wait for this
    server = ServerProcess(free_port(), ["--data-dir", str(data_dir), "--grace-period", "30"])
    process.append(server)
    command = [
        sys.executable,
        "-c",
        "from stateward.client.cli import main; raise SystemExit(main())",
        "serve",
        "--listen",
        server.target,
        "--log-level",
        "WARNING",
        *server.args,
    ]
    server.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Bound and answering, but the database is not ready: NOT_SERVING, per service too.
        wait_for(
            lambda: health(server.target) == NOT_SERVING, "NOT_SERVING while the database is locked"
        )
        for service in SERVICES:
            assert health(server.target, service) == NOT_SERVING
    finally:
        lock.execute("ROLLBACK")
    wait_for(lambda: health(server.target) == SERVING, "SERVING once the database is ready")

    with grpc.insecure_channel(server.target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        stub.CreateAgent(lifecycle_pb2.CreateAgentRequest(agent_id="before", type="t"), timeout=10)
        # Hold the database so the next write stays in flight across SIGTERM.
        lock.execute("BEGIN IMMEDIATE")
        try:
            in_flight = stub.CreateAgent.future(
                lifecycle_pb2.CreateAgentRequest(agent_id="in-flight", type="t"), timeout=60
            )
            # A later call on the same connection answering means the server has the first one.
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            time.sleep(0.2)
            assert not in_flight.done()
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: health(server.target) != SERVING, "NOT_SERVING after SIGTERM")
            assert not in_flight.done()
        finally:
            lock.execute("ROLLBACK")
        assert in_flight.result(timeout=60).agent.agent_id == "in-flight"
    assert server.proc is not None
    code = server.proc.wait(60)
    stderr = server.proc.stderr.read().decode() if server.proc.stderr else ""
    server.proc = None
    assert code == 0, stderr
    assert "Traceback" not in stderr
    # The drained write is durable.
    check = sqlite3.connect(path)
    try:
        ids = {row[0] for row in check.execute("SELECT agent_id FROM agents")}
    finally:
        check.close()
    assert ids == {"before", "in-flight"}
    lock.close()


def test_no_migrate_refuses_an_empty_database_until_db_upgrade(
    data_dir: Path, process: list[ServerProcess]
) -> None:
    refused = serve_until_exit("--data-dir", str(data_dir), "--no-migrate")
    assert refused.returncode != 0
    assert "stateward db upgrade" in refused.stderr
    assert "no Stateward schema" in refused.stderr
    assert "Traceback" not in refused.stderr

    upgraded = stateward("db", "upgrade", "--data-dir", str(data_dir))
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"revision {migrate.head_revision()}" in upgraded.stdout

    server = ServerProcess(free_port(), ["--data-dir", str(data_dir), "--no-migrate"]).start()
    process.append(server)
    with grpc.insecure_channel(server.target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        created = stub.CreateAgent(
            lifecycle_pb2.CreateAgentRequest(agent_id="a", type="t"), timeout=10
        )
    assert created.agent.status == lifecycle_pb2.AGENT_STATUS_CREATED
    # SIGINT (Ctrl-C) stops as gracefully as SIGTERM.
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(30) == 0


def test_a_database_from_a_newer_stateward_is_refused(data_dir: Path, tmp_path: Path) -> None:
    path = migrated(data_dir)
    stamp = sqlite3.connect(path)
    with stamp:
        stamp.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    stamp.close()
    refused = serve_until_exit("--data-dir", str(data_dir))
    assert refused.returncode != 0
    assert (
        "9999_from_the_future" in refused.stderr and "newer than this Stateward" in refused.stderr
    )
    assert "Traceback" not in refused.stderr, refused.stderr
    # The same refusal in-process, with and without migrating on start (cheaper than children).
    for migrate_on_start in (True, False):
        settings = Settings(
            listen="127.0.0.1:0",
            data_dir=str(data_dir),
            migrate=migrate_on_start,
            log_level="WARNING",
        )
        server = ServerThread(settings)
        try:
            with pytest.raises(migrate.SchemaMismatch, match="newer than this Stateward"):
                server.start()
        finally:
            server.close()
    # What `stateward db upgrade` runs.
    db = Database(f"sqlite:///{path}")
    try:
        with pytest.raises(migrate.SchemaMismatch, match="upgrade Stateward before serving"):
            migrate.upgrade(db.write_engine)
    finally:
        db.close()


@pytest.mark.parametrize("choice", ["auto", "asyncio"])
def test_serve_runs_on_the_chosen_event_loop(
    data_dir: Path, process: list[ServerProcess], choice: str
) -> None:
    expected = "asyncio" if choice == "asyncio" else "uvloop"
    if expected == "uvloop":
        pytest.importorskip("uvloop")
    server = ServerProcess(
        free_port(),
        ["--data-dir", str(data_dir), "--log-level", "INFO", "--log-format", "json"]
        + ["--event-loop", choice],
    )
    process.append(server)
    server.start()
    with grpc.insecure_channel(server.target) as channel:  # and it serves
        lifecycle_pb2_grpc.LifecycleServiceStub(channel).CreateAgent(
            lifecycle_pb2.CreateAgentRequest(agent_id="on-loop", type="t"), timeout=10
        )
    assert server.terminate() == 0
    lines = [json.loads(line) for line in server.stderr_text().splitlines() if line.strip()]
    listening = [line for line in lines if line.get("message") == "listening"]
    assert [line["event_loop"] for line in listening] == [expected]
