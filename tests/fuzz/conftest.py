"""Prints how many hostile cases the suite sent (without needing ``-s``)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.fuzz.test_hostile_input import CASES

    if not CASES:
        return
    backends = sorted({backend for backend, _ in CASES})
    rpcs = len({name for _, name in CASES})
    per_backend = ", ".join(
        f"{b}: {sum(n for (x, _), n in CASES.items() if x == b)}" for b in backends
    )
    terminalreporter.write_line(
        f"hostile-input suite: {sum(CASES.values())} cases over {rpcs} RPCs ({per_backend})"
    )
