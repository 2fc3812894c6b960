"""Real Stateward servers for tests: in a background thread, or as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stateward.server.app import StatewardServer
from stateward.server.config import Settings


class ServerThread:
    """A StatewardServer on 127.0.0.1 with its own event loop in a daemon thread.

    Tests talk to it over real gRPC from any thread, sync or async.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = replace(settings, listen=settings.listen or "127.0.0.1:0")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="test-server"
        )
        self.thread.start()
        self.server: StatewardServer | None = None
        self.port = 0

    def call(self, fn: Callable[[], Any], timeout: float = 60) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        return future.result(timeout)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        settings = self.settings
        if self.port:  # restart on the same port so clients can reconnect
            settings = replace(settings, listen=f"127.0.0.1:{self.port}")
        self.server = StatewardServer(settings)
        self.port = self.call(self.server.start)
        return self

    def stop(self, grace: float = 0.5) -> None:
        if self.server is not None:
            server = self.server
            self.call(lambda: server.stop(grace))
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def wait_serving(target: str, timeout: float = 30.0) -> None:
    """Block until the health service at ``target`` answers SERVING."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError as error:
            last = error
        time.sleep(0.05)
    raise TimeoutError(f"server at {target} did not become SERVING: {last}")


class ServerProcess:
    """``stateward serve`` as a child process, for restart and SIGKILL tests.

    The server's stderr goes to a file, never to an unread pipe: a pipe fills after 64 KiB
    of warnings (a database outage logs plenty) and then blocks the server on its next log
    line. :meth:`diagnosis` tells a failing test whether the process is alive and what it
    last said.
    """

    def __init__(self, port: int, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = port
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._stderr = tempfile.NamedTemporaryFile(prefix="stateward-server-", suffix=".log")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        command = [
            sys.executable,
            "-c",
            "from stateward.client.cli import main; raise SystemExit(main())",
            "serve",
            "--listen",
            self.target,
            "--log-level",
            "WARNING",
            *self.args,
        ]
        self.returncode = None
        self.proc = subprocess.Popen(
            command, env=self.env, stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        try:
            wait_serving(self.target, timeout)
        except TimeoutError as error:
            reason = self.diagnosis()
            self.kill()
            raise TimeoutError(f"{error}\n{reason}") from None
        return self

    def stderr_text(self) -> str:
        with open(self._stderr.name, "rb") as log:
            return log.read().decode(errors="replace")

    def diagnosis(self, tail: int = 4000) -> str:
        """Whether the process still runs, and the end of what it wrote to stderr."""
        code = self.proc.poll() if self.proc is not None else self.returncode
        alive = "running" if self.proc is not None and code is None else f"exited ({code})"
        return f"server process {alive}; stderr ends with:\n{self.stderr_text()[-tail:]}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._forget()

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._forget()
        return code

    def _forget(self) -> None:
        if self.proc is not None:
            self.returncode = self.proc.returncode
        self.proc = None
