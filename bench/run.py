"""Run the benchmark scenarios; write bench/results/<UTC timestamp>.json; print the table.

    python -m bench.run                 # quick set (make bench)
    python -m bench.run --full          # + scale, soak and PostgreSQL (make bench-full)
    python -m bench.run --duration 2    # smoke test of the harness

Every throughput is reported next to a ceiling or alternative measured in the same
run, because absolute numbers on a shared 2-core VM drift from run to run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import grpc

from bench import checkpoints, disk, fanout, langgraph_bench, naive, procstat, seed
from bench.loadgen import LoadResult, run_load
from bench.server import EchoServer, Stateward

RESULTS = Path(__file__).resolve().parent / "results"
CHECKPOINT_ROUNDS = 3  # alternating rounds of the checkpoint transfer figures
MiB = 1 << 20


class Report:
    def __init__(self) -> None:
        self.figures: list[dict[str, Any]] = []
        self.raw: dict[str, Any] = {}

    def add(
        self,
        figure: str,
        value: float | None,
        unit: str,
        *,
        ref_name: str = "",
        ref: float | None = None,
        target: str = "",
        ok: bool | None = None,
        ratio: float | None = None,
    ) -> None:
        if ratio is None and value is not None and ref:
            ratio = value / ref
        self.figures.append(
            {
                "figure": figure,
                "value": value,
                "unit": unit,
                "reference": ref_name,
                "reference_value": ref,
                "ratio": ratio,
                "target": target,
                "pass": ok,
            }
        )
        print(
            f"  {figure}: {_fmt(value)} {unit}"
            + (f" vs {ref_name} {_fmt(ref)} (x{ratio:.2f})" if ref and ratio else "")
            + (f" [{_verdict(ok)}]" if target else ""),
            flush=True,
        )

    def at_least(
        self,
        figure: str,
        value: float,
        unit: str,
        ref_name: str,
        ref: float,
        minimum: float,
        *,
        enforced: bool = True,
    ) -> None:
        """``enforced=False``: the ratio is reported, the target belongs to another setup."""
        self._ratio(figure, value, unit, ref_name, ref, minimum, ">=", enforced)

    def at_most(
        self,
        figure: str,
        value: float,
        unit: str,
        ref_name: str,
        ref: float,
        maximum: float,
        *,
        enforced: bool = True,
    ) -> None:
        """``enforced=False``: the ratio is reported, the target belongs to another setup."""
        self._ratio(figure, value, unit, ref_name, ref, maximum, "<=", enforced)

    def _ratio(
        self,
        figure: str,
        value: float,
        unit: str,
        ref_name: str,
        ref: float,
        bound: float,
        op: str,
        enforced: bool,
    ) -> None:
        ratio = value / ref if ref else math.nan
        ok = ratio >= bound if op == ">=" else ratio <= bound
        self.add(
            figure,
            value,
            unit,
            ref_name=ref_name,
            ref=ref,
            ratio=ratio,
            target=f"{op} {bound}x" if enforced else "",
            ok=ok if enforced else None,
        )

    def skip(self, figure: str, reason: str) -> None:
        self.figures.append(
            {
                "figure": figure,
                "value": None,
                "unit": "",
                "reference": reason,
                "reference_value": None,
                "ratio": None,
                "target": "",
                "pass": None,
            }
        )
        print(f"  {figure}: SKIPPED ({reason})", flush=True)

    def table(self) -> str:
        lines = [
            "| figure | value | ceiling or alternative | ratio | target | pass/fail |",
            "|---|---|---|---|---|---|",
        ]
        for f in self.figures:
            value = "—" if f["value"] is None else f"{_fmt(f['value'])} {f['unit']}"
            ref = f["reference"] + (
                f" {_fmt(f['reference_value'])}" if f["reference_value"] is not None else ""
            )
            ratio = "—" if f["ratio"] is None else f"{f['ratio']:.2f}"
            verdict = (
                _verdict(f["pass"])
                if f["target"]
                else ("skipped" if f["value"] is None else "info")
            )
            lines.append(
                f"| {f['figure']} | {value} | {ref or '—'} | {ratio} | {f['target'] or '—'} "
                f"| {verdict} |"
            )
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _verdict(ok: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "skipped"}[ok]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.report = Report()
        self.root = Path(tempfile.mkdtemp(prefix="stateward-bench-", dir=args.data_root))
        self.echo = EchoServer()
        self.echo_results: dict[int, LoadResult] = {}

    def load(
        self, target: str, scenario: str, in_flight: int, server_pid: int, **kw: Any
    ) -> LoadResult:
        kw.setdefault("duration", self.args.duration)
        result = run_load(
            target,
            f"bench.scenarios:{scenario}",
            in_flight=in_flight,
            processes=self.args.processes,
            server_pid=server_pid,
            **kw,
        )
        key = f"{kw.pop('label', scenario)}@{in_flight}"
        self.report.raw[key] = result.summary()
        print(
            f"    {key}: {result.calls_per_s:,.0f} calls/s p50 {result.p50_ms:.2f} ms "
            f"p99 {result.p99_ms:.2f} ms "
            f"p999 {result.p999_ms:.2f} ms client CPU {result.client_cpu_s:.1f}s server CPU "
            f"{result.server_cpu_s or 0:.1f}s errors {result.errors}",
            flush=True,
        )
        return result

    def step(self, name: str, fn: Any, *args: Any) -> None:
        key = fn.__name__
        if self.args.only and key not in self.args.only.split(","):
            return
        print(f"## {name}", flush=True)
        started = time.monotonic()
        try:
            fn(*args)
        except Exception as error:  # one broken scenario must not hide the others
            traceback.print_exc()
            detail = (
                error.details()
                if isinstance(error, grpc.RpcError) and hasattr(error, "details")
                else error
            )
            self.report.skip(
                name, " ".join(f"error: {type(error).__name__}: {detail}".split())[:200]
            )
        self.report.raw.setdefault("timings_s", {})[name] = time.monotonic() - started

    # -- environment ----------------------------------------------------------------------------

    def environment(self) -> None:
        sync = disk.fdatasync_latency(self.root)
        self.report.raw["fdatasync"] = sync
        self.report.add("fdatasync p50 (data dir disk)", sync["p50_ms"], "ms")
        self.report.add("fdatasync p99 (data dir disk)", sync["p99_ms"], "ms")
        if sync["p50_ms"] < 1.0:
            print(
                "  note: fdatasync under 1 ms means a host-cached virtual disk: "
                "durable figures are an "
                "upper bound of what a disk with honest flushes would give.",
                flush=True,
            )

    # -- 1. echo ceiling ------------------------------------------------------------------------

    def ceiling(self) -> None:
        for in_flight in (1, 16, 64):
            result = self.load(self.echo.target, "echo", in_flight, self.echo.pid, label="echo")
            self.echo_results[in_flight] = result
            self.report.add(f"echo ceiling calls/s @{in_flight}", result.calls_per_s, "calls/s")
            self.report.add(f"echo ceiling p99 @{in_flight}", result.p99_ms, "ms")

    def echo_at(self, in_flight: int) -> LoadResult:
        """The echo ceiling to compare with: re-measured right before each figure when
        --paired (the default), so neighbours' load drifts equally on both sides."""
        if self.args.paired or in_flight not in self.echo_results:
            self.echo_results[in_flight] = self.load(
                self.echo.target, "echo", in_flight, self.echo.pid, label="echo"
            )
        return self.echo_results[in_flight]

    # -- 2-5. unary hot paths -------------------------------------------------------------------

    def unary(self, server: Stateward, tag: str = "") -> None:
        plan = {
            "agents": [
                ("hot", 64, False, True),
                ("save", 1000, False, False),
                ("life", 1000, True, False),
            ],
            "runs": [("append", 16)],
        }
        made = seed.seed(server.target, plan)
        pid = server.pid
        for in_flight in (16, 64):
            echo = self.echo_at(in_flight)
            r = self.load(
                server.target,
                "get_state",
                in_flight,
                pid,
                params={"agents": [f"hot-{i:06d}" for i in range(64)]},
                label=f"{tag}get_state",
            )
            self.report.at_least(
                f"{tag}GetState calls/s @{in_flight}",
                r.calls_per_s,
                "calls/s",
                f"echo @{in_flight}",
                echo.calls_per_s,
                0.7,
                enforced=not tag,
            )
            self.report.at_most(
                f"{tag}GetState p99 @{in_flight}",
                r.p99_ms,
                "ms",
                f"echo p99 @{in_flight}",
                echo.p99_ms,
                2.0,
                enforced=not tag,
            )
        echo = self.echo_at(64)
        r = self.load(
            server.target,
            "save_state",
            64,
            pid,
            params={"prefix": "save", "agents": 1000},
            label=f"{tag}save_state",
        )
        self.report.at_least(
            f"{tag}SaveState durable calls/s @64 (1,000 agents)",
            r.calls_per_s,
            "calls/s",
            "echo @64",
            echo.calls_per_s,
            0.3 if tag else 0.5,
        )
        self._errors(f"{tag}SaveState", r)
        if not tag:
            naive_result = naive.run(self.root, self.args.duration)
            self.report.raw["naive_orm"] = naive_result
            self.report.at_least(
                "SaveState vs naive ORM merge+commit",
                r.calls_per_s,
                "calls/s",
                "naive ORM in-process",
                naive_result["calls_per_s"],
                2.0,
            )
        echo = self.echo_at(64)
        r = self.load(
            server.target,
            "lifecycle",
            64,
            pid,
            params={"prefix": "life", "agents": 1000, "slots": 64},
            label=f"{tag}lifecycle",
        )
        self.report.at_least(
            f"{tag}Pause/Resume transitions/s @64",
            r.calls_per_s,
            "calls/s",
            "echo @64",
            echo.calls_per_s,
            0.4,
            enforced=not tag,
        )
        self._errors(f"{tag}transitions", r)
        r = self.load(
            server.target,
            "append_events",
            16,
            pid,
            params={"run_ids": made["append"], "batch": 100},
            items_per_call=100,
            label=f"{tag}append_events",
        )
        self.report.add(
            f"{tag}AppendEvents events/s (100 x 200 B batches @16)",
            r.items_per_s,
            "events/s",
            target="" if tag else ">= 100,000",
            ok=None if tag else r.items_per_s >= 100_000,
        )
        self._errors(f"{tag}AppendEvents", r)

    def _errors(self, what: str, r: LoadResult, allowed: tuple[str, ...] = ()) -> None:
        bad = {k: v for k, v in r.errors.items() if k not in allowed}
        if bad:
            self.report.add(
                f"{what} errors", sum(bad.values()), f"calls {bad}", target="0", ok=False
            )

    # -- 6. fan-out -----------------------------------------------------------------------------

    def fan_out(self, server: Stateward, tag: str = "") -> None:
        name = f"{tag.strip().lower()}fan"
        run_id = seed.seed(server.target, {"runs": [(name, 1)]})[name][0]
        dur, procs = self.args.duration, self.args.processes
        steady = fanout.run_fanout(
            server.target,
            mode="stateward",
            duration=dur,
            rate=200,
            run_id=run_id,
            after=seed.primer(server.target, run_id),
            server_pid=server.pid,
            processes=procs,
        )
        self.report.raw[f"{tag}fanout_200"] = steady
        self.report.add(
            f"{tag}fan-out 50 subs @200 ev/s: every subscriber got every event",
            steady["min_received"],
            f"of {steady['written']} events (min per subscriber)",
            target="all",
            ok=steady["every_subscriber_got_every_event"],
        )
        self.report.add(
            f"{tag}fan-out commit-to-delivery p99",
            steady["p99_ms"],
            "ms",
            target="" if tag else "<= 25 ms",
            ok=None if tag else steady["p99_ms"] <= 25,
        )
        burst = fanout.run_fanout(
            server.target,
            mode="stateward",
            duration=dur,
            rate=0,
            run_id=run_id,
            after=seed.primer(server.target, run_id),
            server_pid=server.pid,
            processes=procs,
        )
        self.report.raw[f"{tag}fanout_max"] = burst
        bare = self.report.raw.get("fanout_bare") or fanout.run_fanout(
            self.echo.target, mode="bare", duration=dur, server_pid=self.echo.pid, processes=procs
        )
        self.report.raw["fanout_bare"] = bare
        self.report.at_least(
            f"{tag}fan-out max deliveries/s (50 subs)",
            burst["deliveries_per_s"],
            "msg/s",
            "bare grpc.aio streaming",
            bare["deliveries_per_s"],
            0.5,
            enforced=not tag,
        )
        if not burst["every_subscriber_got_every_event"]:
            self.report.add(
                f"{tag}fan-out at max rate: min events per subscriber",
                burst["min_received"],
                f"of {burst['written']}",
                target="all",
                ok=False,
            )

    # -- 7. checkpoints -------------------------------------------------------------------------

    def checkpoints(self, server: Stateward) -> None:
        total = self.args.checkpoint_mib * MiB
        seed.seed(server.target, {"agents": [("ckpt", 1, False, False)]})
        # Rounds alternate disk, bare gRPC and Stateward, and each keeps its fastest: a
        # neighbour's burst then costs one round, not one side of a ratio.
        rounds: tuple[list[dict[str, Any]], ...] = ([], [], [])
        for _ in range(CHECKPOINT_ROUNDS):
            rounds[0].append(disk.sequential(self.root, total))
            rounds[1].append(checkpoints.run_bare(self.echo.target, total))
            rounds[2].append(
                checkpoints.run_stateward(
                    server.target, "ckpt-000000", total, server.pid, server.data_dir
                )
            )
        raw, bare, ours = (checkpoints.best(each) for each in rounds)
        self.report.raw["checkpoint"] = {"raw_disk": raw, "bare_grpc": bare, "stateward": ours}
        size = f"{self.args.checkpoint_mib} MiB"
        for way, disk_key in (("upload", "write_MiBps"), ("download", "read_MiBps")):
            value, raw_v, bare_v = ours[f"{way}_MiBps"], raw[disk_key], bare[f"{way}_MiBps"]
            kind = "write+fsync" if way == "upload" else "read"
            if bare_v < 0.5 * raw_v:  # gRPC itself caps below the disk target: 0.8 of the transport
                self.report.at_least(
                    f"checkpoint {way} {size}",
                    value,
                    "MiB/s",
                    f"bare grpc.aio bytes (disk {kind} {raw_v:,.0f})",
                    bare_v,
                    0.8,
                )
            else:
                self.report.at_least(
                    f"checkpoint {way} {size}",
                    value,
                    "MiB/s",
                    f"raw disk {kind} (bare gRPC {bare_v:,.0f})",
                    raw_v,
                    0.5,
                )
        growth = max(ours["upload_rss_growth_MiB"], ours["download_rss_growth_MiB"])
        self.report.add(
            f"server RSS growth during {size} transfer",
            growth,
            "MiB",
            target="<= 64 MiB",
            ok=growth <= 64,
        )
        if self.args.full:
            big = checkpoints.run_stateward(
                server.target, "ckpt-000000", 1024 * MiB, server.pid, None
            )
            self.report.raw["checkpoint_1GiB"] = big
            self.report.add(
                "server RSS growth during 1 GiB upload",
                big["upload_rss_growth_MiB"],
                "MiB",
                target="<= 64 MiB",
                ok=big["upload_rss_growth_MiB"] <= 64,
            )

    # -- 8. LangGraph ---------------------------------------------------------------------------

    def langgraph(self, server: Stateward, pg_url: str | None = None) -> None:
        """SQLite server vs SqliteSaver; in the PostgreSQL step, PG server vs PostgresSaver."""
        tag = "PG " if pg_url else ""
        reason = langgraph_bench.available()
        if reason:
            self.report.skip(f"{tag}LangGraph StatewardSaver put+get_tuple", reason)
            return
        saver, close = langgraph_bench.stateward_saver(server.target)
        ours = {}
        try:
            for threads in (1, 16):
                ours[threads] = langgraph_bench.pairs_per_s(
                    saver, threads, self.args.duration, f"sw{threads}", server_pid=server.pid
                )
        finally:
            close()
        self.report.raw[f"{tag}langgraph_stateward"] = ours
        for threads in (1, 16):
            self.report.add(
                f"{tag}LangGraph StatewardSaver put+get_tuple @{threads}",
                ours[threads]["pairs_per_s"],
                "pairs/s",
            )
        alternatives = (
            [("PostgresSaver", lambda: langgraph_bench.postgres_saver(pg_url), 1.0)]
            if pg_url
            else [("SqliteSaver", lambda: langgraph_bench.sqlite_saver(self.root), 0.5)]
        )
        for name, make, minimum in alternatives:
            made = make()
            if isinstance(made, str):
                self.report.skip(f"LangGraph vs {name}", made)
                continue
            other, close_other = made
            try:
                for threads in (1, 16):
                    theirs = langgraph_bench.pairs_per_s(
                        other, threads, self.args.duration, f"{name}{threads}"
                    )
                    self.report.raw[f"langgraph_{name}_{threads}"] = theirs
                    if threads == 16:
                        self.report.at_least(
                            f"LangGraph put+get @16 vs {name}",
                            ours[16]["pairs_per_s"],
                            "pairs/s",
                            name,
                            theirs["pairs_per_s"],
                            minimum,
                        )
                    else:
                        self.report.add(
                            f"LangGraph put+get @1 vs {name} (reported, no target)",
                            ours[1]["pairs_per_s"],
                            "pairs/s",
                            ref_name=name,
                            ref=theirs["pairs_per_s"],
                        )
            finally:
                close_other()

    # -- full: soak, scale, PostgreSQL ----------------------------------------------------------

    def soak(self, server: Stateward) -> None:
        made = seed.seed(
            server.target, {"agents": [("soak", 1000, True, True)], "runs": [("soakrun", 16)]}
        )
        minutes = self.args.soak_minutes
        params = {
            "prefix": "soak",
            "agents": 1000,
            "slots": 64,
            "run_ids": made["soakrun"],
            "batch": 10,
        }
        rss, errors, calls = [], {}, 0
        for minute in range(1, int(math.ceil(minutes)) + 1):
            r = self.load(
                server.target,
                "mixed",
                64,
                server.pid,
                params=params,
                duration=60.0 * min(1.0, minutes - minute + 1),
                label=f"soak_min{minute}",
            )
            rss.append(procstat.rss_bytes(server.pid) / MiB)
            calls += r.calls
            for k, v in r.errors.items():
                errors[k] = errors.get(k, 0) + v
        self.report.raw["soak"] = {"rss_MiB_by_minute": rss, "errors": errors, "calls": calls}
        unexpected = {k: v for k, v in errors.items() if k != "ABORTED"}
        self.report.add(
            f"soak {minutes} min mixed @64: unexpected errors",
            sum(unexpected.values()),
            f"of {calls} calls {unexpected or ''}",
            target="0",
            ok=not unexpected,
        )
        self.report.at_most(
            f"soak RSS at minute {len(rss)}", rss[-1], "MiB", "RSS at minute 1", rss[0], 1.1
        )

    def scale(self) -> None:
        from bench import scale

        scale.run(self, self.root)

    def postgres(self) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.support.postgres import PostgresCluster

        cluster = PostgresCluster(fsync=True).start()
        try:
            url = cluster.create_database("bench")
            server = Stateward(self.root / "pg-data", database_url=url).start()
            try:
                self.unary(server, tag="PG ")
                self.fan_out(server, tag="PG ")
                if self.args.langgraph_pg:
                    self.langgraph(
                        server,
                        cluster.create_database("langgraph").replace(
                            "postgresql+psycopg", "postgresql"
                        ),
                    )
            finally:
                server.stop()
        finally:
            cluster.destroy()

    # -- driver ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.report.raw["machine"] = {
            "platform": platform.platform(),
            "python": platform.python_version(),
            # stateward serve's loop; the ceilings run on the default one (same unless overridden)
            "event_loop": os.environ.get("STATEWARD_EVENT_LOOP", "auto").replace(
                "auto", "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
            ),
            "loadavg_start": procstat.loadavg(),
            "args": vars(self.args),
        }
        self.step("environment: fdatasync", self.environment)
        self.echo.start()
        self.report.raw["echo_server_pid"] = self.echo.pid
        server = Stateward(self.root / "data")
        try:
            server.start()
            self.step("1. echo ceiling", self.ceiling)
            self.step("2-5. GetState, SaveState, transitions, AppendEvents", self.unary, server)
            self.step("6. fan-out", self.fan_out, server)
            self.step("7. checkpoints", self.checkpoints, server)
            self.step("8. LangGraph", self.langgraph, server)
            if self.args.full or self.args.only:
                self.step("10. soak", self.soak, server)
            server.stop()
            if self.args.full or self.args.only:
                self.step("9. scale", self.scale)
                self.step("11. PostgreSQL", self.postgres)
            if not self.args.only or "environment" in self.args.only:
                # The disk's flush latency drifts with the neighbours' load: sample it again.
                end = disk.fdatasync_latency(self.root)
                self.report.raw["fdatasync_end"] = end
                self.report.add("fdatasync p50 at the end of the run", end["p50_ms"], "ms")
                self.report.add("fdatasync p99 at the end of the run", end["p99_ms"], "ms")
        finally:
            server.stop()
            self.echo.stop()
            if not self.args.keep:
                shutil.rmtree(self.root, ignore_errors=True)
        self.report.raw["machine"]["loadavg_end"] = procstat.loadavg()
        self.report.raw["elapsed_s"] = time.monotonic() - started
        return {"figures": self.report.figures, "raw": self.report.raw}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stateward benchmarks (see bench/README.md).")
    parser.add_argument("--quick", action="store_true", help="the quick set (the default)")
    parser.add_argument("--full", action="store_true", help="add scale, soak and PostgreSQL")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measured scenario")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--checkpoint-mib", type=int, default=256, help="checkpoint transfer size")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--scale-events", type=int, default=1_000_000)
    parser.add_argument("--scale-agents", type=int, default=100_000)
    parser.add_argument(
        "--langgraph-pg",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="in the PostgreSQL step, StatewardSaver vs PostgresSaver",
    )
    parser.add_argument(
        "--data-root", default=None, help="where the temp data dir goes (default: $TMPDIR)"
    )
    parser.add_argument(
        "--paired",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="re-measure the echo ceiling right before each figure compared with it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated steps: environment, ceiling, unary, "
        "fan_out, checkpoints, langgraph, soak, scale, postgres",
    )
    args = parser.parse_args(argv)
    bench = Bench(args)
    print(f"data dir: {bench.root}; load average {procstat.loadavg()}", flush=True)
    result = bench.run()
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    sync = result["raw"].get("fdatasync", {})
    machine = result["raw"]["machine"]
    print(
        f"\n# Stateward benchmarks ({'full' if args.full else 'quick'}, "
        f"{args.duration:g} s per scenario, servers on {machine['event_loop']}, load average "
        f"{machine['loadavg_start']} -> {machine['loadavg_end']})\n"
    )
    print(bench.report.table())
    print(
        f"\nfdatasync on the data dir: p50 {sync.get('p50_ms', math.nan):.3f} ms, "
        f"p99 {sync.get('p99_ms', math.nan):.3f}"
        " ms. On host-cached virtual disks fsync is cheap, so durable figures are an upper bound."
    )
    print(f"results: {out}")
    failed = [f for f in bench.report.figures if f["pass"] is False]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
