"""Benchmark harness for Stateward: load generator, ceilings and scenarios (see README.md)."""
