"""The crash-loop workload: writer processes that record every acknowledged write.

``python -m tests.faults.workload TARGET OUT_FILE WORKER_ID`` runs one writer until it
is killed. It owns its agents (no cross-writer CAS contention) and loops over mixed
mutations: compare-and-set SaveState, AppendEvents, lifecycle transitions (pause /
resume), CreateCheckpoint, UploadCheckpoint, task completions, plus heartbeats that
keep its task run's lease alive.

Each mutation carries an explicit request_id and is retried with that same id until
the server answers (across restarts), so an answer, when it comes, is the original
one. Only then is a JSON line appended to OUT_FILE: one ``os.write`` per line on an
O_APPEND descriptor, so a SIGKILL leaves whole lines (``read_records`` also drops a
torn last line). The file is the client's view of "acknowledged"; ``check_records``
compares it with what the restarted server returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tests.support.server import ServerProcess

T = TypeVar("T")

HEARTBEAT_TIMEOUT = 2.0
"""Seconds a writer's task run lease lasts without a heartbeat."""

SUMMARIES: list[str] = []
"""Every ``report``ed line of this test process, repeated at the end of the run
(conftest.py) so that the counts show even when pytest captures output."""


def report(line: str) -> None:
    SUMMARIES.append(line)
    print(line)


# -- the writer process -----------------------------------------------------------------


