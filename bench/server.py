"""Start the servers under test as subprocesses: ``stateward serve`` and the bare echo server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(target: str, timeout: float = 60.0) -> float:
    """Block until the health check answers SERVING; returns the seconds waited."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout:
        try:
            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - start
        except grpc.RpcError as error:
            last = error
        time.sleep(0.02)
    raise TimeoutError(f"server at {target} did not become SERVING: {last}")


class Stateward:
    """A real ``stateward serve`` on a data directory (SQLite unless a database URL is given)."""

    def __init__(
        self, data_dir: Path, database_url: str = "", extra: list[str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.args = [
            "--listen",
            self.target,
            "--data-dir",
            str(data_dir),
            "--log-level",
            "WARNING",
            *(["--database-url", database_url] if database_url else []),
            *(extra or []),
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.server.log"
        self.start_to_serving_s = 0.0

    def start(self, timeout: float = 120.0) -> Stateward:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-c",
            "from stateward.client.cli import main; raise SystemExit(main())",
            "serve",
            *self.args,
        ]
        started = time.monotonic()
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab")
        )
        try:
            wait_serving(self.target, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"stateward serve did not start; see {self.log}") from None
        self.start_to_serving_s = time.monotonic() - started
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class EchoServer:
    """``python -m bench.echo_server`` as a subprocess."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.target = ""

    def start(self) -> EchoServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.echo_server"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            raise RuntimeError(f"echo server did not start: {line}")
        self.target = f"127.0.0.1:{line[1]}"
        asyncio.run(_ready(self.target))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


async def _ready(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
