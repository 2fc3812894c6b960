"""Server settings: command-line flags, then STATEWARD_* environment variables, then an
optional TOML file, then the embedded defaults, in that order of precedence."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting names a file or value the server cannot use; reported without a traceback."""


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class Settings:
    """Every server option; the README's configuration table lists the same."""

    listen: str = _opt("127.0.0.1:50051", "address to serve gRPC on (host:port)")
    data_dir: str = _opt("./stateward-data", "directory for the embedded SQLite database and blobs")
    database_url: str = _opt("", "SQLAlchemy URL; empty means SQLite under the data directory")
    blob_url: str = _opt("", "fsspec URL for checkpoint blobs; empty means <data-dir>/checkpoints")
    migrate: bool = _opt(True, "apply database migrations on start")
    sqlite_synchronous: str = _opt(
        "FULL",
        "SQLite synchronous pragma: FULL survives power loss, NORMAL only a crash",
        choices=("FULL", "NORMAL"),
    )
    grace_period: float = _opt(10.0, "seconds in-flight calls get to finish on shutdown")
    log_level: str = _opt("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_format: str = _opt("text", "log line format", choices=("text", "json"))
    max_message_bytes: int = _opt(8 << 20, "largest gRPC message accepted, in bytes")
    event_loop: str = _opt(
        "auto",
        "asyncio event loop: uvloop (auto: when installed) or the standard library's",
        choices=("auto", "uvloop", "asyncio"),
    )
    read_threads: int = _opt(4, "threads serving database reads")
    idempotency_window: float = _opt(86400.0, "seconds a request_id's answer is kept for retries")
    # State (versioned documents)
    state_max_bytes: int = _opt(4 << 20, "largest state document accepted, in bytes")
    state_history: int = _opt(
        100, "state versions kept per agent (checkpointed ones are never pruned)"
    )
    cache_bytes: int = _opt(64 << 20, "memory for the hot-read cache of agents and latest states")
    state_migrations: str = _opt("", "Python module that registers state schema migrations")
    # Execution (runs, tasks, events)
    sweep_interval: float = _opt(1.0, "seconds between lease sweeps of task runs and workflow runs")
    subscriber_buffer: int = _opt(
        1024, "events buffered per subscriber before it falls back to catch-up"
    )
    max_subscribers: int = _opt(1000, "concurrent SubscribeEvents streams per server")
    pack_events: bool = _opt(
        True,
        "store a batch's events with the same owners as one row (revision 0005); turn off "
        "while replicas older than 0005 still serve",
    )
    # Recovery (checkpoints, retention)
    blob_compression: str = _opt(
        "none", "compression of stored checkpoint blobs", choices=("none", "zstd")
    )
    blob_options: str = _opt(
        "",
        "fsspec storage options for blob_url and archive_url, a JSON object such as "
        '{"endpoint_url": "http://127.0.0.1:9000"}; S3 credentials come from the AWS environment',
    )
    blob_gc_grace: float = _opt(3600.0, "seconds before a blob without a manifest is collected")
    checkpoint_keep_last: int = _opt(0, "checkpoints kept per agent by retention; 0 keeps all")
    checkpoint_max_age: float = _opt(
        0.0, "seconds after which retention deletes checkpoints; 0 never"
    )
    retention_interval: float = _opt(300.0, "seconds between background retention runs; 0 disables")
    archive_url: str = _opt(
        "", "fsspec URL prefix for run archives; empty means <data-dir>/archives"
    )
    retry_timeout_factor: float = _opt(
        2.0, "recovery plans multiply a timed-out task's timeout by this"
    )
    retry_timeout_cap: float = _opt(3600.0, "upper bound in seconds for a suggested timeout")
    retry_backoff_base: float = _opt(1.0, "base delay in seconds for RETRY_WITH_BACKOFF plans")
    retry_backoff_cap: float = _opt(300.0, "upper bound in seconds for a backoff delay")
    # Security and operations (see docs/operations.md)
    tls_cert: str = _opt("", "PEM certificate chain the server presents; TLS is on when set")
    tls_key: str = _opt("", "PEM private key of tls_cert")
    tls_client_ca: str = _opt("", "PEM CA bundle client certificates must chain to (mutual TLS)")
    auth_tokens_file: str = _opt("", "TOML file of hashed tokens; auth is on when set")
    auth_open_methods: str = _opt(
        "grpc.health.v1.Health,grpc.reflection.v1alpha.ServerReflection,"
        "grpc.reflection.v1.ServerReflection",
        "comma-separated services or /service/method paths answered without a token",
    )
    metrics_listen: str = _opt("", "host:port for the Prometheus /metrics endpoint; empty: off")
    max_concurrent_streams: int = _opt(1000, "open calls allowed per connection; 0: no limit")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'stateward.db'}"

    @property
    def resolved_archive_url(self) -> str:
        if self.archive_url:
            return self.archive_url
        return f"file://{Path(self.data_dir).resolve() / 'archives'}"

    @property
    def resolved_blob_url(self) -> str:
        if self.blob_url:
            return self.blob_url
        return f"file://{Path(self.data_dir).resolve() / 'checkpoints'}"


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if kind in (bool, "bool"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    converter = {"int": int, "float": float, "str": str}.get(
        kind if isinstance(kind, str) else kind.__name__, str
    )
    try:
        return converter(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {converter.__name__}, got {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; defaults stay None so we can tell what was given."""
    parser.add_argument("--config", help="TOML file with settings (env STATEWARD_CONFIG)")
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{f.metadata['help']} (default {f.default})",
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                default=None,
                choices=f.metadata.get("choices"),
                help=f"{f.metadata['help']} (default {f.default})",
            )


def load(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Resolve settings with the documented precedence; raises ValueError on bad values."""
    environ = dict(os.environ if environ is None else environ)
    given = vars(args) if args is not None else {}
    values: dict[str, Any] = {}
    config_file = given.get("config") or environ.get("STATEWARD_CONFIG")
    if config_file:
        with open(config_file, "rb") as handle:
            table = tomllib.load(handle)
        table = table.get("stateward", table)
        known = {f.name for f in dataclasses.fields(Settings)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"{config_file}: unknown settings {', '.join(unknown)}")
        values.update(table)
    for f in dataclasses.fields(Settings):
        env = environ.get("STATEWARD_" + f.name.upper())
        if env is not None:
            values[f.name] = env
        if given.get(f.name) is not None:
            values[f.name] = given[f.name]
    resolved = {}
    for f in dataclasses.fields(Settings):
        if f.name in values:
            resolved[f.name] = _coerce(f.name, f.type, values[f.name])
            choices = f.metadata.get("choices")
            if choices and resolved[f.name] not in choices:
                raise ValueError(f"{f.name}: must be one of {', '.join(choices)}")
    return Settings(**resolved)