class Writer:
    def __init__(self, target: str, out: Path, worker: str) -> None:
        from stateward.client import Client

        self.client = Client.connect(
            target,
            timeout=10.0,
            channel_options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )
        self.fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.worker = worker
        self.rng = random.Random(worker + str(os.getpid()))
        self.counter = 0
        self.version = 0
        self.paused = False
        self.agent = f"{worker}-a"
        self.run_id = ""
        self.task_run_id = ""
        self.last_beat = 0.0
        self.skipped: set[str] = set()

    def record(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, "worker": self.worker, **fields}, separators=(",", ":"))
        os.write(self.fd, (line + "\n").encode())

    def request_id(self) -> str:
        self.counter += 1
        return f"{self.worker}-r{self.counter}"

    def call(self, kind: str, fn: Callable[[str], T]) -> T | None:
        """``fn(request_id)`` until the server answers; None if the RPC is not implemented."""
        from stateward.client import TransportError, Unimplemented

        request_id = self.request_id()
        while True:
            try:
                return fn(request_id)
            except Unimplemented:
                if kind not in self.skipped:
                    self.skipped.add(kind)
                    self.record("unimplemented", what=kind)
                return None
            except TransportError:  # server down or restarting: same id again
                time.sleep(0.1)

    def setup(self) -> None:
        agent = self.call(
            "create_agent",
            lambda r: self.client.create_agent(
                self.agent, "crash", config={"w": self.worker}, request_id=r
            ),
        )
        assert agent is not None
        self.record("agent", agent=self.agent, type="crash")
        for move in ("initialize_agent", "activate_agent"):
            moved = self.call(
                move, lambda r, m=move: getattr(self.client, m)(self.agent, request_id=r)
            )
            if moved is not None:
                self.record_transition(moved, f"{self.worker}-r{self.counter}")
        run = self.call(
            "start_workflow_run",
            lambda r: self.client.start_workflow_run(
                "crash-loop", agent_id=self.agent, input={"w": self.worker}, request_id=r
            ),
        )
        if run is not None:
            self.run_id = run.run_id
            self.record("run", run_id=run.run_id, agent=self.agent)
            self.start_task()

    def record_transition(self, agent: Any, request_id: str) -> None:
        self.record(
            "transition", agent=self.agent, to_status=str(agent.status), request_id=request_id
        )

    def start_task(self) -> None:
        task = self.call(
            "start_task_run",
            lambda r: self.client.start_task_run(
                self.run_id,
                f"t{self.counter}",
                self.agent,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                request_id=r,
            ),
        )
        if task is not None:
            self.task_run_id = task.task_run_id
            self.last_beat = time.monotonic()
            self.record("task", task_run_id=task.task_run_id, run_id=self.run_id)

    def heartbeat(self) -> None:
        from stateward.client import FailedPrecondition, TransportError

        try:
            self.client.heartbeat(self.task_run_id)
            self.last_beat = time.monotonic()
        except FailedPrecondition:  # lease lost while we were stalled (a loaded machine)
            self.record("task_lost", task_run_id=self.task_run_id)
            self.start_task()
        except TransportError:
            pass

    def save_state(self) -> None:
        from stateward.client import Conflict

        doc = {"w": self.worker, "n": self.counter, "pad": "x" * self.rng.randint(0, 300)}
        try:
            state = self.call(
                "save_state",
                lambda r: self.client.save_state(
                    self.agent, doc, expected_version=self.version, request_id=r
                ),
            )
        except Conflict:
            # Only if an earlier write's answer was lost, which call() never allows.
            self.record("error", what="unexpected CAS conflict", version=self.version)
            self.version = self.client.get_state(self.agent).version
            return
        if state is not None:
            self.version = state.version
            self.record(
                "state",
                agent=self.agent,
                version=state.version,
                doc=doc,
                event_sequence=state.event_sequence,
            )

    def append_events(self) -> None:
        from stateward.client import NewEvent

        datas = [
            {"w": self.worker, "n": self.counter, "i": i} for i in range(self.rng.randint(1, 5))
        ]
        events = [NewEvent(type="step", data=d, run_id=self.run_id) for d in datas]
        result = self.call(
            "append_events", lambda r: self.client.append_events(events, request_id=r)
        )
        if result is not None:
            self.record(
                "events",
                first=result.first_sequence,
                last=result.last_sequence,
                datas=datas,
                run_id=self.run_id,
            )

    def transition(self) -> None:
        move = "resume_agent" if self.paused else "pause_agent"
        moved = self.call(move, lambda r: getattr(self.client, move)(self.agent, request_id=r))
        if moved is not None:
            self.paused = not self.paused
            self.record_transition(moved, f"{self.worker}-r{self.counter}")

    def checkpoint(self, upload: bool) -> None:
        payload = self.rng.randbytes(self.rng.randint(0, 4096))
        kind = "upload_checkpoint" if upload else "create_checkpoint"
        if upload:
            cp = self.call(
                kind,
                lambda r: self.client.upload_checkpoint(
                    self.agent, payload, request_id=r, chunk_size=1024, timeout=10.0
                ),
            )
        else:
            cp = self.call(
                kind, lambda r: self.client.create_checkpoint(self.agent, payload, request_id=r)
            )
        if cp is not None:
            self.record(
                "checkpoint",
                checkpoint_id=cp.checkpoint_id,
                agent=self.agent,
                sha256=hashlib.sha256(payload).hexdigest(),
                size=len(payload),
                state_version=cp.state_version,
                via=kind,
                payload=base64.b64encode(payload).decode(),
            )

    def complete_task(self) -> None:
        task_run_id = self.task_run_id
        # Written before sending: an unanswered completion may still have committed.
        self.record("task_complete_attempt", task_run_id=task_run_id)
        done = self.call(
            "complete_task_run",
            lambda r: self.client.complete_task_run(task_run_id, result={"ok": True}, request_id=r),
        )
        if done is not None:
            self.record("task_completed", task_run_id=task_run_id)
            self.start_task()

    def run(self) -> None:
        self.setup()
        self.record("ready")
        actions = [
            (self.save_state, 4),
            (self.append_events, 3),
            (self.transition, 1),
            (lambda: self.checkpoint(False), 1),
            (lambda: self.checkpoint(True), 1),
            (self.complete_task, 0.3),
        ]
        funcs, weights = zip(*actions, strict=True)
        while True:
            if self.task_run_id and time.monotonic() - self.last_beat > HEARTBEAT_TIMEOUT / 4:
                self.heartbeat()
            if not self.run_id or not self.task_run_id:
                funcs_now = [f for f in funcs if f not in (self.append_events, self.complete_task)]
                self.rng.choice(funcs_now)()
            else:
                self.rng.choices(funcs, weights)[0]()


