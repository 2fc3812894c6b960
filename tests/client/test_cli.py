"""The ``stateward`` command: readable tables, JSON for scripts, one-line errors, exit codes."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tomllib
import types
from typing import Any

import grpc
import pytest

from stateward.client.cli import main
from stateward.v1 import lifecycle_pb2
from tests.client.fakes import FakeServer, agent_pb, invalid_transition, refuse

BIG = 2**64 + 7
CREATED = lifecycle_pb2.AGENT_STATUS_CREATED
INITIALIZED = lifecycle_pb2.AGENT_STATUS_INITIALIZED


def run(fake: FakeServer, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--target", fake.target, "--timeout", "5", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def agents(fake: FakeServer) -> FakeServer:
    """A server knowing two agents."""
    known = {
        "a1": agent_pb("a1", config_json=json.dumps({"big": BIG}).encode(), state_version=12),
        "worker-long-name": agent_pb("worker-long-name", status=lifecycle_pb2.AGENT_STATUS_PAUSED),
    }

    def get(request: Any) -> Any:
        if request.agent_id not in known:
            raise refuse(grpc.StatusCode.NOT_FOUND, f"agent {request.agent_id!r} not found")
        return lifecycle_pb2.GetAgentResponse(agent=known[request.agent_id])

    fake.handlers["GetAgent"] = get
    fake.handlers["ListAgents"] = lambda request: lifecycle_pb2.ListAgentsResponse(
        agents=list(known.values())
    )
    return fake


def test_list_prints_an_aligned_table(agents: FakeServer, capsys: Any) -> None:
    code, out, err = run(agents, capsys, "agents", "list")
    assert (code, err) == (0, "")
    header, first, second = out.splitlines()
    assert header.split() == ["ID", "TYPE", "STATUS", "STATE", "VERSION", "UPDATED"]
    assert first.split()[:4] == ["a1", "planner", "ACTIVE", "12"]
    assert second.split()[:3] == ["worker-long-name", "planner", "PAUSED"]
    # Columns line up: each starts at the same offset on every line.
    for column in ("TYPE", "STATUS", "UPDATED"):
        offset = header.index(column)
        assert first[offset - 2 : offset] == "  " and first[offset] != " "
    assert "2023-11-14 22:13:20Z" in first


def test_list_json_keeps_big_integers(agents: FakeServer, capsys: Any) -> None:
    code, out, _ = run(agents, capsys, "agents", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [a["agent_id"] for a in listed] == ["a1", "worker-long-name"]
    assert listed[0]["config"] == {"big": BIG}
    assert listed[0]["status"] == "ACTIVE"
    assert listed[0]["update_time"] == "2023-11-14T22:13:20Z"


def test_list_filters_and_limit(agents: FakeServer, capsys: Any) -> None:
    code, out, _ = run(
        agents, capsys, "agents", "list", "--status", "paused", "--label", "a=b", "--limit", "1"
    )
    assert code == 0 and len(out.splitlines()) == 2
    (request,) = agents.requests("ListAgents")
    assert request.status == lifecycle_pb2.AGENT_STATUS_PAUSED
    assert dict(request.labels) == {"a": "b"} and request.page_size == 1


def test_get_shows_details(agents: FakeServer, capsys: Any) -> None:
    code, out, _ = run(agents, capsys, "agents", "get", "a1")
    assert code == 0
    assert "status:" in out and "ACTIVE" in out
    assert f'{{"big":{BIG}}}' in out
    assert "etag:" in out


def test_not_found(agents: FakeServer, capsys: Any) -> None:
    code, out, err = run(agents, capsys, "agents", "get", "ghost")
    assert code == 1 and out == ""
    assert err == "error: agent 'ghost' not found (namespace 'default')\n"


@pytest.mark.parametrize("target_in_details", [False, True])
def test_invalid_transition_message(fake: FakeServer, capsys: Any, target_in_details: bool) -> None:
    target = "INITIALIZED" if target_in_details else ""

    def refuse_init(request: Any) -> Any:
        raise invalid_transition(request.agent_id, "PAUSED", "ACTIVE,TERMINATED,ERROR", target)

    fake.handlers["InitializeAgent"] = refuse_init
    code, out, err = run(fake, capsys, "agents", "init", "a1")
    assert code == 1
    assert err == (
        "error: agent 'a1' is PAUSED; it cannot move to INITIALIZED "
        "(allowed: ACTIVE, TERMINATED, ERROR)\n"
    )


def test_terminal_agent_message(fake: FakeServer, capsys: Any) -> None:
    def refuse_resume(request: Any) -> Any:
        raise invalid_transition(request.agent_id, "TERMINATED", "")

    fake.handlers["ResumeAgent"] = refuse_resume
    code, _, err = run(fake, capsys, "agents", "resume", "a1")
    assert code == 1
    assert err == "error: agent 'a1' is TERMINATED, which is final; it cannot move to ACTIVE\n"


def test_create_sends_config_labels_and_request_id(
    fake: FakeServer, capsys: Any, tmp_path: Any
) -> None:
    fake.handlers["CreateAgent"] = lambda r: lifecycle_pb2.CreateAgentResponse(agent=agent_pb())
    config = tmp_path / "config.json"
    config.write_text('{"model": "m", "n": 18446744073709551623}')
    code, out, _ = run(
        fake, capsys, "agents", "create", "a1", "--type", "planner", "--config", f"@{config}",
        "--label", "team=x", "--label", "env=dev", "--request-id", "rq-1",
    )  # fmt: skip
    assert code == 0 and out.splitlines()[0].startswith("ID")
    (request,) = fake.requests("CreateAgent")
    assert json.loads(request.config_json) == {"model": "m", "n": 18446744073709551623}
    assert dict(request.labels) == {"team": "x", "env": "dev"}
    assert request.request_id == "rq-1"


def test_moves_send_reason(fake: FakeServer, capsys: Any) -> None:
    fake.handlers["PauseAgent"] = lambda r: lifecycle_pb2.PauseAgentResponse(
        agent=agent_pb(status=lifecycle_pb2.AGENT_STATUS_PAUSED)
    )
    code, out, _ = run(fake, capsys, "agents", "pause", "a1", "--reason", "nightly")
    assert code == 0 and "PAUSED" in out
    assert fake.requests("PauseAgent")[0].reason == "nightly"


def test_error_and_delete(fake: FakeServer, capsys: Any) -> None:
    fake.handlers["ReportAgentError"] = lambda r: lifecycle_pb2.ReportAgentErrorResponse(
        agent=agent_pb(status=lifecycle_pb2.AGENT_STATUS_ERROR)
    )
    fake.handlers["DeleteAgent"] = lambda r: lifecycle_pb2.DeleteAgentResponse(agent_id="a1")
    code, _, _ = run(
        fake, capsys, "agents", "error", "a1", "--message", "boom", "--kind", "timeout"
    )
    assert code == 0
    request = fake.requests("ReportAgentError")[0]
    assert (request.message, request.kind) == ("boom", 1)

    code, out, _ = run(fake, capsys, "agents", "delete", "a1")
    assert (code, out) == (0, "deleted agent 'a1'\n")
    code, out, _ = run(fake, capsys, "--json", "agents", "delete", "a1")
    assert json.loads(out) == {"agent_id": "a1", "deleted": True}


def test_history(fake: FakeServer, capsys: Any) -> None:
    fake.handlers["ListTransitions"] = lambda r: lifecycle_pb2.ListTransitionsResponse(
        transitions=[
            lifecycle_pb2.Transition(transition_id=1, to_status=CREATED),
            lifecycle_pb2.Transition(
                transition_id=2, from_status=CREATED, to_status=INITIALIZED, reason="go"
            ),
        ]
    )
    code, out, _ = run(fake, capsys, "agents", "history", "a1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "FROM", "TO", "REASON", "TIME"]
    assert lines[1].split()[:4] == ["1", "-", "CREATED", "-"]
    assert lines[2].split()[:4] == ["2", "CREATED", "INITIALIZED", "go"]


def test_global_options_also_after_the_subcommand(fake: FakeServer, capsys: Any) -> None:
    fake.handlers["GetAgent"] = lambda r: lifecycle_pb2.GetAgentResponse(agent=agent_pb())
    code = main(["agents", "get", "a1", "--target", fake.target, "--json", "--namespace", "ns1"])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["agent_id"] == "a1"
    assert fake.calls[0].metadata["x-stateward-namespace"] == "ns1"


def test_target_from_environment(fake: FakeServer, capsys: Any, monkeypatch: Any) -> None:
    fake.handlers["GetAgent"] = lambda r: lifecycle_pb2.GetAgentResponse(agent=agent_pb())
    monkeypatch.setenv("STATEWARD_TARGET", fake.target)
    assert main(["agents", "get", "a1"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["agents", "create", "a1", "--type", "t", "--label", "novalue"], "expected key=value"),
        (["agents", "create", "a1", "--type", "t", "--config", "[1]"], "must be a JSON object"),
        (["agents", "create", "a1", "--type", "t", "--config", "{"], "is not valid JSON"),
        (["agents", "list", "--status", "sleepy"], "expected one of CREATED"),
        (["agents", "list", "--limit", "0"], "positive whole number"),
        (["agents", "update", "a1"], "nothing to update"),
        (["agents", "frobnicate"], "invalid choice"),
        (["agents", "get", "a1", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: Any) -> None:
    code = main(["--target", f"127.0.0.1:{closed_port()}", *argv])
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err and "Traceback" not in err


def test_unreachable_server_exits_3_in_one_line(capsys: Any) -> None:
    port = closed_port()
    code = main(["--target", f"127.0.0.1:{port}", "--timeout", "2", "agents", "list"])
    out, err = capsys.readouterr()
    assert code == 3 and out == ""
    assert err == (
        f"error: cannot reach Stateward at 127.0.0.1:{port} "
        "(is the server running? start it with 'stateward serve')\n"
    )


def test_unreachable_server_as_a_real_process_prints_no_traceback() -> None:
    port = closed_port()
    proc = subprocess.run(
        [sys.executable, "-m", "stateward.client.cli", "--target", f"127.0.0.1:{port}",
         "--timeout", "1", "agents", "get", "a1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: cannot reach Stateward")
    assert len(proc.stderr.splitlines()) == 1


# -- serve and db are the server's -------------------------------------------------------


@pytest.fixture
def fake_server_main(monkeypatch: Any) -> list[tuple[str, list[str]]]:
    seen: list[tuple[str, list[str]]] = []
    module = types.ModuleType("stateward.server.main")

    def serve_main(argv: list[str]) -> int:
        seen.append(("serve", argv))
        return 0

    def db_main(argv: list[str]) -> int:
        seen.append(("db", argv))
        if "--help" in argv:
            raise SystemExit(0)
        return 4

    module.serve_main = serve_main  # type: ignore[attr-defined]
    module.db_main = db_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stateward.server.main", module)
    return seen


def test_serve_hands_every_argument_to_the_server(fake_server_main: Any) -> None:
    argv = ["--listen", "127.0.0.1:0", "--help", "--target", "x", "--", "-z"]
    assert main(["--namespace", "n", "serve", *argv]) == 0
    assert fake_server_main == [("serve", argv)]


def test_db_upgrade_delegates_and_returns_its_code(fake_server_main: Any) -> None:
    assert main(["db", "upgrade", "--database-url", "sqlite:///x.db"]) == 4
    assert main(["db", "--help"]) == 0
    assert fake_server_main == [
        ("db", ["upgrade", "--database-url", "sqlite:///x.db"]),
        ("db", ["--help"]),
    ]


def test_serve_without_the_server_installed(monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setitem(sys.modules, "stateward.server.main", None)  # import raises ImportError
    assert main(["serve"]) == 2
    _, err = capsys.readouterr()
    assert err.startswith("error: the server is not installed: pip install 'stateward[server]'")
    assert len(err.splitlines()) == 1


# -- token is the server's too -----------------------------------------------------------


def test_token_new_prints_an_entry_whose_hash_verifies(capsys: Any) -> None:
    from stateward.server.security.auth import verify_token

    code = main(["token", "new", "--name", "ci", "--role", "writer", "--namespaces", "a,b"])
    out, err = capsys.readouterr()
    assert code == 0
    token = err.strip().rsplit(" ", 1)[-1]
    entry = tomllib.loads(out)["tokens"][0]
    assert (entry["name"], entry["role"], entry["namespaces"]) == ("ci", "writer", ["a", "b"])
    assert token not in out and verify_token(token, entry["hash"])


def test_token_hash_reads_standard_input(capsys: Any, monkeypatch: Any) -> None:
    from stateward.server.security.auth import generate_token, verify_token

    token = generate_token()
    monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
    assert main(["token", "hash"]) == 0
    out, _ = capsys.readouterr()
    assert verify_token(token, out.strip()) and token not in out


def test_token_without_an_action_is_a_usage_error(capsys: Any) -> None:
    assert main(["token"]) == 2
    assert "stateward token" in capsys.readouterr().err
