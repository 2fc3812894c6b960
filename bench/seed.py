"""Create the agents, states and runs the scenarios need, over RPC, before measuring."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from bench.loadgen import CHANNEL_OPTIONS
from bench.scenarios import agent_ids, document
from stateward.v1 import (
    execution_pb2,
    execution_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)


async def _bounded(
    items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]], limit: int = 64
) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(item: Any) -> Any:
        async with gate:
            return await fn(item)

    return await asyncio.gather(*(one(item) for item in items))


async def _seed(target: str, plan: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        life = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        state = state_pb2_grpc.StateServiceStub(channel)
        execution = execution_pb2_grpc.ExecutionServiceStub(channel)

        async def create(agent: str, *, activate: bool = False, save: bool = False) -> None:
            try:
                await life.CreateAgent(
                    lifecycle_pb2.CreateAgentRequest(agent_id=agent, type="bench")
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                return
            if activate:
                await life.InitializeAgent(lifecycle_pb2.InitializeAgentRequest(agent_id=agent))
                await life.ActivateAgent(lifecycle_pb2.ActivateAgentRequest(agent_id=agent))
            if save:
                await state.SaveState(
                    state_pb2.SaveStateRequest(agent_id=agent, document_json=document(200, agent))
                )

        for prefix, count, activate, save in plan.get("agents", []):
            await _bounded(
                agent_ids(prefix, count),
                lambda a, x=activate, s=save: create(a, activate=x, save=s),
            )
        for name, count in plan.get("runs", []):
            await create(f"{name}-agent")
            replies = await _bounded(
                range(count),
                lambda i, n=name: execution.StartWorkflowRun(
                    execution_pb2.StartWorkflowRunRequest(workflow_name=n, agent_id=f"{n}-agent")
                ),
            )
            out[name] = [r.run.run_id for r in replies]
    return out


def seed(target: str, plan: dict[str, Any]) -> dict[str, Any]:
    """plan: {"agents": [(prefix, count, activate, save_state)], "runs": [(name, count)]}."""
    return asyncio.run(_seed(target, plan))


async def _head(target: str, run_id: str) -> int:
    """Append one primer event to ``run_id`` and return its sequence."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        reply = await stub.AppendEvents(
            execution_pb2.AppendEventsRequest(
                events=[execution_pb2.NewEvent(type="bench.primer", run_id=run_id)]
            )
        )
        return int(reply.last_sequence)


def primer(target: str, run_id: str) -> int:
    return asyncio.run(_head(target, run_id))
