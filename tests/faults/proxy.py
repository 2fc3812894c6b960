"""A TCP proxy for fault tests: cuts connections at chosen moments, delays bytes at random.

It runs an asyncio loop in a daemon thread, listens on 127.0.0.1:<port> and forwards to
an upstream port. It understands just enough HTTP/2 (the 9-byte frame header) to find
the moment a gRPC answer starts: the first HEADERS frame the server sends on a
request stream (stream id != 0). A gRPC server sends it only once the handler
returned, i.e. after a mutation committed.

- ``cut_next_response()``: the next such frame is not forwarded; both sockets close
  instead. The server has committed, the client never sees the answer: exactly the
  case a retry with the same request_id must resolve without a duplicate.
- ``chaos(max_delay, lifetime)``: every chunk is delayed by up to ``max_delay`` seconds
  (order kept) and each connection is cut after a random lifetime.
"""

from __future__ import annotations

import asyncio
import random
import threading
from concurrent.futures import Future
from typing import Any

HEADERS = 0x1
FRAME_HEADER = 9


class FaultProxy:
    def __init__(self, upstream_port: int, seed: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.rng = random.Random(seed)
        self.cuts = 0
        """Connections cut by a fault (not by either end)."""
        self.connections = 0
        self._armed = 0
        self._max_delay = 0.0
        self._lifetime: tuple[float, float] | None = None
        self._lock = threading.Lock()
        self._open: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="fault-proxy"
        )
        self._server: asyncio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = self._call(self._listen())
        return self

    def close(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._open):
                task.cancel()

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ------------------------------------------------------------------

    def cut_next_response(self, count: int = 1) -> None:
        """Cut the connection carrying each of the next ``count`` gRPC answers."""
        with self._lock:
            self._armed += count

    @property
    def armed(self) -> int:
        with self._lock:
            return self._armed

    def chaos(self, max_delay: float, lifetime: tuple[float, float] | None) -> None:
        """Delay every chunk by up to ``max_delay`` s; cut each connection after a
        lifetime drawn uniformly from ``lifetime`` (None: never)."""
        self._max_delay, self._lifetime = max_delay, lifetime

    def calm(self) -> None:
        self.chaos(0.0, None)

    # -- plumbing ------------------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(30)

    async def _listen(self) -> asyncio.Server:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        self.connections += 1
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            self._open.discard(task)
            return
        pumps = [
            asyncio.create_task(self._pump(client_r, upstream_w, watch=False)),
            asyncio.create_task(self._pump(upstream_r, client_w, watch=True)),
        ]
        if self._lifetime is not None:
            pumps.append(asyncio.create_task(asyncio.sleep(self.rng.uniform(*self._lifetime))))
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if pumps[-1] in done and self._lifetime is not None:
                self.cuts += 1
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client_w, upstream_w):
                writer.transport.abort()  # a cut, not a polite close
            self._open.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: bool
    ) -> None:
        buffer = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            if self._max_delay:
                await asyncio.sleep(self.rng.uniform(0, self._max_delay))
            if not watch:
                writer.write(chunk)
                await writer.drain()
                continue
            # Forward whole frames only, so a cut lands exactly before an answer.
            buffer += chunk
            while len(buffer) >= FRAME_HEADER:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < FRAME_HEADER + length:
                    break
                frame_type = buffer[3]
                stream_id = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                if frame_type == HEADERS and stream_id != 0 and self._take_armed():
                    self.cuts += 1
                    return  # the caller aborts both sockets
                writer.write(buffer[: FRAME_HEADER + length])
                buffer = buffer[FRAME_HEADER + length :]
            await writer.drain()

    def _take_armed(self) -> bool:
        with self._lock:
            if self._armed > 0:
                self._armed -= 1
                return True
            return False
