"""Token hashing, the token file, the role table and authorization decisions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stateward.server import request_id
from stateward.server.security import auth, policy
from stateward.server.security.auth import Authorizer, TokenFileError, hash_token, load_tokens
from stateward.server.security.policy import OpenMethods, Role
from stateward.v1 import execution_pb2, lifecycle_pb2, recovery_pb2, state_pb2

READER, WRITER, ADMIN_A, ADMIN_ALL = (auth.generate_token() for _ in range(4))

GET = "/stateward.v1.LifecycleService/GetAgent"
CREATE = "/stateward.v1.LifecycleService/CreateAgent"
DELETE = "/stateward.v1.LifecycleService/DeleteAgent"
GC = "/stateward.v1.RecoveryService/CollectGarbage"


def entry(name: str, token: str, role: str, namespaces: str) -> str:
    return (
        f'[[tokens]]\nname = "{name}"\nhash = "{hash_token(token)}"\n'
        f'role = "{role}"\nnamespaces = {namespaces}\n\n'
    )


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(
        entry("reader-a", READER, "reader", '["team-a"]')
        + entry("writer-ab", WRITER, "writer", '["team-a", "team-b"]')
        + entry("admin-a", ADMIN_A, "admin", '["team-a"]')
        + entry("admin-all", ADMIN_ALL, "admin", '"*"')
    )
    return path


def md(token: str | None, namespace: str | None = "team-a") -> list[tuple[str, str]]:
    pairs = []
    if token is not None:
        pairs.append(("authorization", f"Bearer {token}"))
    if namespace is not None:
        pairs.append(("x-stateward-namespace", namespace))
    return pairs


# -- hashing --------------------------------------------------------------------------


def test_generated_tokens_are_long_random_and_distinct() -> None:
    tokens = {auth.generate_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(t.startswith("swt_") and len(t) >= 40 for t in tokens)


def test_hash_is_salted_and_verifies_only_its_token() -> None:
    token = auth.generate_token()
    first, second = hash_token(token), hash_token(token)
    assert first != second  # a fresh salt each time
    assert token not in first
    assert first.startswith("hmac-sha256:")
    assert auth.verify_token(token, first) and auth.verify_token(token, second)
    assert not auth.verify_token(token + "x", first)
    assert not auth.verify_token(auth.generate_token(), first)


def test_short_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 24"):
        hash_token("password")


# -- the token file ---------------------------------------------------------------------


def test_load_reads_roles_and_namespaces(token_file: Path) -> None:
    table = load_tokens(str(token_file))
    assert len(table) == 4
    reader = table.lookup(READER)
    assert reader is not None and reader.role is Role.READER
    assert reader.grants("team-a") and not reader.grants("team-b")
    everyone = table.lookup(ADMIN_ALL)
    assert everyone is not None and everyone.namespaces is None and everyone.grants("anything")
    assert table.lookup("swt_" + "x" * 43) is None
    assert table.lookup(READER) is reader  # from the seen-token map the second time


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[[tokens]]\nname = 'x'\nhash = 'swt_plaintexttokenxxxxxxxxxxxxxxx'\nrole = 'reader'\n"
            "namespaces = '*'\n",
            "stores hashes, never tokens",
        ),
        (entry("x", READER, "superuser", '"*"'), "role must be one of reader, writer, admin"),
        (entry("x", READER, "reader", "[]"), "non-empty list"),
        (entry("x", READER, "reader", '["Team A"]'), "not a namespace name"),
        (entry("x", READER, "reader", '"team-a"'), "namespaces must be"),
        (
            entry("x", READER, "reader", '"*"') + entry("x", WRITER, "writer", '"*"'),
            "duplicate token names x",
        ),
        (
            entry("x", READER, "reader", '"*"').replace("namespaces", "namespace"),
            "unknown keys namespace",
        ),
        ("[[tokens]]\nname = 'x'\n", "missing hash, namespaces, role"),
        ("token = 'abc'\n", "unknown keys token"),
        ("[[tokens]\n", "not valid TOML"),
    ],
)
def test_bad_token_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(TokenFileError, match=message) as caught:
        load_tokens(str(path))
    assert str(path) in str(caught.value)


def test_missing_token_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read the token file"):
        Authorizer(str(tmp_path / "absent.toml"))


def test_an_empty_file_locks_every_token_out(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text("# no tokens yet\n")
    assert Authorizer(str(path)).authorize(GET, md(READER)).code == "UNAUTHENTICATED"


def test_example_token_file_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tokens.toml"
    table = load_tokens(str(example))
    assert {e.role for e in table.entries} == {Role.READER, Role.WRITER, Role.ADMIN}


# -- decisions -------------------------------------------------------------------------


def test_missing_malformed_and_unknown_tokens_are_unauthenticated(token_file: Path) -> None:
    authz = Authorizer(str(token_file))
    cases = {
        "TOKEN_MISSING": md(None),
        "TOKEN_MALFORMED": [("authorization", READER)],
        "TOKEN_INVALID": md(auth.generate_token()),
    }
    for reason, metadata in cases.items():
        decision = authz.authorize(GET, metadata)
        assert (decision.code, decision.reason) == ("UNAUTHENTICATED", reason)
        assert decision.principal is None
    two = [("authorization", f"Bearer {READER}"), ("authorization", f"Bearer {WRITER}")]
    assert authz.authorize(GET, two).reason == "TOKEN_MALFORMED"
    assert authz.authorize(GET, [("authorization", f"bearer {READER}"), *md(None)]).allowed


def test_roles_are_ordered(token_file: Path) -> None:
    authz = Authorizer(str(token_file))
    expected = {
        READER: {GET: True, CREATE: False, DELETE: False},
        WRITER: {GET: True, CREATE: True, DELETE: False},
        ADMIN_A: {GET: True, CREATE: True, DELETE: True},
    }
    for token, outcomes in expected.items():
        for method, allowed in outcomes.items():
            decision = authz.authorize(method, md(token))
            assert decision.allowed is allowed, (token, method)
            if not allowed:
                assert (decision.code, decision.reason) == ("PERMISSION_DENIED", "ROLE_NOT_GRANTED")


def test_namespaces_must_all_be_granted(token_file: Path) -> None:
    authz = Authorizer(str(token_file))
    assert authz.authorize(GET, md(READER, "team-a")).allowed
    refused = authz.authorize(GET, md(READER, "team-b"))
    assert (refused.code, refused.reason) == ("PERMISSION_DENIED", "NAMESPACE_NOT_GRANTED")
    assert refused.message == "token 'reader-a' is not granted namespace 'team-b'"
    assert not authz.authorize(GET, md(READER, None)).allowed  # "default" is not granted
    assert authz.authorize(GET, md(ADMIN_ALL, None)).allowed
    # A second namespace value cannot smuggle a call into a namespace not granted.
    smuggled = [*md(READER, "team-a"), ("x-stateward-namespace", "team-b")]
    assert authz.authorize(GET, smuggled).reason == "NAMESPACE_NOT_GRANTED"


def test_cluster_wide_rpcs_need_every_namespace(token_file: Path) -> None:
    authz = Authorizer(str(token_file))
    assert authz.authorize(GC, md(ADMIN_A)).reason == "NAMESPACE_NOT_GRANTED"
    assert authz.authorize(GC, md(ADMIN_ALL)).allowed


def test_unclassified_rpcs_fail_closed(token_file: Path) -> None:
    authz = Authorizer(str(token_file))
    method = "/stateward.v1.LifecycleService/SomethingNew"
    assert authz.authorize(method, md(WRITER)).reason == "ROLE_NOT_GRANTED"
    assert authz.authorize(method, md(ADMIN_A)).reason == "NAMESPACE_NOT_GRANTED"
    assert authz.authorize(method, md(ADMIN_ALL)).allowed


def test_reload_swaps_tokens_and_keeps_them_when_the_file_breaks(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    authz = Authorizer(str(token_file))
    newcomer = auth.generate_token()
    token_file.write_text(entry("newcomer", newcomer, "reader", '["team-a"]'))
    assert authz.reload()
    assert authz.authorize(GET, md(newcomer)).allowed
    assert authz.authorize(GET, md(READER)).code == "UNAUTHENTICATED"
    token_file.write_text("[[tokens]]\nname = 'broken'\n")
    with caplog.at_level(logging.ERROR):
        assert not authz.reload()
    assert "previous tokens stay in force" in caplog.text
    assert authz.authorize(GET, md(newcomer)).allowed


# -- the role table -------------------------------------------------------------------------


def test_every_rpc_is_classified() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (lifecycle_pb2, state_pb2, execution_pb2, recovery_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert set(policy.RULES) == methods


def test_reads_are_reader_and_deletes_retention_migrations_admin() -> None:
    def role(name: str) -> Role:
        return next(
            rule.role for method, rule in policy.RULES.items() if method.endswith("/" + name)
        )

    for name in [
        "GetAgent",
        "ListAgents",
        "ListTransitions",
        "GetState",
        "BatchGetStates",
        "ListEvents",
        "SubscribeEvents",
        "DownloadCheckpoint",
        "RecoverAgent",
        "GetCompensationPlan",
        "GetAgentHistory",
    ]:
        assert role(name) is Role.READER, name
    for name in [
        "DeleteAgent",
        "DeleteCheckpoint",
        "PruneCheckpoints",
        "ArchiveRuns",
        "CollectGarbage",
        "MigrateStates",
    ]:
        assert role(name) is Role.ADMIN, name
    for name in [
        "CreateAgent",
        "SaveState",
        "AppendEvents",
        "UploadCheckpoint",
        "ClearState",
        "RestoreCheckpoint",
        "RetryWorkflowRun",
    ]:
        assert role(name) is Role.WRITER, name


def test_open_methods_match_services_and_single_methods() -> None:
    open_methods = OpenMethods("grpc.health.v1.Health, /stateward.v1.LifecycleService/GetAgent,")
    assert "/grpc.health.v1.Health/Check" in open_methods
    assert "/grpc.health.v1.Health/Watch" in open_methods
    assert GET in open_methods
    assert CREATE not in open_methods
    assert "/grpc.health.v1.HealthX/Check" not in open_methods
    assert GET not in OpenMethods("")


# -- request ids ---------------------------------------------------------------------------


def test_request_ids_are_taken_when_safe_and_generated_otherwise() -> None:
    assert request_id.from_metadata([("x-request-id", "req-42")]) == "req-42"
    for bad in ["", "has space", "x" * 129, "line\nbreak", "ünïcode"]:
        generated = request_id.from_metadata([("x-request-id", bad)])
        assert generated != bad and len(generated) == 32
    assert request_id.from_metadata(None) != request_id.from_metadata(None)
    assert request_id.Call(GET, [("x-request-id", "req-9")]).request_id == "req-9"


def test_log_filter_adds_the_call_to_every_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    request_id.RequestIdFilter().filter(record)
    assert not hasattr(record, "request_id")
    call = request_id.Call(GET, [("x-request-id", "req-7")])
    call.principal = "reader-a"
    token = request_id.CURRENT.set(call)
    try:
        request_id.RequestIdFilter().filter(record)
    finally:
        request_id.CURRENT.reset(token)
    assert (record.request_id, record.principal) == ("req-7", "reader-a")


def test_closed_health_takes_any_valid_token_in_any_namespace(token_file: Path) -> None:
    authz = Authorizer(str(token_file))
    check = "/grpc.health.v1.Health/Check"
    assert authz.authorize(check, md(READER, None)).allowed
    assert authz.authorize(check, md(READER, "team-z")).allowed
    assert authz.authorize(check, md(None)).code == "UNAUTHENTICATED"


# -- stateward token new|hash ------------------------------------------------------------


def test_token_new_prints_an_entry_that_loads_and_the_token_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stateward.server.security.token_cli import token_main

    assert token_main(["new", "--name", "ci", "--role", "writer", "--namespaces", "a, b"]) == 0
    out, err = capsys.readouterr()
    token = err.rsplit(" ", 1)[1].strip()
    assert token.startswith("swt_") and token not in out
    path = tmp_path / "tokens.toml"
    path.write_text(out)
    found = load_tokens(str(path)).lookup(token)
    assert found is not None and found.role is Role.WRITER and found.namespaces == {"a", "b"}


def test_token_hash_reads_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from stateward.server.security.token_cli import token_main

    token = auth.generate_token()
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert token_main(["hash"]) == 0
    assert auth.verify_token(token, capsys.readouterr().out.strip())
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert token_main(["hash"]) == 2
    assert "at least 24" in capsys.readouterr().err
