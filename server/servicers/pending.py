"""Servicers for capabilities that have not landed: every RPC answers UNIMPLEMENTED
with a message naming the capability, the only placeholder the contract allows."""

from __future__ import annotations

from typing import Any

import grpc


def pending_servicer(base: type, capability: str) -> Any:
    """An instance of ``base`` whose every RPC is UNIMPLEMENTED, naming ``capability``."""

    def make(name: str) -> Any:
        async def method(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{name} belongs to {capability}, which this Stateward server does not provide yet",
            )

        method.__name__ = name
        return method

    names = [n for n in vars(base) if n[:1].isupper()]
    return type(f"Pending{base.__name__}", (base,), {n: make(n) for n in names})()
