"""Per-slot call factories for the load generator (see loadgen.py), on raw stubs."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import grpc

from stateward.v1 import (
    execution_pb2,
    execution_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)


def document(size: int = 200, tag: str = "") -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    head = {"tag": tag, "pad": ""}
    base = len(json.dumps(head, separators=(",", ":")).encode())
    head["pad"] = "x" * max(0, size - base)
    return json.dumps(head, separators=(",", ":")).encode()


def agent_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(count)]


async def echo(channel: grpc.aio.Channel, slot: int, params: dict[str, Any]) -> Any:
    method = channel.unary_unary("/bench.Echo/Unary")
    payload = b"e" * int(params.get("size", 200))
    return lambda: method(payload)


async def get_state(channel: grpc.aio.Channel, slot: int, params: dict[str, Any]) -> Any:
    stub = state_pb2_grpc.StateServiceStub(channel)
    requests = itertools.cycle([state_pb2.GetStateRequest(agent_id=a) for a in params["agents"]])
    for _ in range(slot):
        next(requests)
    return lambda: stub.GetState(next(requests))


async def save_state(channel: grpc.aio.Channel, slot: int, params: dict[str, Any]) -> Any:
    stub = state_pb2_grpc.StateServiceStub(channel)
    agents = agent_ids(params["prefix"], params["agents"])
    doc = document(int(params.get("size", 200)), "save")
    rng = random.Random(slot)
    return lambda: stub.SaveState(
        state_pb2.SaveStateRequest(agent_id=rng.choice(agents), document_json=doc)
    )


async def lifecycle(channel: grpc.aio.Channel, slot: int, params: dict[str, Any]) -> Any:
    """Pause/resume cycles on agents only this slot touches, each ACTIVE at start.

    A load run that ended mid-cycle (the soak runs one per minute) left some PAUSED:
    resume those first, outside the measurement, so no call is a refused transition."""
    stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
    owned = agent_ids(params["prefix"], params["agents"])[slot :: params["slots"]]
    for agent in owned:
        found = await stub.GetAgent(lifecycle_pb2.GetAgentRequest(agent_id=agent))
        if found.agent.status == lifecycle_pb2.AGENT_STATUS_PAUSED:
            await stub.ResumeAgent(lifecycle_pb2.ResumeAgentRequest(agent_id=agent, reason="bench"))
    steps = itertools.cycle(
        [
            step
            for agent in owned
            for step in (
                (stub.PauseAgent, lifecycle_pb2.PauseAgentRequest, agent),
                (stub.ResumeAgent, lifecycle_pb2.ResumeAgentRequest, agent),
            )
        ]
    )

    def call() -> Any:
        method, request_type, agent = next(steps)
        return method(request_type(agent_id=agent, reason="bench"))

    return call


async def append_events(channel: grpc.aio.Channel, slot: int, params: dict[str, Any]) -> Any:
    stub = execution_pb2_grpc.ExecutionServiceStub(channel)
    run_id = params["run_ids"][slot % len(params["run_ids"])]
    data = document(int(params.get("size", 200)), "ev")
    request = execution_pb2.AppendEventsRequest(
        events=[
            execution_pb2.NewEvent(type="bench.tick", data_json=data, run_id=run_id)
            for _ in range(int(params.get("batch", 100)))
        ]
    )
    return lambda: stub.AppendEvents(request)


async def mixed(channel: grpc.aio.Channel, slot: int, params: dict[str, Any]) -> Any:
    """Soak mix: 50% GetState, 30% SaveState, 15% AppendEvents, 5% transitions."""
    get = await get_state(channel, slot, {"agents": agent_ids(params["prefix"], params["agents"])})
    save = await save_state(channel, slot, params)
    append = await append_events(channel, slot, {**params, "batch": params.get("batch", 10)})
    transition = await lifecycle(channel, slot, params)
    rng = random.Random(1000 + slot)
    choices = [get] * 50 + [save] * 30 + [append] * 15 + [transition] * 5
    return lambda: rng.choice(choices)()


async def list_events(channel: grpc.aio.Channel, slot: int, params: dict[str, Any]) -> Any:
    """One 100-event page of a run's events from a random position (keyset paging)."""
    stub = execution_pb2_grpc.ExecutionServiceStub(channel)
    rng = random.Random(slot)
    event_filter = execution_pb2.EventFilter(run_id=params["run_id"])
    head = int(params["head"])
    return lambda: stub.ListEvents(
        execution_pb2.ListEventsRequest(
            filter=event_filter, after_sequence=rng.randrange(max(1, head - 100)), page_size=100
        )
    )


async def agent_history(channel: grpc.aio.Channel, slot: int, params: dict[str, Any]) -> Any:
    stub = execution_pb2_grpc.ExecutionServiceStub(channel)
    request = execution_pb2.GetAgentHistoryRequest(agent_id=params["agent_id"], page_size=50)
    return lambda: stub.GetAgentHistory(request)
