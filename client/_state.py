"""StateService calls: versioned state documents (built once, for both clients)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from itertools import count
from typing import Any

from stateward.v1 import state_pb2 as pb

from ._codec import encode_json, new_request_id, to_timestamp
from ._operation import STATE, Flow, Prepared, Sleep, flow, pages, unary
from ._options import Backoff, MetadataLike
from .errors import Conflict, NotFound, UsageError
from .models import BatchStates, MigrationPage, Page, StateVersion

UPDATE_BACKOFF = Backoff(initial=0.01, maximum=0.5)
"""Default waits between ``update_state`` attempts: full jitter, capped near
(writers x read-to-commit time) for a few dozen writers of one document."""


def _state(response: Any) -> StateVersion:
    return StateVersion.from_proto(response.state)


def _versions(response: pb.ListStateVersionsResponse) -> Page[StateVersion]:
    return Page([StateVersion.from_proto(v) for v in response.versions], response.next_page_token)


def _cleared(response: pb.ClearStateResponse) -> int:
    return response.deleted_versions


class StateCalls:
    """Read and write an agent's versioned state document.

    Writes may pass ``expected_version`` (compare-and-set: the latest version
    the caller has seen, 0 for "no state yet"); a mismatch raises
    ``Conflict`` whose ``current_version`` is the stored one.
    """

    @unary(STATE, "GetState")
    def get_state(
        self,
        agent_id: str,
        version: int | None = None,
        as_of: datetime | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[StateVersion]:
        """The latest state, an exact ``version``, or the version current ``as_of`` a time."""
        if version is not None and as_of is not None:
            raise UsageError("pass version or as_of, not both")
        request = pb.GetStateRequest(agent_id=agent_id)
        if version is not None:
            request.version = version
        elif as_of is not None:
            request.as_of.CopyFrom(to_timestamp(as_of))
        return Prepared(request, _state, None, timeout, metadata)

    @unary(STATE, "SaveState")
    def save_state(
        self,
        agent_id: str,
        document: Mapping[str, Any],
        expected_version: int | None = None,
        schema_version: int = 0,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[StateVersion]:
        """Write ``document`` (a JSON object) as the next version; returns it without document."""
        request = pb.SaveStateRequest(
            agent_id=agent_id,
            document_json=encode_json(dict(document)),
            expected_version=expected_version,
            schema_version=schema_version,
            request_id=new_request_id(request_id),
        )
        return Prepared(request, _state, request.request_id, timeout, metadata)

    @unary(STATE, "PatchState")
    def patch_state(
        self,
        agent_id: str,
        patch: Mapping[str, Any],
        expected_version: int | None = None,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[StateVersion]:
        """Apply an RFC 7386 JSON merge patch (None deletes a key); returns the new version."""
        request = pb.PatchStateRequest(
            agent_id=agent_id,
            patch_json=encode_json(dict(patch)),
            expected_version=expected_version,
            request_id=new_request_id(request_id),
        )
        return Prepared(request, _state, request.request_id, timeout, metadata)

    @unary(STATE, "ListStateVersions")
    def list_state_versions(
        self,
        agent_id: str,
        include_documents: bool = False,
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Page[StateVersion]]:
        """One page of the retained versions, newest first."""
        request = pb.ListStateVersionsRequest(
            agent_id=agent_id,
            include_documents=include_documents,
            page_size=page_size,
            page_token=page_token,
        )
        return Prepared(request, _versions, None, timeout, metadata)

    iter_state_versions = pages(list_state_versions, "Every retained version, newest first.")

    @unary(STATE, "ClearState")
    def clear_state(
        self,
        agent_id: str,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[int]:
        """Remove the agent's state; returns how many stored versions were deleted."""
        request = pb.ClearStateRequest(agent_id=agent_id, request_id=new_request_id(request_id))
        return Prepared(request, _cleared, request.request_id, timeout, metadata)

    @unary(STATE, "BatchGetStates")
    def batch_get_states(
        self,
        agent_ids: Iterable[str],
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[BatchStates]:
        """The latest state of up to 1000 agents, and which of them have none."""
        request = pb.BatchGetStatesRequest(agent_ids=list(agent_ids))
        return Prepared(request, BatchStates.from_proto, None, timeout, metadata)

    @unary(STATE, "MigrateStates")
    def migrate_states(
        self,
        agent_type: str,
        page_size: int = 0,
        page_token: str = "",
        dry_run: bool = False,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[MigrationPage]:
        """Upgrade one page of the stored states of ``agent_type`` to its newest schema
        version (admin). Repeat with ``next_page_token`` until it is empty; safe to
        resume from any token and to run again."""
        request = pb.MigrateStatesRequest(
            agent_type=agent_type, page_size=page_size, page_token=page_token, dry_run=dry_run
        )
        return Prepared(request, MigrationPage.from_proto, None, timeout, metadata)

    @flow
    def update_state(
        self,
        agent_id: str,
        fn: Callable[[dict[str, Any]], Mapping[str, Any] | None],
        *,
        max_attempts: int = 50,
        backoff: Backoff | None = None,
        schema_version: int = 0,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Flow[StateVersion]:
        """Read, change and compare-and-set the state, retrying when another writer won.

        ``fn`` gets the latest document (``{}`` when there is none yet) and returns
        the new one, or changes it in place and returns None. It may run several
        times, so it should do nothing else. On ``Conflict`` the loop waits
        (``backoff``, jittered) and starts over, at most ``max_attempts`` times in
        all; then the last ``Conflict`` is raised. Returns the saved version
        (without its document). ``timeout`` bounds each call, not the loop.

        The write keeps the schema version of what was read (reads upgrade older
        documents); a state this call creates gets ``schema_version`` (0: the
        server's default, 1), so pass the newest one when migrations are registered.
        """
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1 (got {max_attempts})")
        waits = backoff or UPDATE_BACKOFF
        for attempt in count(1):
            try:
                current = yield StateCalls.get_state.step(
                    self, agent_id, timeout=timeout, metadata=metadata
                )
            except NotFound:  # no state yet (a missing agent fails the save below)
                document: dict[str, Any] = {}
                expected, schema = 0, schema_version
            else:
                document = current.document or {}
                expected, schema = current.version, current.schema_version
            changed = fn(document)
            if changed is None:
                changed = document
            elif not isinstance(changed, Mapping):
                raise UsageError(
                    f"update_state: fn must return a dict or None (got {type(changed).__name__})"
                )
            try:
                saved: StateVersion = yield StateCalls.save_state.step(
                    self,
                    agent_id,
                    changed,
                    expected,
                    schema,
                    timeout=timeout,
                    metadata=metadata,
                )
            except Conflict:
                if attempt >= max_attempts:
                    raise
                yield Sleep(waits.delay(attempt))
            else:
                return saved
        raise AssertionError("unreachable")  # pragma: no cover
