"""TLS, mutual TLS, bearer tokens bound to roles and namespaces, SIGHUP reload, and
request ids in logs and errors, over real servers (in-thread and as a subprocess).

Auth is decided from metadata before any handler runs, so the role and namespace
matrices run on SQLite only; the cross-namespace probes, which compare answers for
records that exist with answers for records that do not, run on both databases.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from stateward.server import config
from stateward.server.config import Settings
from stateward.server.security import policy
from stateward.server.security.auth import generate_token, hash_token, load_tokens
from stateward.server.security.policy import Role
from stateward.server.security.tls import TLSConfigError
from stateward.v1 import execution_pb2, lifecycle_pb2, lifecycle_pb2_grpc, recovery_pb2, state_pb2
from tests.support.certs import Certificates, Pem, make_certificates
from tests.support.server import ServerThread, wait_serving

NS_KEY = "x-stateward-namespace"
REPO = Path(__file__).resolve().parents[2]
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}

METHODS: list[tuple[str, MethodDescriptor]] = [
    (f"/{service.full_name}/{method.name}", method)
    for module in (lifecycle_pb2, state_pb2, execution_pb2, recovery_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
READ_METHODS = [(full, m) for full, m in METHODS if policy.RULES[full].role is Role.READER]


# -- servers, channels and generic calls ------------------------------------------------------


def thread_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        database_url=f"sqlite:///{tmp_path / 'stateward.db'}",
        grace_period=0.2,
        log_level="WARNING",
        **overrides,
    )


@pytest.fixture
def running() -> Iterator[Callable[[Settings], ServerThread]]:
    started: list[ServerThread] = []

    def start(settings: Settings) -> ServerThread:
        server = ServerThread(settings)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


class Tokens:
    """A token file with one token per (role, namespaces) the tests need."""

    SPECS = {
        "reader-a": ("reader", '["team-a"]'),
        "writer-a": ("writer", '["team-a"]'),
        "admin-a": ("admin", '["team-a"]'),
        "admin-all": ("admin", '"*"'),
    }

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tokens = {name: generate_token() for name in self.SPECS}
        self.write(self.tokens)

    def write(self, tokens: dict[str, str]) -> None:
        entries = []
        for name, token in tokens.items():
            role, namespaces = self.SPECS.get(name, ("reader", '["team-a"]'))
            entries.append(
                f'[[tokens]]\nname = "{name}"\nhash = "{hash_token(token)}"\n'
                f'role = "{role}"\nnamespaces = {namespaces}\n'
            )
        self.path.write_text("\n".join(entries))

    def __getitem__(self, name: str) -> str:
        return self.tokens[name]


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path / "tokens.toml")


def metadata(token: str | None, namespace: str = "team-a", **extra: str) -> list[tuple[str, str]]:
    pairs = [(NS_KEY, namespace), *((k.replace("_", "-"), v) for k, v in extra.items())]
    if token is not None:
        pairs.append(("authorization", f"Bearer {token}"))
    return pairs


def request_for(method: MethodDescriptor, agent_id: str) -> Message:
    """The method's request with every agent id field naming ``agent_id``."""
    request = GetMessageClass(method.input_type)()
    for field in method.input_type.fields:
        if field.name == "agent_id":
            setattr(request, field.name, agent_id)
        elif field.name == "agent_ids":
            getattr(request, field.name).append(agent_id)
    return request


def invoke(
    channel: grpc.Channel,
    full: str,
    method: MethodDescriptor,
    request: Message,
    md: list[tuple[str, str]],
) -> grpc.RpcError | None:
    """Call any RPC generically; returns the error, or None when it succeeded."""
    response = GetMessageClass(method.output_type)
    kind = (method.client_streaming, method.server_streaming)
    args = {
        "request_serializer": type(request).SerializeToString,
        "response_deserializer": response.FromString,
    }
    try:
        if kind == (False, False):
            channel.unary_unary(full, **args)(request, metadata=md, timeout=10)
        elif kind == (False, True):  # a subscription may stay open: its deadline ends it
            for _ in channel.unary_stream(full, **args)(request, metadata=md, timeout=0.5):
                pass
        elif kind == (True, False):
            channel.stream_unary(full, **args)(iter([request]), metadata=md, timeout=10)
        else:
            for _ in channel.stream_stream(full, **args)(iter([request]), metadata=md, timeout=0.5):
                pass
    except grpc.RpcError as error:
        return error
    return None


