"""Assembling and running the server: create, register, bind, start, wait, stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from stateward.server import metrics, transport
from stateward.server.config import Settings
from stateward.server.deps import Deps
from stateward.server.security import tls
from stateward.server.security.auth import Authorizer, install_sighup
from stateward.server.security.gate import AuthGate
from stateward.server.security.policy import OpenMethods
from stateward.server.servicers import execution, lifecycle, recovery, state
from stateward.server.services.health_watch import HealthWatch
from stateward.storage import Database, migrate
from stateward.storage import events as event_log
from stateward.v1 import execution_pb2, lifecycle_pb2, recovery_pb2, state_pb2

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    lifecycle_pb2.DESCRIPTOR.services_by_name["LifecycleService"].full_name,
    state_pb2.DESCRIPTOR.services_by_name["StateService"].full_name,
    execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name,
    recovery_pb2.DESCRIPTOR.services_by_name["RecoveryService"].full_name,
]


class StatewardServer:
    """One Stateward process: the database, the services and the gRPC server.

    ``start()`` binds and serves at once with health NOT_SERVING, opens and migrates
    the database, then reports SERVING; ``stop()`` reports NOT_SERVING, lets in-flight
    calls finish within the grace period and closes the database.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.health = health.aio.HealthServicer()
        self.db: Database | None = None
        self.deps: Deps | None = None
        self.port = 0
        self._server: transport.Server | None = None
        self.authorizer: Authorizer | None = None  # None: auth is off
        self.metrics_server: metrics.MetricsServer | None = None

    async def start(self) -> int:
        settings = self.settings
        if not settings.database_url or not settings.blob_url:
            Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        limit = settings.max_message_bytes
        credentials = tls.server_credentials(settings)  # unusable files fail here, before binding
        gate = None
        if settings.auth_tokens_file:
            self.authorizer = Authorizer(settings.auth_tokens_file)
            gate = AuthGate(self.authorizer, OpenMethods(settings.auth_open_methods))
            if credentials is None and not _is_loopback(settings.listen):
                log.warning("auth is on without TLS: bearer tokens cross the network in clear text")
        options: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ]
        if settings.max_concurrent_streams > 0:
            options.append(("grpc.max_concurrent_streams", settings.max_concurrent_streams))
        # No interceptors: every handler registered through `server` is wrapped once in
        # the call layer (request id, metrics, auth, parsing, access log).
        layer = transport.CallLayer(metrics=bool(settings.metrics_listen), gate=gate)
        server = transport.Server(grpc.aio.server(options=options), layer)
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        db = self._open_database()
        self.db = db
        deps = self.deps = Deps(settings, db)
        for area in (lifecycle, state, execution, recovery):
            area.register(server, deps)
        deps.background.append(HealthWatch(db, self._report_health).run)
        if credentials is not None:
            self.port = server.add_secure_port(settings.listen, credentials)
        else:
            self.port = server.add_insecure_port(settings.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.listen}")
        if settings.metrics_listen:
            self.metrics_server = metrics.MetricsServer(settings.metrics_listen)
            db.observer = metrics.observe_db
            db.on_commit(metrics.record_event_heads)

            async def read_event_heads() -> None:  # the gauge is right before the first write
                metrics.set_event_heads(await db.read(event_log.all_heads))

            deps.startup.append(read_event_heads)
        await server.start()
        self._server = server
        log.info(
            "listening",
            extra={
                "listen": settings.listen,
                "port": self.port,
                "tls": credentials is not None,
                "mutual_tls": bool(settings.tls_client_ca),
                "auth": self.authorizer is not None,
                "event_loop": type(asyncio.get_running_loop()).__module__.partition(".")[0],
            },
        )
        await asyncio.to_thread(self._prepare_database, db)
        db.start()
        for hook in deps.startup:
            await hook()
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        deps.start_background()
        log.info("serving", extra={"database": db.dialect})
        return self.port

    async def _report_health(self, serving: bool) -> None:
        reply = health_pb2.HealthCheckResponse
        status = reply.SERVING if serving else reply.NOT_SERVING
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, status)  # ignored once shutdown began

    def _open_database(self) -> Database:
        s = self.settings
        return Database(
            s.resolved_database_url,
            sqlite_synchronous=s.sqlite_synchronous,
            read_threads=s.read_threads,
            pack_events=s.pack_events,
        )

    def _prepare_database(self, db: Database) -> None:
        if self.settings.migrate:
            migrate.upgrade(db.write_engine)
        migrate.check(db.write_engine)

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        if self.deps is not None:
            for hook in self.deps.shutdown:
                await hook()
            await self.deps.stop_background()
        if self._server is not None:
            await self._server.stop(self.settings.grace_period if grace is None else grace)
            self._server = None
        if self.db is not None:
            await asyncio.to_thread(self.db.close)
            self.db = None
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    server = StatewardServer(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await server.start()
        if server.authorizer is not None:
            install_sighup(loop, server.authorizer)
        await stopping.wait()
        log.info("shutting down", extra={"grace_period": settings.grace_period})
    finally:
        await server.stop()


def _is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")
