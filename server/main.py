"""Entry points behind ``stateward serve`` and ``stateward db``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Callable

from stateward.server import config, logs


def _settings(parser: argparse.ArgumentParser, argv: list[str]) -> config.Settings:
    args = parser.parse_args(argv)
    try:
        return config.load(args)
    except (ValueError, OSError) as error:
        parser.error(str(error))
        raise  # unreachable: parser.error exits


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop to serve on. uvloop, when installed, cuts grpc.aio's own CPU per
    call by about a quarter here (bench/README.md); "asyncio" is the standard loop."""
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise config.ConfigError(
                "event_loop = uvloop, but uvloop is not installed (pip install uvloop)"
            ) from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="stateward serve", description="Run the Stateward gRPC server."
    )
    config.add_arguments(parser)
    settings = _settings(parser, argv)
    logs.configure(settings.log_level, settings.log_format)
    from stateward.server.app import serve  # after logging is set up
    from stateward.storage.errors import StorageUnavailable
    from stateward.storage.migrate import SchemaMismatch

    # What is loaded by now lives as long as the process: keep it out of the collector's
    # full passes, which otherwise stall the event loop for 40-120 ms (fan-out p99).
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            runner.run(serve(settings))
    except (SchemaMismatch, StorageUnavailable, config.ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def db_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stateward db", description="Manage the database schema.")
    parser.add_argument(
        "action",
        choices=("upgrade", "current", "check"),
        help="upgrade: apply migrations; current: print the revision; check: exit 1 unless current",
    )
    config.add_arguments(parser)
    settings = _settings(parser, argv)
    logs.configure("WARNING", settings.log_format)
    from pathlib import Path

    from stateward.storage import Database, migrate

    if not settings.database_url:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    try:
        if parser.parse_args(argv).action == "upgrade":
            migrate.upgrade(db.write_engine)
            print(f"database at revision {migrate.current_revision(db.write_engine)}")
        elif parser.parse_args(argv).action == "current":
            print(migrate.current_revision(db.write_engine) or "none")
        else:
            migrate.check(db.write_engine)
            print("database schema is current")
    except migrate.SchemaMismatch as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        db.close()
    logging.shutdown()
    return 0
