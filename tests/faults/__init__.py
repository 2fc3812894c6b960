"""Fault-injection tests: crash loops, outages, retries through a cutting proxy, disk full.

The reduced counts run in ``make test``; ``make faults`` (STATEWARD_FAULTS=full) runs
the full ones. Each test prints a ``[faults]`` summary line with its counts.
"""
