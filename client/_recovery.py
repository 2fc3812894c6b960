"""RecoveryService calls: checkpoints and recovery plans (built once, for both clients)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from stateward.v1 import recovery_pb2 as pb

from ._codec import new_request_id, str_map, to_duration, to_timestamp
from ._operation import RECOVERY, Flow, Prepared, flow, pages, unary
from ._options import MetadataLike
from .models import (
    ArchivedRuns,
    Checkpoint,
    CollectedGarbage,
    CompensationStep,
    Page,
    PrunedCheckpoints,
    RecoveryPlan,
    RestoredCheckpoint,
    RetriedRun,
)


def _checkpoint(response: Any) -> Checkpoint:
    return Checkpoint.from_proto(response.checkpoint)


def _checkpoints(response: pb.ListCheckpointsResponse) -> Page[Checkpoint]:
    items = [Checkpoint.from_proto(c) for c in response.checkpoints]
    return Page(items, response.next_page_token)


def _deleted(response: pb.DeleteCheckpointResponse) -> None:
    return None


def _plan(response: pb.RecoverAgentResponse) -> RecoveryPlan:
    return RecoveryPlan.from_proto(response.plan)


def _steps(response: pb.GetCompensationPlanResponse) -> Page[CompensationStep]:
    return Page([CompensationStep.from_proto(s) for s in response.steps], response.next_page_token)


def _step(response: pb.CompleteCompensationResponse) -> CompensationStep:
    return CompensationStep.from_proto(response.step)


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
        labels: Mapping[str, str] | None = None,
        include_payloads: bool = False,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Page[Checkpoint]]:
        """One page of checkpoints (of one agent, or all), newest first; only those with
        every one of ``labels``. ``include_payloads`` also returns the payloads the server
        stores inline (``Checkpoint.payload``, verified; pages may then be shorter)."""
        request = pb.ListCheckpointsRequest(
            agent_id=agent_id,
            page_size=page_size,
            page_token=page_token,
            labels=str_map(labels),
            include_payloads=include_payloads,
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

    @unary(RECOVERY, "RetryWorkflowRun")
    def retry_workflow_run(
        self,
        run_id: str,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[RetriedRun]:
        """Start a new attempt of a FAILED or INTERRUPTED run: completed task runs carry
        over with their results; ``pending_task_ids`` lists what is left to do."""
        request = pb.RetryWorkflowRunRequest(run_id=run_id, request_id=new_request_id(request_id))
        return Prepared(request, RetriedRun.from_proto, request.request_id, timeout, metadata)

    @unary(RECOVERY, "GetCompensationPlan")
    def list_compensation_steps(
        self,
        run_id: str,
        page_size: int = 1000,
        page_token: str = "",
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Page[CompensationStep]]:
        """One page of :meth:`get_compensation_plan`: at most ``page_size`` steps (1 to
        1000), fewer when more would not fit in one response. (0 asks for every step in
        one response, and fails with ResourceExhausted when they would not fit.)"""
        request = pb.GetCompensationPlanRequest(
            run_id=run_id, page_size=page_size, page_token=page_token
        )
        return Prepared(request, _steps, None, timeout, metadata)

    iter_compensation_steps = pages(
        list_compensation_steps, "Every step of a compensation plan, last completed first."
    )

    @flow
    def get_compensation_plan(
        self, run_id: str, *, timeout: float | None = None, metadata: MetadataLike = ()
    ) -> Flow[list[CompensationStep]]:
        """The compensations of a failed run's completed tasks, last completed first: every
        step, over as many calls as the plan needs pages."""
        steps: list[CompensationStep] = []
        token = ""
        while True:
            page = yield RecoveryCalls.list_compensation_steps.step(
                self, run_id, page_token=token, timeout=timeout, metadata=metadata
            )
            steps.extend(page.items)
            token = page.next_page_token
            if not token:
                return steps

    @unary(RECOVERY, "CompleteCompensation")
    def complete_compensation(
        self,
        run_id: str,
        task_run_id: str,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[CompensationStep]:
        """Record that the compensation of ``task_run_id`` was carried out."""
        request = pb.CompleteCompensationRequest(
            run_id=run_id, task_run_id=task_run_id, request_id=new_request_id(request_id)
        )
        return Prepared(request, _step, request.request_id, timeout, metadata)

    # -- retention (admin) ----------------------------------------------------------

    @unary(RECOVERY, "PruneCheckpoints")
    def prune_checkpoints(
        self,
        agent_id: str = "",
        keep_last: int = 0,
        max_age: timedelta | float | None = None,
        dry_run: bool = False,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[PrunedCheckpoints]:
        """Delete old checkpoints (of one agent, or all) by the retention policy:
        ``keep_last`` newest per agent and ``max_age`` (0 / None: the server's
        configured policy). The newest checkpoint of an agent is always kept."""
        request = pb.PruneCheckpointsRequest(
            agent_id=agent_id,
            keep_last=keep_last,
            max_age=to_duration(max_age) if max_age is not None else None,
            dry_run=dry_run,
        )
        return Prepared(request, PrunedCheckpoints.from_proto, None, timeout, metadata)

    @unary(RECOVERY, "ArchiveRuns")
    def archive_runs(
        self,
        ended_before: datetime,
        archive_url: str = "",
        dry_run: bool = False,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[ArchivedRuns]:
        """Move finished runs that ended before ``ended_before``, with their task runs
        and events, into a compressed JSON Lines archive at ``archive_url`` (an fsspec
        URL; empty: the configured location). The rows are deleted once the archive
        reads back; ``stateward archive show`` reads it."""
        request = pb.ArchiveRunsRequest(
            ended_before=to_timestamp(ended_before),
            archive_url=archive_url,
            dry_run=dry_run,
        )
        return Prepared(request, ArchivedRuns.from_proto, None, timeout, metadata)

    @unary(RECOVERY, "CollectGarbage")
    def collect_garbage(
        self,
        grace_period: timedelta | float | None = None,
        dry_run: bool = False,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[CollectedGarbage]:
        """Delete stored blobs that no checkpoint references and that are older than
        ``grace_period`` (None: the configured one)."""
        request = pb.CollectGarbageRequest(
            grace_period=to_duration(grace_period) if grace_period is not None else None,
            dry_run=dry_run,
        )
        return Prepared(request, CollectedGarbage.from_proto, None, timeout, metadata)