def details(error: grpc.RpcError) -> tuple[status_pb2.Status, dict[str, Any]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"{error.code()} without google.rpc.Status: {error.details()}"
    found: dict[str, Any] = {}
    for packed in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RequestInfo):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found[kind.__name__] = message
    return status, found


# -- TLS and mutual TLS -------------------------------------------------------------------------


def tls_channel(target: str, certs: Certificates, client: Pem | None = None) -> grpc.Channel:
    key, chain = client.read() if client is not None else (None, None)
    credentials = grpc.ssl_channel_credentials(certs.ca_bytes, key, chain)
    return grpc.secure_channel(target, credentials, options=[("grpc.use_local_subchannel_pool", 1)])


def get_agent(channel: grpc.Channel, md: list[tuple[str, str]] | None = None) -> grpc.StatusCode:
    try:
        lifecycle_pb2_grpc.LifecycleServiceStub(channel).GetAgent(
            lifecycle_pb2.GetAgentRequest(agent_id="nobody"), metadata=md, timeout=5
        )
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_plaintext_server_serves_plaintext_clients(tmp_path: Path, running: Any) -> None:
    server = running(thread_settings(tmp_path))
    with grpc.insecure_channel(server.target) as channel:
        assert get_agent(channel) == grpc.StatusCode.NOT_FOUND


def test_tls_server_serves_tls_clients_only(
    tmp_path: Path, running: Any, certs: Certificates
) -> None:
    server = running(
        thread_settings(tmp_path, tls_cert=str(certs.server.cert), tls_key=str(certs.server.key))
    )
    with tls_channel(server.target, certs) as channel:
        assert get_agent(channel) == grpc.StatusCode.NOT_FOUND
    with tls_channel(f"localhost:{server.port}", certs) as channel:
        assert get_agent(channel) == grpc.StatusCode.NOT_FOUND
    with grpc.insecure_channel(server.target) as channel:
        assert get_agent(channel) == grpc.StatusCode.UNAVAILABLE
    stranger_ca = grpc.ssl_channel_credentials(certs.stranger.cert.read_bytes())
    with grpc.secure_channel(server.target, stranger_ca) as channel:
        assert get_agent(channel) == grpc.StatusCode.UNAVAILABLE  # server not trusted


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    tmp_path: Path, running: Any, certs: Certificates
) -> None:
    server = running(
        thread_settings(
            tmp_path,
            tls_cert=str(certs.server.cert),
            tls_key=str(certs.server.key),
            tls_client_ca=str(certs.ca),
        )
    )
    with tls_channel(server.target, certs, certs.client) as channel:
        assert get_agent(channel) == grpc.StatusCode.NOT_FOUND
    with tls_channel(server.target, certs) as channel:
        assert get_agent(channel) == grpc.StatusCode.UNAVAILABLE
    with tls_channel(server.target, certs, certs.stranger) as channel:
        assert get_agent(channel) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(server.target) as channel:
        assert get_agent(channel) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"tls_cert": "server.crt"}, "tls_cert and tls_key go together"),
        ({"tls_client_ca": "ca.crt"}, "tls_client_ca needs tls_cert and tls_key"),
        (
            {"tls_cert": "server.crt", "tls_key": "client.key"},
            "not a matching PEM certificate and key",
        ),
        ({"tls_cert": "server.crt", "tls_key": "absent.key"}, "tls_key: cannot read"),
        (
            {"tls_cert": "server.crt", "tls_key": "server.key", "tls_client_ca": "server.key"},
            "tls_client_ca .* not a PEM CA bundle",
        ),
    ],
)
def test_unusable_tls_files_stop_the_server(
    tmp_path: Path, certs: Certificates, files: dict[str, str], message: str
) -> None:
    folder = certs.ca.parent
    settings = thread_settings(tmp_path, **{k: str(folder / v) for k, v in files.items()})
    server = ServerThread(settings)
    try:
        with pytest.raises(TLSConfigError, match=message):
            server.start()
    finally:
        server.close()


