"""The lifecycle state machine (DESIGN section 2) as pure rules, then driven end to end.

The first half checks ``server/domain/lifecycle.py`` against the table written out
independently below. The stateful tests apply random action sequences to a model:
once against the pure functions, once against a real server over gRPC.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from stateward.server.config import Settings
from stateward.server.domain.lifecycle import (
    ACTIONS,
    ALLOWED,
    STAMPS,
    Action,
    Status,
    allowed_targets,
    can_transition,
    target_of,
)
from stateward.v1 import lifecycle_pb2 as pb
from stateward.v1 import lifecycle_pb2_grpc
from tests.support.server import ServerThread

CREATED, INITIALIZED, ACTIVE, PAUSED, TERMINATED, ERROR = (
    Status.CREATED,
    Status.INITIALIZED,
    Status.ACTIVE,
    Status.PAUSED,
    Status.TERMINATED,
    Status.ERROR,
)

# DESIGN section 2, copied by hand so a typo in the code cannot hide behind itself.
TABLE = {
    CREATED: {INITIALIZED, TERMINATED, ERROR},
    INITIALIZED: {ACTIVE, TERMINATED, ERROR},
    ACTIVE: {PAUSED, TERMINATED, ERROR},
    PAUSED: {ACTIVE, TERMINATED, ERROR},
    ERROR: {INITIALIZED, TERMINATED},
    TERMINATED: set(),
}

# What each RPC does from each status; anything missing is refused.
EXPECTED_MOVES = {
    (Action.INITIALIZE, CREATED): INITIALIZED,
    (Action.ACTIVATE, INITIALIZED): ACTIVE,
    (Action.PAUSE, ACTIVE): PAUSED,
    (Action.RESUME, PAUSED): ACTIVE,
    (Action.TERMINATE, CREATED): TERMINATED,
    (Action.TERMINATE, INITIALIZED): TERMINATED,
    (Action.TERMINATE, ACTIVE): TERMINATED,
    (Action.TERMINATE, PAUSED): TERMINATED,
    (Action.TERMINATE, ERROR): TERMINATED,
    (Action.REPORT_ERROR, CREATED): ERROR,
    (Action.REPORT_ERROR, INITIALIZED): ERROR,
    (Action.REPORT_ERROR, ACTIVE): ERROR,
    (Action.REPORT_ERROR, PAUSED): ERROR,
    (Action.RESET, ERROR): INITIALIZED,
}


def test_the_table_matches_the_design() -> None:
    assert {s: set(targets) for s, targets in ALLOWED.items()} == TABLE


@pytest.mark.parametrize(("current", "target"), list(itertools.product(Status, Status)))
def test_can_transition_for_every_pair(current: Status, target: Status) -> None:
    assert can_transition(current, target) is (target in TABLE[current])


@pytest.mark.parametrize("current", list(Status))
def test_allowed_targets(current: Status) -> None:
    assert set(allowed_targets(current)) == TABLE[current]
    assert len(allowed_targets(current)) == len(TABLE[current])  # no duplicates


def test_terminated_is_the_only_terminal_status() -> None:
    assert [s for s in Status if not allowed_targets(s)] == [TERMINATED]


def test_no_status_moves_to_itself_or_back_to_created() -> None:
    for current, targets in ALLOWED.items():
        assert current not in targets
        assert CREATED not in targets


@pytest.mark.parametrize(("action", "current"), list(itertools.product(Action, Status)))
def test_every_action_from_every_status(action: Action, current: Status) -> None:
    assert target_of(action, current) == EXPECTED_MOVES.get((action, current))


def test_every_action_only_moves_along_the_table() -> None:
    for action, (target, sources) in ACTIONS.items():
        for source in sources:
            assert can_transition(source, target), (action, source, target)


def test_every_allowed_transition_has_an_action() -> None:
    reachable = {(s, target_of(a, s)) for a in Action for s in Status if target_of(a, s)}
    expected = {(s, t) for s, targets in TABLE.items() for t in targets}
    assert reachable == expected


def test_reset_and_initialize_share_a_target_but_not_a_source() -> None:
    assert target_of(Action.INITIALIZE, ERROR) is None
    assert target_of(Action.RESET, CREATED) is None
    assert target_of(Action.RESET, ERROR) == target_of(Action.INITIALIZE, CREATED) == INITIALIZED


def test_resume_and_activate_share_a_target_but_not_a_source() -> None:
    assert target_of(Action.RESUME, INITIALIZED) is None
    assert target_of(Action.ACTIVATE, PAUSED) is None
    assert target_of(Action.RESUME, PAUSED) == target_of(Action.ACTIVATE, INITIALIZED) == ACTIVE


def test_stamps_name_agent_timestamp_columns() -> None:
    assert STAMPS == {
        INITIALIZED: "initialized_at",
        ACTIVE: "activated_at",
        PAUSED: "paused_at",
        TERMINATED: "terminated_at",
    }


# -- the model ------------------------------------------------------------------------


def model_step(action: Action, current: Status) -> Status | None:
    """The independent model: the hand-written table of expected moves."""
    return EXPECTED_MOVES.get((action, current))


class PureMachine(RuleBasedStateMachine):
    """Random action sequences against ``target_of``; refused actions change nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.status = CREATED
        self.path = [CREATED]

    @rule(action=st.sampled_from(Action))
    def apply(self, action: Action) -> None:
        expected = model_step(action, self.status)
        actual = target_of(action, self.status)
        assert actual == expected
        if actual is not None:
            assert can_transition(self.status, actual)
            self.status = actual
            self.path.append(actual)

    @invariant()
    def path_follows_the_table(self) -> None:
        for before, after in itertools.pairwise(self.path):
            assert after in TABLE[before]

    @invariant()
    def terminated_is_final(self) -> None:
        if TERMINATED in self.path:
            assert self.path.index(TERMINATED) == len(self.path) - 1


PureMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestPureMachine = PureMachine.TestCase


# -- the same model against a real server ----------------------------------------------

STATUS_OF = {
    pb.AGENT_STATUS_CREATED: CREATED,
    pb.AGENT_STATUS_INITIALIZED: INITIALIZED,
    pb.AGENT_STATUS_ACTIVE: ACTIVE,
    pb.AGENT_STATUS_PAUSED: PAUSED,
    pb.AGENT_STATUS_TERMINATED: TERMINATED,
    pb.AGENT_STATUS_ERROR: ERROR,
}


def call_action(stub: lifecycle_pb2_grpc.LifecycleServiceStub, action: Action, agent_id: str):  # type: ignore[no-untyped-def]
    if action is Action.INITIALIZE:
        return stub.InitializeAgent(pb.InitializeAgentRequest(agent_id=agent_id), timeout=10)
    if action is Action.ACTIVATE:
        return stub.ActivateAgent(pb.ActivateAgentRequest(agent_id=agent_id), timeout=10)
    if action is Action.PAUSE:
        return stub.PauseAgent(pb.PauseAgentRequest(agent_id=agent_id), timeout=10)
    if action is Action.RESUME:
        return stub.ResumeAgent(pb.ResumeAgentRequest(agent_id=agent_id), timeout=10)
    if action is Action.TERMINATE:
        return stub.TerminateAgent(pb.TerminateAgentRequest(agent_id=agent_id), timeout=10)
    if action is Action.REPORT_ERROR:
        request = pb.ReportAgentErrorRequest(agent_id=agent_id, message="model says so")
        return stub.ReportAgentError(request, timeout=10)
    return stub.ResetAgent(pb.ResetAgentRequest(agent_id=agent_id), timeout=10)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root: Path = tmp_path_factory.mktemp("machine")
    running = ServerThread(
        Settings(
            listen="127.0.0.1:0",
            data_dir=str(root / "data"),
            database_url=f"sqlite:///{root / 'stateward.db'}",
            grace_period=0.5,
            log_level="WARNING",
        )
    ).start()
    yield running
    running.close()


def test_the_real_service_follows_the_model(sqlite_server: ServerThread) -> None:
    channel = grpc.insecure_channel(sqlite_server.target)
    stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
    counter = itertools.count()

    class ServiceMachine(RuleBasedStateMachine):
        """Each example gets a fresh agent; every answer must match the model."""

        def __init__(self) -> None:
            super().__init__()
            self.agent_id = ""
            self.status = CREATED
            self.moves = 0

        @initialize()
        def create(self) -> None:
            self.agent_id = f"machine-{next(counter)}"
            reply = stub.CreateAgent(pb.CreateAgentRequest(agent_id=self.agent_id, type="m"))
            assert STATUS_OF[reply.agent.status] is CREATED

        @rule(action=st.sampled_from(Action))
        def apply(self, action: Action) -> None:
            expected = model_step(action, self.status)
            try:
                reply = call_action(stub, action, self.agent_id)
            except grpc.RpcError as error:
                assert expected is None, f"{action} from {self.status} refused: {error.details()}"
                assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
                info = _error_info(error)
                assert info.reason == "INVALID_TRANSITION"
                assert info.metadata["current_status"] == self.status.value
                allowed = {s for s in info.metadata["allowed_statuses"].split(",") if s}
                assert allowed == {s.value for s in TABLE[self.status]}
                return
            assert expected is not None, f"{action} from {self.status} was accepted"
            assert STATUS_OF[reply.agent.status] is expected
            assert STATUS_OF[reply.transition.from_status] is self.status
            assert STATUS_OF[reply.transition.to_status] is expected
            self.status = expected
            self.moves += 1

        @invariant()
        def stored_status_matches(self) -> None:
            if not self.agent_id:
                return
            reply = stub.GetAgent(pb.GetAgentRequest(agent_id=self.agent_id), timeout=10)
            assert STATUS_OF[reply.agent.status] is self.status
            trail = stub.ListTransitions(
                pb.ListTransitionsRequest(agent_id=self.agent_id, page_size=1000), timeout=10
            ).transitions
            assert len(trail) == self.moves + 1  # the creation is the first record

    try:
        run_state_machine_as_test(
            ServiceMachine,
            settings=settings(
                max_examples=25,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        channel.close()


def _error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status details"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the status details")
