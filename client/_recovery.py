"""RecoveryService calls: checkpoints and recovery plans (built once, for both clients)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stateward.v1 import recovery_pb2 as pb

from ._codec import new_request_id, str_map
from ._operation import RECOVERY, Prepared, pages, unary
from ._options import MetadataLike
from .models import Checkpoint, Page, RecoveryPlan, RestoredCheckpoint


def _checkpoint(response: Any) -> Checkpoint:
    return Checkpoint.from_proto(response.checkpoint)


def _checkpoints(response: pb.ListCheckpointsResponse) -> Page[Checkpoint]:
    items = [Checkpoint.from_proto(c) for c in response.checkpoints]
    return Page(items, response.next_page_token)


def _deleted(response: pb.DeleteCheckpointResponse) -> None:
    return None


def _plan(response: pb.RecoverAgentResponse) -> RecoveryPlan:
    return RecoveryPlan.from_proto(response.plan)


class RecoveryCalls:
    """Snapshot agents into checkpoints, restore them, and plan recoveries."""

    @unary(RECOVERY, "CreateCheckpoint")
    def create_checkpoint(
        self,
        agent_id: str,
        payload: bytes = b"",
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Checkpoint]:
        """Snapshot the agent's current state version plus an optional opaque ``payload``."""
        request = pb.CreateCheckpointRequest(
            agent_id=agent_id,
            payload=payload,
            labels=str_map(labels),
            request_id=new_request_id(request_id),
        )
        return Prepared(request, _checkpoint, request.request_id, timeout, metadata)

    @unary(RECOVERY, "GetCheckpoint")
    def get_checkpoint(
        self, checkpoint_id: str, *, timeout: float | None = None, metadata: MetadataLike = ()
    ) -> Prepared[Checkpoint]:
        """Read a checkpoint's manifest."""
        request = pb.GetCheckpointRequest(checkpoint_id=checkpoint_id)
        return Prepared(request, _checkpoint, None, timeout, metadata)

    @unary(RECOVERY, "ListCheckpoints")
    def list_checkpoints(
        self,
        agent_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Page[Checkpoint]]:
        """One page of checkpoints (of one agent, or all), newest first."""
        request = pb.ListCheckpointsRequest(
            agent_id=agent_id, page_size=page_size, page_token=page_token
        )
        return Prepared(request, _checkpoints, None, timeout, metadata)

    iter_checkpoints = pages(list_checkpoints, "Every checkpoint (of one agent, or all).")

    @unary(RECOVERY, "DeleteCheckpoint")
    def delete_checkpoint(
        self,
        checkpoint_id: str,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[None]:
        """Delete a checkpoint and its stored payload."""
        request = pb.DeleteCheckpointRequest(
            checkpoint_id=checkpoint_id, request_id=new_request_id(request_id)
        )
        return Prepared(request, _deleted, request.request_id, timeout, metadata)

    @unary(RECOVERY, "RestoreCheckpoint")
    def restore_checkpoint(
        self,
        checkpoint_id: str,
        expected_version: int | None = None,
        reinitialize: bool = False,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[RestoredCheckpoint]:
        """Write the checkpoint's state as a new version; ``reinitialize`` also moves
        the agent ERROR -> INITIALIZED."""
        request = pb.RestoreCheckpointRequest(
            checkpoint_id=checkpoint_id,
            expected_version=expected_version,
            reinitialize=reinitialize,
            request_id=new_request_id(request_id),
        )
        return Prepared(
            request, RestoredCheckpoint.from_proto, request.request_id, timeout, metadata
        )

    @unary(RECOVERY, "RecoverAgent")
    def recover_agent(
        self, agent_id: str, *, timeout: float | None = None, metadata: MetadataLike = ()
    ) -> Prepared[RecoveryPlan]:
        """A recovery plan for the agent: what failed, what is intact, what to do. Read-only."""
        request = pb.RecoverAgentRequest(agent_id=agent_id)
        return Prepared(request, _plan, None, timeout, metadata)