# -- roles and namespaces -----------------------------------------------------------------------


def expected_refusal(token_name: str, full: str) -> str | None:
    role, namespaces = Tokens.SPECS[token_name]
    rule = policy.RULES[full]
    if Role[role.upper()] < rule.role:
        return "ROLE_NOT_GRANTED"
    if rule.every_namespace and namespaces != '"*"':
        return "NAMESPACE_NOT_GRANTED"
    return None


def test_every_rpc_follows_the_role_table(tmp_path: Path, running: Any, tokens: Tokens) -> None:
    server = running(thread_settings(tmp_path, auth_tokens_file=str(tokens.path)))
    checked = 0
    with grpc.insecure_channel(server.target) as channel:
        for full, method in METHODS:
            for name in Tokens.SPECS:
                error = invoke(
                    channel,
                    full,
                    method,
                    request_for(method, "a-1"),
                    metadata(tokens[name], x_request_id=f"matrix-{checked}"),
                )
                refusal = expected_refusal(name, full)
                if refusal is None:
                    assert error is None or error.code() not in REFUSED, (name, full, error)
                else:
                    assert (
                        error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
                    ), (name, full, error)
                    status, found = details(error)
                    assert found["ErrorInfo"].reason == refusal
                    assert found["RequestInfo"].request_id == f"matrix-{checked}"
                checked += 1
    assert checked == 4 * len(METHODS)


def test_missing_and_bad_tokens_are_unauthenticated_on_every_rpc(
    tmp_path: Path, running: Any, tokens: Tokens
) -> None:
    server = running(thread_settings(tmp_path, auth_tokens_file=str(tokens.path)))
    with grpc.insecure_channel(server.target) as channel:
        for full, method in METHODS:
            request = request_for(method, "a-1")
            for md, reason in [
                (metadata(None), "TOKEN_MISSING"),
                (metadata(generate_token()), "TOKEN_INVALID"),
                ([(NS_KEY, "team-a"), ("authorization", "Basic dXNlcjpwYXNz")], "TOKEN_MALFORMED"),
            ]:
                error = invoke(channel, full, method, request, md)
                assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED, full
                assert details(error)[1]["ErrorInfo"].reason == reason


def test_health_and_reflection_stay_open(tmp_path: Path, running: Any, tokens: Tokens) -> None:
    server = running(thread_settings(tmp_path, auth_tokens_file=str(tokens.path)))
    wait_serving(server.target)  # no token
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        names = {s.name for s in replies[0].list_services_response.service}
        assert "stateward.v1.LifecycleService" in names


def test_open_methods_are_configurable(tmp_path: Path, running: Any, tokens: Tokens) -> None:
    server = running(
        thread_settings(
            tmp_path,
            auth_tokens_file=str(tokens.path),
            auth_open_methods="/stateward.v1.LifecycleService/GetAgent",
        )
    )
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert get_agent(channel, metadata(None)) == grpc.StatusCode.NOT_FOUND
        assert (
            health.Check(
                health_pb2.HealthCheckRequest(), metadata=metadata(tokens["reader-a"]), timeout=5
            ).status
            == health_pb2.HealthCheckResponse.SERVING
        )


