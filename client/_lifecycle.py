"""LifecycleService calls: agents and their state machine (built once, for both clients)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stateward.v1 import lifecycle_pb2 as pb

from ._codec import encode_json, encode_json_or_empty, new_request_id, str_map
from ._operation import LIFECYCLE, UNSET, Prepared, Unset, pages, unary
from ._options import MetadataLike
from .models import Agent, AgentStatus, ErrorKind, Page, Transition, to_proto_enum


def _agent(response: Any) -> Agent:
    return Agent.from_proto(response.agent)


def _agents(response: pb.ListAgentsResponse) -> Page[Agent]:
    return Page([Agent.from_proto(a) for a in response.agents], response.next_page_token)


def _transitions(response: pb.ListTransitionsResponse) -> Page[Transition]:
    return Page([Transition.from_proto(t) for t in response.transitions], response.next_page_token)


def _deleted(response: pb.DeleteAgentResponse) -> None:
    return None


class LifecycleCalls:
    """Create agents, move them through their lifecycle, read their audit trail.

    Lifecycle moves return the agent after the move. The server enforces the
    state machine; a refused move raises ``InvalidTransition`` carrying the
    current status and the allowed ones. Repeating a move with the same
    ``request_id`` returns the original answer.
    """

    @unary(LIFECYCLE, "CreateAgent")
    def create_agent(
        self,
        agent_id: str,
        type: str,
        config: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Agent]:
        """Create an agent in status CREATED; ``AlreadyExists`` if the id is taken."""
        request = pb.CreateAgentRequest(
            agent_id=agent_id,
            type=type,
            config_json=encode_json(dict(config or {})),
            labels=str_map(labels),
            request_id=new_request_id(request_id),
        )
        return Prepared(request, _agent, request.request_id, timeout, metadata)

    @unary(LIFECYCLE, "GetAgent")
    def get_agent(
        self, agent_id: str, *, timeout: float | None = None, metadata: MetadataLike = ()
    ) -> Prepared[Agent]:
        """Read one agent; ``NotFound`` if it does not exist."""
        return Prepared(pb.GetAgentRequest(agent_id=agent_id), _agent, None, timeout, metadata)

    @unary(LIFECYCLE, "ListAgents")
    def list_agents(
        self,
        status: AgentStatus | str | None = None,
        type: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Page[Agent]]:
        """One page of agents ordered by id; filters combine with AND.

        ``labels`` keeps agents carrying every given label with that value.
        ``page_size`` 0 means the server's default (50).
        """
        request = pb.ListAgentsRequest(
            status=to_proto_enum(AgentStatus, status),
            type=type or "",
            labels=str_map(labels),
            page_size=page_size,
            page_token=page_token,
        )
        return Prepared(request, _agents, None, timeout, metadata)

    iter_agents = pages(list_agents, "Every agent matching the filters, fetching pages lazily.")

    @unary(LIFECYCLE, "UpdateAgent")
    def update_agent(
        self,
        agent_id: str,
        *,
        config: Mapping[str, Any] | Unset = UNSET,
        labels: Mapping[str, str] | Unset = UNSET,
        etag: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Agent]:
        """Replace the config and/or the labels (all of them); omitted ones stay.

        With ``etag`` (from a read) the update applies only if nobody changed
        the agent since; otherwise it raises ``Conflict``.
        """
        request = pb.UpdateAgentRequest(
            agent_id=agent_id, etag=etag or "", request_id=new_request_id(request_id)
        )
        if not isinstance(config, Unset):
            request.update_config = True
            request.config_json = encode_json(dict(config))
        if not isinstance(labels, Unset):
            request.update_labels = True
            request.labels.update(labels)
        return Prepared(request, _agent, request.request_id, timeout, metadata)

    @unary(LIFECYCLE, "InitializeAgent")
    def initialize_agent(
        self,
        agent_id: str,
        reason: str = "",
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Agent]:
        """CREATED -> INITIALIZED."""
        return _move(pb.InitializeAgentRequest, agent_id, reason, request_id, timeout, metadata)

    @unary(LIFECYCLE, "ActivateAgent")
    def activate_agent(
        self,
        agent_id: str,
        reason: str = "",
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Agent]:
        """INITIALIZED -> ACTIVE."""
        return _move(pb.ActivateAgentRequest, agent_id, reason, request_id, timeout, metadata)

    @unary(LIFECYCLE, "PauseAgent")
    def pause_agent(
        self,
        agent_id: str,
        reason: str = "",
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Agent]:
        """ACTIVE -> PAUSED."""
        return _move(pb.PauseAgentRequest, agent_id, reason, request_id, timeout, metadata)

    @unary(LIFECYCLE, "ResumeAgent")
    def resume_agent(
        self,
        agent_id: str,
        reason: str = "",
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Agent]:
        """PAUSED -> ACTIVE."""
        return _move(pb.ResumeAgentRequest, agent_id, reason, request_id, timeout, metadata)

    @unary(LIFECYCLE, "TerminateAgent")
    def terminate_agent(
        self,
        agent_id: str,
        reason: str = "",
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Agent]:
        """Any non-terminal status -> TERMINATED (final)."""
        return _move(pb.TerminateAgentRequest, agent_id, reason, request_id, timeout, metadata)

    @unary(LIFECYCLE, "ResetAgent")
    def reset_agent(
        self,
        agent_id: str,
        reason: str = "",
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Agent]:
        """ERROR -> INITIALIZED, once the cause of the error is fixed."""
        return _move(pb.ResetAgentRequest, agent_id, reason, request_id, timeout, metadata)

    @unary(LIFECYCLE, "ReportAgentError")
    def report_error(
        self,
        agent_id: str,
        message: str,
        kind: ErrorKind | str = ErrorKind.UNKNOWN,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Agent]:
        """Any non-terminal status -> ERROR, recording the error on the agent."""
        request = pb.ReportAgentErrorRequest(
            agent_id=agent_id,
            message=message,
            kind=to_proto_enum(ErrorKind, kind),
            details_json=encode_json_or_empty(details),
            request_id=new_request_id(request_id),
        )
        return Prepared(request, _agent, request.request_id, timeout, metadata)

    @unary(LIFECYCLE, "DeleteAgent")
    def delete_agent(
        self,
        agent_id: str,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[None]:
        """Delete a TERMINATED agent with all its records; ``FailedPrecondition`` otherwise."""
        request = pb.DeleteAgentRequest(agent_id=agent_id, request_id=new_request_id(request_id))
        return Prepared(request, _deleted, request.request_id, timeout, metadata)

    @unary(LIFECYCLE, "ListTransitions")
    def list_transitions(
        self,
        agent_id: str,
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Page[Transition]]:
        """One page of the agent's audit trail, oldest first."""
        request = pb.ListTransitionsRequest(
            agent_id=agent_id, page_size=page_size, page_token=page_token
        )
        return Prepared(request, _transitions, None, timeout, metadata)

    iter_transitions = pages(list_transitions, "The agent's whole audit trail, oldest first.")


def _move(
    request_type: Any,
    agent_id: str,
    reason: str,
    request_id: str | None,
    timeout: float | None,
    metadata: MetadataLike,
) -> Prepared[Agent]:
    """A lifecycle move: every one has the same request shape and answer."""
    request = request_type(agent_id=agent_id, reason=reason, request_id=new_request_id(request_id))
    return Prepared(request, _agent, request.request_id, timeout, metadata)
