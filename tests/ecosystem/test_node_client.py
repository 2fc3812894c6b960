"""The Node.js example client (examples/node) against a live server: the polyglot path.

The example is copied to a temporary folder and installed there with npm, then run
against a SQLite-backed server; the test checks both what it printed and what the
server recorded. Without node or npm the tests skip, except in CI (CI=true), where
that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stateward.client import Client
from tests.support.server import ServerThread

pytestmark = pytest.mark.node

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "node"
PROTOS = REPO / "protos"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def node_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """examples/node copied to a temp folder with its dependencies installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if IN_CI:
            pytest.fail("node and npm are required in CI for the Node.js client test")
        pytest.skip("node or npm is not installed")
    folder = tmp_path_factory.mktemp("node-example")
    for name in ("package.json", "package-lock.json", "client.js"):
        if (EXAMPLE / name).exists():
            shutil.copy2(EXAMPLE / name, folder / name)
    install = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, f"npm install failed:\n{install.stdout}\n{install.stderr}"
    yield folder


def run_client(folder: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run client.js; its exit status, its JSON lines, and its stderr."""
    node = shutil.which("node")
    assert node is not None
    env = {**os.environ, "STATEWARD_PROTOS": str(PROTOS)}
    done = subprocess.run(
        [node, "client.js", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines, done.stderr


def test_node_client_walks_an_agent(node_example: Path, sqlite_server: ServerThread) -> None:
    status, lines, stderr = run_client(node_example, sqlite_server.target, "node-agent-1")
    assert status == 0, (lines, stderr)
    final = lines[-1]
    assert final["ok"] is True, final
    summary = final["summary"]
    assert [line["step"] for line in lines[:-1]] == [
        "create_agent",
        "initialize",
        "activate",
        "pause",
        "resume",
        "save_and_get_state",
        "workflow_run",
        "subscribe_events",
        "list_runs",
        "terminate",
        "refused_transition",
    ]
    assert summary["statuses"] == [
        "CREATED",
        "INITIALIZED",
        "ACTIVE",
        "PAUSED",
        "ACTIVE",
        "TERMINATED",
    ]
    assert summary["refused_code"] == "FAILED_PRECONDITION"
    # Events: replayed from the log, then live, in strictly increasing sequence order.
    assert summary["events"] == [
        "agent.created",
        *["agent.transitioned"] * 4,
        "state.saved",
        "run.started",
        "task.started",
        "step_started",
        "step_completed",
        "task.completed",
        "run.completed",
    ]
    sequences = [int(s) for s in summary["event_sequences"]]
    assert sequences == sorted(set(sequences))
    assert summary["runs"] == [
        {"run_id": summary["run_id"], "workflow": "node-demo", "status": "COMPLETED"}
    ]

    # What the server recorded, read back from Python.
    with Client.connect(sqlite_server.target) as client:
        agent = client.get_agent("node-agent-1")
        assert agent.status == "TERMINATED" and agent.type == "node-example"
        assert agent.labels == {"client": "node"}
        assert agent.config["language"] == "javascript"
        state = client.get_state("node-agent-1")
        assert state.document == {"step": 1, "notes": ["from node"], "big": 9007199254740993}
        run = client.get_workflow_run(summary["run_id"])
        assert run.status == "COMPLETED" and run.result == {"answer": 42}
        assert run.input == {"question": "what is 6 x 7?"}
        tasks = list(client.iter_task_runs(run_id=run.run_id))
        assert [(t.task_id, t.status, t.result) for t in tasks] == [
            ("multiply", "COMPLETED", {"answer": 42})
        ]
        steps = [e for e in client.iter_events(task_run_id=tasks[0].task_run_id)]
        assert [e.data for e in steps if e.type == "step_completed"] == [{"answer": 42}]
        moves = [t.to_status for t in client.iter_transitions("node-agent-1")]
        assert moves == summary["statuses"]


def test_node_client_fails_loudly(node_example: Path, sqlite_server: ServerThread) -> None:
    """A refused call and an unreachable server both end in {"ok": false} and status 1."""
    with Client.connect(sqlite_server.target) as client:
        client.create_agent("taken", "planner")
    status, lines, _ = run_client(node_example, sqlite_server.target, "taken")
    assert status == 1
    assert lines[-1]["ok"] is False
    assert (lines[-1]["rpc"], lines[-1]["code"]) == ("CreateAgent", "ALREADY_EXISTS")
    assert "taken" in lines[-1]["message"]

    sqlite_server.stop()
    status, lines, _ = run_client(node_example, sqlite_server.target, "node-agent-2")
    assert status == 1
    assert lines[-1]["ok"] is False and lines[-1]["code"] == "UNAVAILABLE"
