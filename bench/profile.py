"""Profile the server under one scenario with py-spy; print the hottest functions.

    .venv/bin/python -m bench.profile save_state --seconds 10 [--in-flight 64] [--native]

Writes the collapsed stacks to bench/results/profile-<scenario>.txt (load them in
speedscope or flamegraph.pl) and prints the top functions by own and by total samples.
Needs py-spy (``pip install py-spy``); it must be allowed to ptrace the server (root
or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench import seed
from bench.loadgen import run_load
from bench.run import RESULTS
from bench.server import Stateward

PARAMS = {
    "get_state": {"agents": [f"hot-{i:06d}" for i in range(64)]},
    "save_state": {"prefix": "save", "agents": 1000},
    "lifecycle": {"prefix": "life", "agents": 1000, "slots": 64},
    "append_events": {"batch": 100},
}


def summarize(path: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples", "", "own %  function"]
    lines += [f"{100 * n / samples:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "total %  function"]
    lines += [f"{100 * n / samples:5.1f}  {f}" for f, n in total.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(PARAMS))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--native", action="store_true", help="include C frames (slower)")
    parser.add_argument("--gil", action="store_true", help="only the thread holding the GIL")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(__file__).resolve().parent.parent / ".venv/bin/py-spy")
    root = Path(tempfile.mkdtemp(prefix="stateward-profile-"))
    server = Stateward(root / "data").start()
    try:
        made = seed.seed(
            server.target,
            {
                "agents": [
                    ("hot", 64, False, True),
                    ("save", 1000, False, False),
                    ("life", 1000, True, False),
                ],
                "runs": [("append", 16)],
            },
        )
        params = {**PARAMS[args.scenario], "run_ids": made["append"]}
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"profile-{args.scenario}.txt"
        command = [
            spy,
            "record",
            "--pid",
            str(server.pid),
            "--duration",
            str(int(args.seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ]
        if args.gil:
            command.append("--gil")
        if args.native:
            command.append("--native")
        load = threading.Thread(
            target=run_load,
            args=(server.target, f"bench.scenarios:{args.scenario}"),
            kwargs={"in_flight": args.in_flight, "duration": args.seconds + 4, "params": params},
            daemon=True,
        )
        load.start()
        subprocess.run(command, check=True, capture_output=True)
        load.join()
        print(summarize(out))
        print(f"\ncollapsed stacks: {out}")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
