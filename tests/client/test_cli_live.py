"""The ``stateward`` state, runs, events, checkpoints and recovery commands, against the
real server: happy paths, JSON output, and one-line errors with their exit codes."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from stateward.client import Client
from stateward.client.cli import main
from tests.support.server import ServerThread

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def cli(live: Client, capsys: Capture) -> Any:
    """``cli("state", "get", "a1")`` -> (exit code, stdout, stderr), in ``live``'s namespace."""

    def run(*argv: str, stdin: str | bytes | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            raw = stdin.encode() if isinstance(stdin, str) else stdin
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
                code = _main(argv)
        else:
            code = _main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    def _main(argv: tuple[str, ...]) -> int:
        target = ["--target", live.options.target, "--namespace", live.options.namespace]
        return main([*target, "--timeout", "5", *argv])

    return run


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# -- state --------------------------------------------------------------------------------


def test_state_put_get_patch_history_clear(cli: Any, agent: str, tmp_path: Path) -> None:
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps({"plan": ["a", "b"], "big": 2**70}))
    code, out, err = cli("state", "put", agent, str(doc), "--expected-version", "0")
    assert (code, err) == (0, "")
    assert out.startswith(f"saved agent {agent!r} state version 1 (schema 1,")

    code, out, _ = cli("state", "patch", agent, "-", stdin='{"plan": null, "done": true}')
    assert code == 0 and "state version 2" in out

    code, out, _ = cli("state", "get", agent)
    assert code == 0 and json.loads(out) == {"big": 2**70, "done": True}
    code, out, _ = cli("state", "get", agent, "--version", "1")
    assert json.loads(out) == {"plan": ["a", "b"], "big": 2**70}
    code, out, _ = cli("state", "get", agent, "--as-of", "2999-01-01T00:00:00Z", "--json")
    assert json.loads(out)["version"] == 2

    code, out, _ = cli("state", "history", agent)
    header, newest, oldest = out.splitlines()
    assert header.split()[:3] == ["VERSION", "SCHEMA", "SIZE"]
    assert (newest.split()[0], oldest.split()[0]) == ("2", "1")
    code, out, _ = cli("state", "history", agent, "--documents", "--json", "--limit", "1")
    assert [v["document"] for v in json.loads(out)] == [{"big": 2**70, "done": True}]

    code, out, _ = cli("state", "clear", agent)
    assert (code, out.strip()) == (0, f"cleared the state of agent {agent!r} (2 versions deleted)")
    code, _, err = cli("state", "get", agent)
    assert code == 1 and "has no state" in one_line_error(err)


