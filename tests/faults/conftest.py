"""Repeats every ``[faults]`` summary line at the end of the run, with the total lost."""

from __future__ import annotations

import re
from typing import Any

from tests.faults.workload import SUMMARIES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SUMMARIES:
        return
    terminalreporter.section("fault injection summary")
    for line in SUMMARIES:
        terminalreporter.write_line(line)
    lost = sum(int(m) for line in SUMMARIES for m in re.findall(r"\blost=(\d+)", line))
    terminalreporter.write_line(f"[faults] total lost={lost}")
