"""Wide listings read their rows' sizes first, then no more rows than one response holds
(storage/pages.py), on both databases; paging over such reads loses and repeats nothing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from stateward.server.domain import paging, planner
from stateward.server.domain.errors import ResourceExhausted
from stateward.server.services.execution import ExecutionService
from stateward.server.services.lifecycle import LifecycleService
from stateward.server.services.recovery import RecoveryService
from stateward.storage import Database, WriteContext, migrate, pages
from stateward.storage import agents as agent_rows
from stateward.storage import recovery as recovery_rows
from stateward.storage import runs as run_rows
from stateward.storage.records import AgentRecord
from stateward.storage.runs import RunRecord, TaskRunRecord


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate.upgrade(database.write_engine)
    database.start()
    yield database
    database.close()


def document(size: int) -> bytes:
    return b'"' + b"x" * size + b'"'


def agent(n: int, config: bytes, labels: dict[str, str] | None = None) -> AgentRecord:
    return AgentRecord("ns", f"a{n:03d}", "t", config, labels or {}, "CREATED", 1, 0, 0, 1, 1)


def run(n: int, size: int) -> RunRecord:
    return RunRecord(
        "ns", f"r{n:03d}", "w", "", "RUNNING", document(size), {}, 1, f"r{n:03d}", n, n
    )


def seed(db: Database, insert: Callable[[Any, Any], None], records: list[Any]) -> None:
    def write(ctx: WriteContext) -> None:
        for record in records:
            insert(ctx.conn, record)

    db.write_sync(write)


def every_page(call: Callable[[str], tuple[list[Any], str]]) -> list[list[Any]]:
    pages_seen, token = [], ""
    while True:
        items, token = call(token)
        pages_seen.append(items)
        if not token:
            return pages_seen


def test_a_page_of_big_records_reads_only_what_its_budget_holds(db: Database) -> None:
    seed(db, agent_rows.insert_agent, [agent(n, document(100_000)) for n in range(30)])

    def listed(budget: int | None, after: str | None = None) -> tuple[list[str], bool]:
        rows = db.read_sync(
            lambda conn: agent_rows.list_page(
                conn,
                "ns",
                status=None,
                type=None,
                labels={},
                after_id=after,
                limit=1000,
                budget=budget,
            )
        )
        return [r.agent_id for r in rows], rows.cut

    assert listed(None) == ([f"a{n:03d}" for n in range(30)], False)  # every row, documents and all
    # 512 KB hold five ~100 KB rows; the sixth passes the budget: the read stops there.
    assert listed(512_000) == ([f"a{n:03d}" for n in range(6)], True)
    assert listed(512_000, after="a026") == (["a027", "a028", "a029"], False)
    assert listed(1) == (["a000"], True)  # the first row is always read


@pytest.mark.parametrize("page_size", [1, 7, 1000])
@pytest.mark.parametrize("budget", [50_000, 200_000])
def test_paging_over_cut_reads_lists_every_record_once(
    db: Database, page_size: int, budget: int
) -> None:
    # Sizes around the estimate's margin over the exact weights, so the probe and the
    # page's cut disagree, with and without a label filter.
    rng = random.Random(7)
    records = [
        agent(n, document(rng.choice([0, 10, 700, 900, 5_000, 20_000, 60_000])), {"k": str(n % 2)})
        for n in range(60)
    ]
    seed(db, agent_rows.insert_agent, records)
    service = LifecycleService(db, page_bytes=budget)
    for labels, expected in [({}, records), ({"k": "1"}, records[1::2])]:

        def page(token: str, labels: dict[str, str] = labels) -> tuple[list[AgentRecord], str]:
            return asyncio.run(
                service.list_agents(
                    "ns", status=None, type="", labels=labels, page_size=page_size, page_token=token
                )
            )

        found = every_page(page)
        assert [r.agent_id for page in found for r in page] == [r.agent_id for r in expected]


def test_a_first_record_over_the_budget_still_pages_on(db: Database) -> None:
    big = document(1_019_998)

    def seed(ctx: WriteContext) -> None:
        for n in range(3):
            task = TaskRunRecord("ns", f"t{n}", "r1", "task", "ag", 1, "COMPLETED", big, 1, n + 1)
            task.result = big  # together over the budget of a 2 MiB limit; each under it
            run_rows.insert_task(ctx.conn, task)

    db.write_sync(seed)
    service = ExecutionService(db, None, page_bytes=paging.page_budget(2 << 20))  # type: ignore[arg-type]
    found = every_page(
        lambda token: asyncio.run(
            service.list_tasks(
                "ns", run_id="r1", agent_id="", status=None, page_size=50, page_token=token
            )
        )
    )
    assert [[t.task_run_id for t in page] for page in found] == [["t0"], ["t1"], ["t2"]]


@pytest.mark.parametrize("budget", [100_000, 300_000])  # passes mid-listing, at its last row
def test_a_write_between_the_sizes_and_the_rows_loses_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    # On PostgreSQL each of the two queries sees its own snapshot: a run started between
    # them shifts the rows read (runs list newest first). SQLite reads in one pass.
    seed(db, run_rows.insert_run, [run(n, 30_000) for n in range(1, 11)])
    measure = pages._rows_to_read
    started: list[int] = []

    def measure_then_start_a_run(*args: Any) -> tuple[int, bool]:
        measured = measure(*args)
        if not started:
            started.append(1)
            seed(db, run_rows.insert_run, [run(999, 10)])
        return measured

    monkeypatch.setattr(pages, "_rows_to_read", measure_then_start_a_run)
    service = ExecutionService(db, None, page_bytes=budget)  # type: ignore[arg-type]
    found = every_page(
        lambda token: asyncio.run(
            service.list_runs(
                "ns",
                workflow_name="",
                status=None,
                labels={},
                agent_id="",
                created_from=None,
                created_to=None,
                root_run_id="",
                page_size=50,
                page_token=token,
            )
        )
    )
    listed = [r.run_id for page in found for r in page]
    assert [r for r in listed if r != "r999"] == [f"r{n:03d}" for n in range(10, 0, -1)]


def test_labels_count_in_the_bytes_read(db: Database) -> None:
    # 64 labels of 256 emoji each side are stored as ~390 KB of escaped JSON.
    text = "\U0001f600" * 252
    labels = {f"{k:04d}" + text: text for k in range(64)}
    seed(db, agent_rows.insert_agent, [agent(n, b"{}", labels) for n in range(40)])
    rows = db.read_sync(
        lambda conn: agent_rows.list_page(
            conn, "ns", status=None, type=None, labels={}, after_id=None, limit=1000, budget=1 << 20
        )
    )
    assert 1 <= len(rows) <= 3 and rows.cut  # not 40 rows of 390 KB for a 1 MiB budget


def test_compensation_steps_read_no_task_documents(db: Database) -> None:
    big = document(500_000)

    def seed_tasks(ctx: WriteContext) -> None:
        for n in range(4):
            task = TaskRunRecord("ns", f"t{n}", "r1", f"task{n}", "ag", 1, "COMPLETED", big, 1, n)
            task.result, task.progress, task.ended_at = big, big, 10 + n
            task.compensation = b'{"undo": %d}' % n
            run_rows.insert_task(ctx.conn, task)

    db.write_sync(seed_tasks)
    steps = db.read_sync(
        lambda conn: recovery_rows.compensations(
            conn, "ns", "r1", after=None, limit=10, budget=1 << 20
        )
    )
    assert [s.task_id for s in steps] == ["task3", "task2", "task1", "task0"]
    assert all(s.input == b"" and s.result is None and s.progress is None for s in steps)
    assert [s.compensation for s in steps][0] == b'{"undo": 3}' and not steps.cut


def test_a_whole_compensation_plan_that_fits_is_answered(db: Database) -> None:
    # page_size 0 refuses a plan whose read was cut; the read's estimate must therefore
    # never exceed the steps' weights, or plans that fit would be refused.
    failed = replace(run(1, 0), status="FAILED")

    def seed_steps(ctx: WriteContext) -> None:
        run_rows.insert_run(ctx.conn, failed)
        for n in range(300):
            task = TaskRunRecord(
                "ns", f"t{n:03d}", failed.run_id, f"k{n}", "", 1, "COMPLETED", b"{}", 1, n
            )
            task.ended_at, task.compensation = n, b'{"undo": "%d"}' % n
            run_rows.insert_task(ctx.conn, task)

    db.write_sync(seed_steps)
    policy = planner.Policy()
    service = RecoveryService(db, None, policy, answer_bytes=100_000)  # type: ignore[arg-type]
    steps, token = asyncio.run(service.compensation_plan("ns", failed.run_id))
    assert len(steps) == 300 and not token and steps[0].task_id == "k299"
    small = RecoveryService(db, None, policy, answer_bytes=30_000)  # type: ignore[arg-type]
    with pytest.raises(ResourceExhausted):
        asyncio.run(small.compensation_plan("ns", failed.run_id))