@pytest.fixture
def probed(settings: Settings, running: Any, tokens: Tokens) -> ServerThread:
    """A server on both databases where namespace team-b holds agent ``secret-agent``."""
    server = running(replace(settings, auth_tokens_file=str(tokens.path)))
    with grpc.insecure_channel(server.target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        owner = metadata(tokens["admin-all"], "team-b")
        stub.CreateAgent(
            lifecycle_pb2.CreateAgentRequest(
                agent_id="secret-agent", type="spy", config_json=b"{}"
            ),
            metadata=owner,
        )
        stub.InitializeAgent(
            lifecycle_pb2.InitializeAgentRequest(agent_id="secret-agent"), metadata=owner
        )
    return server


def test_probing_another_namespace_is_denied_whether_or_not_records_exist(
    probed: ServerThread, tokens: Tokens
) -> None:
    with grpc.insecure_channel(probed.target) as channel:
        for name in ("reader-a", "writer-a", "admin-a"):
            for full, method in METHODS:
                answers = []
                for agent_id in ("secret-agent", "no-such-agent"):
                    error = invoke(
                        channel,
                        full,
                        method,
                        request_for(method, agent_id),
                        metadata(tokens[name], "team-b"),
                    )
                    assert (
                        error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
                    ), (name, full, error)
                    status, found = details(error)
                    info = found["ErrorInfo"]
                    answers.append((status.message, info.reason, dict(info.metadata)))
                    assert "secret-agent" not in status.message
                assert answers[0] == answers[1], (name, full)


def test_a_namespace_never_shows_another_namespaces_records(
    probed: ServerThread, tokens: Tokens
) -> None:
    """Inside its own namespace, a token sees team-b's agent exactly as a missing one."""
    md = metadata(tokens["admin-a"], "team-a")
    with grpc.insecure_channel(probed.target) as channel:
        for full, method in READ_METHODS:
            answers = []
            for agent_id in ("secret-agent", "no-such-agent"):
                error = invoke(channel, full, method, request_for(method, agent_id), md)
                code = grpc.StatusCode.OK if error is None else error.code()
                text = "" if error is None else (error.details() or "").replace(agent_id, "<id>")
                answers.append((code, text))
            assert answers[0] == answers[1], (full, answers)
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        assert list(stub.ListAgents(lifecycle_pb2.ListAgentsRequest(), metadata=md).agents) == []


def test_denials_name_the_missing_grant(tmp_path: Path, running: Any, tokens: Tokens) -> None:
    server = running(thread_settings(tmp_path, auth_tokens_file=str(tokens.path)))
    with grpc.insecure_channel(server.target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.DeleteAgent(
                lifecycle_pb2.DeleteAgentRequest(agent_id="a-1"),
                metadata=metadata(tokens["writer-a"]),
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.details() == "token 'writer-a' has role writer; DeleteAgent needs admin"
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetAgent(
                lifecycle_pb2.GetAgentRequest(agent_id="a-1"),
                metadata=metadata(tokens["reader-a"], "team-b"),
            )
        assert caught.value.details() == "token 'reader-a' is not granted namespace 'team-b'"


def test_token_file_problems_stop_the_server(tmp_path: Path) -> None:
    broken = tmp_path / "tokens.toml"
    broken.write_text(
        '[[tokens]]\nname = "x"\nhash = "swt_oops_a_plain_token_here"\n'
        'role = "reader"\nnamespaces = "*"\n'
    )
    server = ServerThread(thread_settings(tmp_path, auth_tokens_file=str(broken)))
    try:
        with pytest.raises(config.ConfigError, match="stores hashes, never tokens"):
            server.start()
    finally:
        server.close()


# -- a real `stateward serve` process: SIGHUP reload and JSON logs ------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """``stateward serve`` in a child process, its stderr (the log) in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.log = tmp_path / "server.log"
        command = [
            sys.executable,
            "-c",
            "import sys; from stateward.server.main import serve_main; "
            "raise SystemExit(serve_main(sys.argv[1:]))",
            "--listen",
            self.target,
            "--data-dir",
            str(tmp_path / "data"),
            "--grace-period",
            "0.2",
            *args,
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            wait_serving(self.target)
        except TimeoutError:
            self.stop()
            raise AssertionError(f"server did not start:\n{self.log.read_text()}") from None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        started.append(Serve(tmp_path, *args))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_sighup_reloads_the_token_file(serve: Any, tokens: Tokens) -> None:
    process = serve("--auth-tokens-file", str(tokens.path))
    old, new = tokens["reader-a"], generate_token()
    with grpc.insecure_channel(process.target) as channel:
        assert get_agent(channel, metadata(old)) == grpc.StatusCode.NOT_FOUND
        assert get_agent(channel, metadata(new)) == grpc.StatusCode.UNAUTHENTICATED

        tokens.write({"reader-new": new})
        process.proc.send_signal(signal.SIGHUP)
        eventually(lambda: get_agent(channel, metadata(new)) == grpc.StatusCode.NOT_FOUND)
        assert get_agent(channel, metadata(old)) == grpc.StatusCode.UNAUTHENTICATED

        tokens.path.write_text("this is = not [ toml")  # a broken edit keeps the tokens in force
        process.proc.send_signal(signal.SIGHUP)
        eventually(lambda: "NOT reloaded" in process.log.read_text())
        assert get_agent(channel, metadata(new)) == grpc.StatusCode.NOT_FOUND
    assert process.proc.poll() is None


def test_json_logs_carry_request_ids_and_never_tokens_or_documents(
    serve: Any, tokens: Tokens
) -> None:
    process = serve(
        "--auth-tokens-file", str(tokens.path), "--log-format", "json", "--log-level", "DEBUG"
    )
    secret_doc = b'{"api_key": "DOCUMENT-SECRET-4711"}'
    writer = tokens["writer-a"]
    bogus = generate_token()
    with grpc.insecure_channel(process.target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        stub.CreateAgent(
            lifecycle_pb2.CreateAgentRequest(agent_id="a-1", type="t", config_json=secret_doc),
            metadata=metadata(writer, x_request_id="req-create-1"),
        )
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetAgent(
                lifecycle_pb2.GetAgentRequest(agent_id="absent"),
                metadata=metadata(writer, x_request_id="req-missing-2"),
            )
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetAgent(
                lifecycle_pb2.GetAgentRequest(agent_id="a-1"),
                metadata=metadata(bogus, x_request_id="req-refused-3"),
            )
        with pytest.raises(grpc.RpcError) as anonymous:  # no x-request-id: one is generated
            stub.CreateAgent(
                lifecycle_pb2.CreateAgentRequest(
                    agent_id="bad id!", type="t", config_json=secret_doc
                ),
                metadata=metadata(writer),
            )
    process.stop()

    assert details(missing.value)[1]["RequestInfo"].request_id == "req-missing-2"
    assert details(refused.value)[1]["RequestInfo"].request_id == "req-refused-3"
    generated = details(anonymous.value)[1]["RequestInfo"].request_id
    assert len(generated) == 32

    text = process.log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    for needle in (writer, bogus, "DOCUMENT-SECRET-4711", "Bearer"):
        assert needle not in text
    access = {line["request_id"]: line for line in lines if line["message"] == "rpc"}
    assert access["req-create-1"]["code"] == "OK"
    assert access["req-create-1"]["principal"] == "writer-a"
    assert access["req-missing-2"]["code"] == "NOT_FOUND"
    assert access["req-refused-3"]["code"] == "UNAUTHENTICATED"
    assert access[generated]["code"] == "INVALID_ARGUMENT"
    # Lines logged during a call other than the access line carry its id too.
    refusal = [line for line in lines if line["message"] == "auth refused"]
    assert [line["request_id"] for line in refusal] == ["req-refused-3"]
    assert refusal[0]["reason"] == "TOKEN_INVALID"


# -- example configuration ---------------------------------------------------------------------


def test_example_config_loads() -> None:
    example = REPO / "docs" / "examples" / "stateward.toml"
    settings = config.load(environ={"STATEWARD_CONFIG": str(example)})
    assert settings.tls_client_ca and settings.auth_tokens_file and settings.metrics_listen
    assert settings.log_format == "json"


EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.toml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_every_example_file_loads(example: Path) -> None:
    """Configs load with config.load, token files with load_tokens; nothing else is there."""
    table = config.tomllib.loads(example.read_text())
    if "tokens" in table:
        assert load_tokens(str(example)).entries
        return
    assert "stateward" in table, f"{example.name} is neither a config nor a token file"
    settings = config.load(environ={"STATEWARD_CONFIG": str(example)})
    assert settings.listen and settings.resolved_database_url


def test_the_replica_example_shares_database_and_blobs() -> None:
    example = REPO / "docs" / "examples" / "replica.toml"
    settings = config.load(environ={"STATEWARD_CONFIG": str(example)})
    assert settings.resolved_database_url.startswith("postgresql")
    assert settings.blob_url.startswith("s3://") and settings.archive_url.startswith("s3://")
    assert settings.tls_cert and settings.auth_tokens_file and not settings.migrate