# -- the test side --------------------------------------------------------------------


def spawn_writers(
    target: str, out_dir: Path, prefix: str, count: int
) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` writer processes; each writes ``out_dir/<worker>.jsonl``."""
    procs = []
    root = Path(__file__).resolve().parents[2]
    for i in range(count):
        worker = f"{prefix}w{i}"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.faults.workload",
                    target,
                    str(out_dir / f"{worker}.jsonl"),
                    worker,
                ],
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=open(out_dir / f"{worker}.err", "wb"),
            )
        )
    return procs


def kill_all(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait(30)


def read_records(out_dir: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(out_dir.glob("*.jsonl")):
        for line in path.read_bytes().split(b"\n"):
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except ValueError:  # a torn last line: never acknowledged to anyone
                continue
    return records


def wait_for_progress(
    out_dir: Path, prefix: str, writers: int, minimum: int, timeout: float
) -> None:
    """Until the writers of ``prefix`` are ready and ``minimum`` writes were acknowledged
    (or timeout: a loaded machine just gets fewer writes in before the fault)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [r for r in read_records(out_dir) if r["worker"].startswith(prefix)]
        kinds = Counter(r["kind"] for r in records)
        if kinds["ready"] >= writers and len(records) >= minimum:
            return
        time.sleep(0.2)


@dataclass
class Tally:
    cycles: int = 0
    faults: int = 0
    checked: int = 0
    lost: list[str] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    unimplemented: set[str] = field(default_factory=set)
    interrupted: set[str] = field(default_factory=set)
    """Writer prefixes of cycles after which RUNNING task runs must be INTERRUPTED."""

    def summary(self, name: str) -> str:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(self.by_kind.items()))
        skipped = (
            f"; skipped (UNIMPLEMENTED): {sorted(self.unimplemented)}" if self.unimplemented else ""
        )
        return (
            f"[faults] {name}: cycles={self.cycles} faults_injected={self.faults} "
            f"acknowledged_writes_checked={self.checked} lost={len(self.lost)} ({kinds}){skipped}"
        )


def _all_events(client: Any) -> list[Any]:
    events: list[Any] = []
    after = 0
    while True:
        items = list(client.list_events(after_sequence=after, page_size=1000).items)
        if not items:
            return events
        events.extend(items)
        after = items[-1].sequence


def _status(value: Any) -> str:
    return str(value).rsplit(".", 1)[-1]


def check_records(
    client: Any,
    records: list[dict[str, Any]],
    tally: Tally,
    *,
    deep: Callable[[dict[str, Any]], bool],
) -> None:
    """Compare every acknowledged write with what the server returns now.

    Task runs of writers in ``tally.interrupted`` (cycles where the server was down
    longer than a lease plus the start-up scan's grace) must be INTERRUPTED unless
    completed; others may also have been TIMED_OUT by a live sweeper.
    ``deep(record)``: also download and verify that record's checkpoint payload (the
    manifests of all are checked, and every listed checkpoint of the record's agent).
    Appends a description of each loss or inconsistency to ``tally.lost``.
    """
    lost = tally.lost
    events = _all_events(client)
    by_seq = {e.sequence: e for e in events}
    sequences = [e.sequence for e in events]
    if sequences != list(range(1, len(sequences) + 1)):
        gaps = sorted(set(range(1, (sequences[-1] if sequences else 0) + 1)) - set(sequences))
        lost.append(f"event log not gap-free: missing {gaps[:10]}")
    attempted = {r["task_run_id"] for r in records if r["kind"] == "task_complete_attempt"}
    completed = {r["task_run_id"] for r in records if r["kind"] == "task_completed"}
    lost_leases = {r["task_run_id"] for r in records if r["kind"] == "task_lost"}
    agents = {r["agent"]: r for r in records if r["kind"] == "agent"}
    views = {agent: _AgentView(client, agent, lost, by_seq, deep(r)) for agent, r in agents.items()}
    for r in records:
        kind = r["kind"]
        if kind in ("ready", "task_complete_attempt", "task_completed", "task_lost"):
            continue
        if kind == "unimplemented":
            tally.unimplemented.add(r["what"])
            continue
        if kind == "error":
            lost.append(f"writer {r['worker']}: {r}")
            continue
        tally.checked += 1
        tally.by_kind[kind] += 1
        view = views.get(r.get("agent", ""))
        if kind == "agent":
            assert view is not None
            if view.agent is None:
                lost.append(f"agent {r['agent']} is missing")
        elif kind == "state":
            assert view is not None
            doc = view.documents.get(r["version"], "missing")
            if doc != r["doc"]:
                lost.append(f"state {r['agent']} v{r['version']}: {doc!r} != {r['doc']!r}")
            event = by_seq.get(r["event_sequence"])
            if event is None or event.type != "state.saved" or event.agent_id != r["agent"]:
                lost.append(
                    f"state {r['agent']} v{r['version']}: event {r['event_sequence']} {event}"
                )
        elif kind == "events":
            got = [by_seq.get(s) for s in range(r["first"], r["last"] + 1)]
            if [e.data if e else None for e in got] != r["datas"] or any(
                e is None or e.type != "step" or e.run_id != r["run_id"] for e in got
            ):
                lost.append(f"events {r['first']}..{r['last']} differ: {got!r}")
        elif kind == "transition":
            assert view is not None
            found = view.by_request.get(r["request_id"], [])
            if len(found) != 1 or _status(found[0].to_status) != _status(r["to_status"]):
                lost.append(f"transition {r['request_id']} of {r['agent']}: {found!r}")
            elif (event := by_seq.get(found[0].event_sequence)) is None or event.agent_id != r[
                "agent"
            ]:
                lost.append(f"transition {r['request_id']}: no event {found[0].event_sequence}")
        elif kind == "checkpoint":
            assert view is not None
            manifest = view.checkpoints.get(r["checkpoint_id"])
            if (
                manifest is None
                or manifest.sha256 != r["sha256"]
                or manifest.size_bytes != r["size"]
            ):
                lost.append(f"checkpoint {r['checkpoint_id']}: manifest {manifest!r}")
            elif deep(r):
                data = client.download_checkpoint(r["checkpoint_id"])
                if base64.b64encode(data).decode() != r["payload"]:
                    lost.append(f"checkpoint {r['checkpoint_id']}: payload differs")
        elif kind == "run":
            client.get_workflow_run(r["run_id"])
        elif kind == "task":
            status = _settled_status(client, r["task_run_id"])
            strict = (
                r["worker"].startswith(tuple(tally.interrupted)) if tally.interrupted else False
            )
            allowed = {"INTERRUPTED"} if strict else {"INTERRUPTED", "TIMED_OUT"}
            if r["task_run_id"] in completed:
                allowed = {"COMPLETED"}
            elif r["task_run_id"] in attempted:
                allowed |= {"COMPLETED"}
            if r["task_run_id"] in lost_leases:
                allowed |= {"TIMED_OUT"}
            if status not in allowed:
                lost.append(
                    f"task run {r['task_run_id']}: {status}, expected one of {sorted(allowed)}"
                )


def _settled_status(client: Any, task_run_id: str, timeout: float = 120.0) -> str:
    """The task run's status once no longer RUNNING (a live sweeper may still be on its
    way), or RUNNING after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        status = _status(client.get_task_run(task_run_id).status)
        if status != "RUNNING" or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def wait_answering(server: ServerProcess, timeout: float = 120.0) -> None:
    """Until ``server`` answers a read (after its database came back)."""
    from stateward.client import Client, StatewardError

    deadline = time.monotonic() + timeout
    with Client.connect(server.target, timeout=10) as client:
        while True:
            try:
                client.list_events(page_size=1)
                return
            except StatewardError as error:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{error}\n{server.diagnosis()}") from error
                time.sleep(0.2)


class _AgentView:
    """One agent as the server has it now, checked for internal consistency: state
    versions gap-free, status equal to the last transition, no transition twice for a
    request id, and (``deep``) every listed checkpoint downloadable and verified."""

    def __init__(
        self, client: Any, agent_id: str, lost: list[str], by_seq: dict[int, Any], deep: bool
    ) -> None:
        from stateward.client import NotFound

        try:
            self.agent = client.get_agent(agent_id)
        except NotFound:
            self.agent = None
        versions = list(
            client.iter_state_versions(agent_id, include_documents=True, page_size=1000)
        )
        self.documents = {v.version: v.document for v in versions}
        numbers = sorted(self.documents)
        if numbers != list(range(1, len(numbers) + 1)):
            lost.append(f"state versions of {agent_id} not gap-free: {numbers[:20]}")
        if numbers:  # the latest (possibly cached) state is the newest committed one
            latest = client.get_state(agent_id)
            if latest.version != numbers[-1] or latest.document != self.documents[numbers[-1]]:
                lost.append(f"latest state of {agent_id} is v{latest.version}, not v{numbers[-1]}")
        trail = list(client.iter_transitions(agent_id, page_size=1000))
        self.by_request: dict[str, list[Any]] = {}
        for t in trail:
            self.by_request.setdefault(t.request_id, []).append(t)
        if (
            self.agent is not None
            and trail
            and _status(self.agent.status) != _status(trail[-1].to_status)
        ):
            lost.append(
                f"agent {agent_id}: status {self.agent.status} but last transition {trail[-1]!r}"
            )
        self.checkpoints = {
            c.checkpoint_id: c for c in client.iter_checkpoints(agent_id, page_size=1000)
        }
        if deep:  # no half-written artifact: whatever is listed must verify
            for checkpoint_id in self.checkpoints:
                client.download_checkpoint(checkpoint_id)  # DataLoss on a bad blob


WRITERS = 8
SWEEP_INTERVAL = 0.25
LEASE_WAIT = HEARTBEAT_TIMEOUT + 2 * SWEEP_INTERVAL + 1.0 + 1.0
"""Seconds to stay down after a crash so that leases held at the crash count as
interrupted by the restarted server (lease, plus the start-up scan's grace, plus margin)."""

SERVER_ARGS = [
    "--sweep-interval",
    str(SWEEP_INTERVAL),
    "--state-history",
    "1000000",
    "--retention-interval",
    "0",
    "--log-level",
    "ERROR",
]
"""Durable defaults stay on (SQLite: WAL, synchronous=FULL); history is never pruned
so that every acknowledged version stays readable."""


def full_run() -> bool:
    return os.environ.get("STATEWARD_FAULTS", "").lower() == "full"


def counts(reduced: int, full: int) -> int:
    return full if full_run() else reduced


@dataclass
class Cycle:
    """One crash cycle: writers run against ``target`` until ``fault`` strikes."""

    target: str
    out_dir: Path
    number: int
    rng: random.Random

    @property
    def prefix(self) -> str:
        return f"c{self.number}w"

    def run(self, fault: Callable[[], None]) -> None:
        procs = spawn_writers(self.target, self.out_dir, f"c{self.number}", WRITERS)
        try:
            wait_for_progress(self.out_dir, self.prefix, WRITERS, minimum=60, timeout=120)
            time.sleep(self.rng.uniform(0.0, 1.5))
            fault()
        finally:
            kill_all(procs)  # in-flight calls stay unanswered: never acknowledged
        errors = [
            p.read_text() for p in self.out_dir.glob(f"{self.prefix}*.err") if p.read_text().strip()
        ]
        tracebacks = [e for e in errors if "Traceback" in e]
        assert not tracebacks, tracebacks[0][-3000:]

    def check(self, target: str, tally: Tally, *, interrupted_tasks: bool, final: bool) -> None:
        from stateward.client import Client

        tally.cycles += 1
        prefix = self.prefix
        if interrupted_tasks:
            tally.interrupted.add(prefix)
        with Client.connect(target, timeout=120) as client:
            check_records(
                client,
                read_records(self.out_dir),
                tally,
                deep=lambda r: final or r["worker"].startswith(prefix),
            )


if __name__ == "__main__":
    Writer(sys.argv[1], Path(sys.argv[2]), sys.argv[3]).run()