def test_state_errors_are_one_line(cli: Any, agent: str, tmp_path: Path) -> None:
    cli("state", "put", agent, "-", stdin="{}")
    code, _, err = cli("state", "put", agent, "-", "--expected-version", "0", stdin='{"a": 1}')
    assert code == 1 and "version" in one_line_error(err)

    code, _, err = cli("state", "put", agent, "-", stdin="[1, 2]")
    assert code == 2 and "must be a JSON object" in one_line_error(err)
    code, _, err = cli("state", "put", agent, "-", stdin="{nope")
    assert code == 2 and "stdin is not valid JSON" in one_line_error(err)
    code, _, err = cli("state", "put", agent, str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in one_line_error(err)
    code, _, err = cli("state", "get", "ghost")
    assert code == 1 and "ghost" in one_line_error(err)


def _counters(live: Client, count: int) -> None:
    for n in range(count):
        live.create_agent(f"c{n}", "counter")
        live.initialize_agent(f"c{n}")
        live.save_state(f"c{n}", {"count": n}, schema_version=1)


def interrupt_the_second_migrate_page(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Ctrl-C during the second MigrateStates call; returns the real method."""
    real = Client.migrate_states  # the descriptor: bound below
    calls = 0

    def interrupted_on_the_second_page(self: Client, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return real.__get__(self, Client)(*args, **kwargs)

    monkeypatch.setattr(Client, "migrate_states", interrupted_on_the_second_page)
    return real


def test_state_migrate_dry_run_then_for_real(cli: Any, live: Client) -> None:
    _counters(live, 3)
    code, out, _ = cli("state", "migrate", "--type", "counter", "--dry-run")
    assert code == 0
    assert out.strip() == (
        "would migrate 3 states of type 'counter' to schema version 3 (0 already current)"
    )
    code, out, _ = cli("state", "migrate", "--type", "counter", "--page-size", "2", "--json")
    assert json.loads(out) == {
        "agent_type": "counter",
        "migrated": 3,
        "up_to_date": 0,
        "target_schema_version": 3,
        "dry_run": False,
        "failures": [],
    }
    assert live.get_state("c2").document == {"total": 2, "unit": "items"}
    assert live.get_state("c2").schema_version == 3
    code, out, _ = cli("state", "migrate", "--type", "counter")
    assert "migrated 0 states" in out and "(3 already current)" in out  # idempotent


def test_state_migrate_names_the_states_it_could_not_upgrade(cli: Any, live: Client) -> None:
    for n, doc in enumerate([{"n": 0}, {"bad": True}, {"n": 2}]):
        live.create_agent(f"p{n}", "picky")
        live.initialize_agent(f"p{n}")
        live.save_state(f"p{n}", doc, schema_version=1)
    code, out, err = cli("state", "migrate", "--type", "picky")
    assert code == 1  # not all done
    assert out.strip() == (
        "migrated 2 states of type 'picky' to schema version 2 (0 already current, 1 failed)"
    )
    assert (
        "agent 'p1': the migration from schema version 1 failed: "
        "ValueError: this document is marked bad"
    ) in err
    assert live.get_state("p2").document == {"n": 2, "checked": True}


def test_state_migrate_names_failures_on_a_dry_run_and_when_interrupted(
    cli: Any, live: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n, doc in enumerate([{"bad": True}, {"n": 1}, {"n": 2}]):
        live.create_agent(f"p{n}", "picky")
        live.initialize_agent(f"p{n}")
        live.save_state(f"p{n}", doc, schema_version=1)
    code, out, err = cli("state", "migrate", "--type", "picky", "--dry-run")
    assert code == 1 and "(0 already current, 1 would fail)" in out
    assert "agent 'p0': the migration from schema version 1 would fail" in err
    interrupt_the_second_migrate_page(monkeypatch)
    code, _, err = cli("state", "migrate", "--type", "picky", "--page-size", "1")
    # The resume token is past p0's page: name it now, or nobody ever will.
    assert code == 130 and "agent 'p0': the migration from schema version 1 failed" in err


def test_state_migrate_interrupted_prints_how_to_resume(
    cli: Any, live: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    _counters(live, 3)
    real = interrupt_the_second_migrate_page(monkeypatch)
    code, out, err = cli("state", "migrate", "--type", "counter", "--page-size", "1")
    assert (code, out) == (130, "")
    hint = err.strip().splitlines()[-1]
    assert hint.startswith("interrupted; resume with: stateward state migrate --type counter")
    assert f"--namespace {live.options.namespace}" in hint
    token = hint.split("--resume-token ")[1]
    monkeypatch.setattr(Client, "migrate_states", real)
    code, out, _ = cli("state", "migrate", "--type", "counter", "--resume-token", token)
    assert code == 0 and "migrated 2 states" in out  # the first page was done already


# -- runs and events ----------------------------------------------------------------------


def test_runs_list_show_and_retry(cli: Any, live: Client, agent: str) -> None:
    run = live.start_workflow_run("ingest", agent_id=agent, labels={"team": "a"})
    with live.track_task(run.run_id, "fetch", agent) as task:
        task.result = {"rows": 3}
    with pytest.raises(ValueError):
        with live.track_task(run.run_id, "parse", agent):
            raise ValueError("bad row")
    live.fail_workflow_run(run.run_id, "parse failed")

    code, out, _ = cli("runs", "list", "--label", "team=a")
    header, row = out.splitlines()
    assert header.split()[:4] == ["RUN", "WORKFLOW", "AGENT", "STATUS"]
    assert row.split()[:4] == [run.run_id, "ingest", agent, "FAILED"]

    code, out, _ = cli("runs", "show", run.run_id)
    assert code == 0
    assert "workflow: ingest" in " ".join(out.split())
    assert "UNKNOWN: parse failed" in out
    task_lines = [line for line in out.splitlines() if line.startswith("task-")]
    assert [line.split()[1] for line in task_lines] == ["fetch", "parse"]
    assert "INVALID_INPUT: ValueError: bad row" in task_lines[1]
    code, out, _ = cli("runs", "show", run.run_id, "--json")
    shown = json.loads(out)
    assert shown["run"]["run_id"] == run.run_id and len(shown["task_runs"]) == 2

    code, out, _ = cli("runs", "retry", run.run_id)
    assert code == 0 and "carried over: fetch" in out and "still to do:  parse" in out
    code, _, err = cli("runs", "show", "run-nope")
    assert code == 1 and "run-nope" in one_line_error(err)


def test_runs_show_prints_a_leased_runs_lease(cli: Any, live: Client) -> None:
    run = live.start_workflow_run("ingest", heartbeat_timeout=90)
    live.heartbeat_workflow_run(run.run_id)
    code, out, _ = cli("runs", "show", run.run_id)
    shown = " ".join(out.split())
    assert code == 0 and "heartbeat timeout: 1m30s" in shown, out
    assert "last heartbeat:" in shown and "lease expires:" in shown
    code, out, _ = cli("runs", "show", live.start_workflow_run("ingest").run_id)
    assert "lease expires" not in out and "heartbeat timeout" not in out


def test_events_list_and_tail(cli: Any, live: Client, agent: str) -> None:
    live.save_state(agent, {"n": 1})
    code, out, _ = cli("events", "list", "--agent", agent)
    lines = out.splitlines()
    assert [line.split()[3] for line in lines] == [
        "agent.created",
        "agent.transitioned",
        "state.saved",
    ]
    assert lines[2].split()[2:] == ["#3", "state.saved", f"agent={agent}", '{"version":1,"size":7}']
    assert "\033[" not in out  # not a terminal: no colour

    code, out, _ = cli("events", "list", "--type", "state.saved", "--color", "always")
    assert code == 0 and "\033[35mstate.saved\033[0m" in out

    code, out, _ = cli("events", "tail", "--after", "1", "--count", "2")
    assert code == 0
    assert [line.split()[2] for line in out.splitlines()] == ["#2", "#3"]
    code, out, _ = cli("events", "tail", "--after", "0", "--count", "1", "--json")
    assert json.loads(out)["type"] == "agent.created"

    code, out, _ = cli("events", "list", "--after", "99")
    assert (code, out.strip()) == (0, "no events found")


def test_events_tail_stops_quietly_on_ctrl_c(
    cli: Any, live: Client, agent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Client.subscribe

    def interrupted(self: Client, *args: Any, **kwargs: Any) -> Any:
        for number, event in enumerate(real(self, *args, **kwargs), 1):
            yield event
            if number == 2:  # Ctrl-C while waiting for the third
                raise KeyboardInterrupt

    monkeypatch.setattr(Client, "subscribe", interrupted)
    code, out, err = cli("events", "tail", "--after", "0")
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 2


# -- checkpoints and recovery -------------------------------------------------------------


def test_checkpoint_commands(cli: Any, live: Client, agent: str, tmp_path: Path) -> None:
    live.save_state(agent, {"step": 1})
    code, out, _ = cli("checkpoints", "create", agent, "--label", "why=test", "--json")
    created = json.loads(out)
    assert created["labels"] == {"why": "test"} and created["state_version"] == 1

    data = bytes(range(256)) * 5000
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    code, out, _ = cli("checkpoints", "upload", agent, str(source), "--chunk-size", "65536")
    assert code == 0 and out.startswith("uploaded checkpoint ckpt")
    uploaded = out.split()[2]
    code, out, _ = cli("checkpoints", "upload", agent, "-", "--json", stdin=b"from stdin")
    assert json.loads(out)["size_bytes"] == 10

    dest = tmp_path / "back.bin"
    code, out, _ = cli("checkpoints", "download", uploaded, str(dest))
    assert code == 0 and dest.read_bytes() == data and out.strip().endswith(str(dest))
    code, out, _ = cli("checkpoints", "download", uploaded, str(tmp_path))  # into a directory
    assert (tmp_path / uploaded).read_bytes() == data

    code, out, _ = cli("checkpoints", "list", "--agent", agent)
    assert len(out.splitlines()) == 4 and out.split()[:2] == ["CHECKPOINT", "AGENT"]
    code, out, _ = cli("checkpoints", "show", uploaded)
    assert f"size:          {len(data)} bytes (1.2 MiB)" in out

    live.save_state(agent, {"step": 2})
    code, out, _ = cli("checkpoints", "restore", created["checkpoint_id"])
    assert code == 0 and "as state version 3; the agent is INITIALIZED" in out
    assert live.get_state(agent).document == {"step": 1}

    code, out, _ = cli("checkpoints", "prune", "--agent", agent, "--keep-last", "1", "--dry-run")
    assert out.splitlines()[-1].startswith("would delete 2 checkpoints")
    code, out, _ = cli("checkpoints", "delete", uploaded)
    assert (code, out.strip()) == (0, f"deleted checkpoint {uploaded}")
    code, _, err = cli("checkpoints", "show", uploaded)
    assert code == 1 and uploaded in one_line_error(err)
    code, _, err = cli("checkpoints", "upload", agent, str(tmp_path / "nope.bin"))
    assert code == 2 and "nope.bin" in one_line_error(err)


def test_recover_prints_the_plan(cli: Any, live: Client, agent: str) -> None:
    run = live.start_workflow_run("wf", agent_id=agent)
    with pytest.raises(MemoryError):
        with live.track_task(run.run_id, "embed", agent):
            raise MemoryError("out of GPU memory")
    code, out, _ = cli("recover", agent)
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line[:20])
    assert fields["strategy"].strip() == "RETRY_WITH_BACKOFF"
    assert fields["last failure"].strip().startswith("task 'embed'")
    assert "RESOURCE_EXHAUSTED: MemoryError: out of GPU memory" in out
    assert "task runs still to recover:" in out
    code, out, _ = cli("recover", agent, "--json")
    assert json.loads(out)["strategy"] == "RETRY_WITH_BACKOFF"


def test_gc_and_archives(
    cli: Any, live: Client, agent: str, shared_server: ServerThread, tmp_path: Path
) -> None:
    code, out, _ = cli("gc", "--grace-period", "1h", "--dry-run")
    assert (code, out.strip()) == (0, "would delete 0 orphan blobs (0 B)")

    run = live.start_workflow_run("nightly", agent_id=agent)
    with live.track_task(run.run_id, "export", agent) as task:
        task.log("exported", rows=10)
    live.complete_workflow_run(run.run_id)
    # The server only writes archives under its configured archive root.
    url = f"{shared_server.settings.resolved_archive_url}/{agent}.jsonl.gz"
    code, out, _ = cli("archive", "create", "--older-than", "0s", "--url", url)
    assert (code, out.strip()) == (0, f"archived 1 runs, 1 task runs, 5 events to {url}")

    code, out, _ = cli("archive", "show", url)
    lines = out.splitlines()
    assert lines[0].startswith("archive stateward-archive/1 of namespace")
    assert lines[1].startswith(f"run {run.run_id}  nightly  COMPLETED")
    assert any(line.strip().startswith("task ") and "export" in line for line in lines)
    assert any("exported" in line and '"rows":10' in line for line in lines)
    assert lines[-1] == "1 runs, 1 task runs, 5 events"
    code, out, _ = cli("archive", "show", url, "--json")
    assert [json.loads(line)["kind"] for line in out.splitlines()][:2] == ["header", "run"]

    code, _, err = cli("archive", "show", f"file://{tmp_path}/missing.jsonl.gz")
    assert code == 2 and "missing.jsonl.gz" in one_line_error(err)
