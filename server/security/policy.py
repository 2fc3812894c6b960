"""Which role each RPC needs: the one table the auth interceptor enforces.

Roles are ordered: a writer may do everything a reader may, an admin everything a
writer may. The table names every RPC of the four Stateward services explicitly
(a unit test checks it against the protos), so a new RPC is refused to all but
admins with every namespace until someone classifies it here.

- reader: reads, lists, subscriptions, downloads, and the read-only planners
  (RecoverAgent, GetCompensationPlan);
- writer: every other mutation, including ClearState (an agent's own working cycle;
  the record and its checkpoints stay);
- admin: deleting records (DeleteAgent, DeleteCheckpoint), retention
  (PruneCheckpoints, ArchiveRuns, CollectGarbage) and state migrations (MigrateStates).

CollectGarbage also needs a token granted every namespace (``"*"``): it works on the
shared blob store and its answer names blobs of every namespace.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.IntEnum):
    READER = 1
    WRITER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Rule:
    role: Role
    every_namespace: bool = False  # the RPC acts across namespaces
    namespaced: bool = True  # False: touches no records, so any namespace will do


R, W, A = Rule(Role.READER), Rule(Role.WRITER), Rule(Role.ADMIN)

_TABLE: dict[str, dict[str, Rule]] = {
    "stateward.v1.LifecycleService": {
        "CreateAgent": W,
        "GetAgent": R,
        "ListAgents": R,
        "UpdateAgent": W,
        "InitializeAgent": W,
        "ActivateAgent": W,
        "PauseAgent": W,
        "ResumeAgent": W,
        "TerminateAgent": W,
        "ReportAgentError": W,
        "ResetAgent": W,
        "DeleteAgent": A,
        "ListTransitions": R,
    },
    "stateward.v1.StateService": {
        "SaveState": W,
        "PatchState": W,
        "GetState": R,
        "ListStateVersions": R,
        "ClearState": W,
        "BatchGetStates": R,
        "MigrateStates": A,
    },
    "stateward.v1.ExecutionService": {
        "StartWorkflowRun": W,
        "GetWorkflowRun": R,
        "ListWorkflowRuns": R,
        "CompleteWorkflowRun": W,
        "FailWorkflowRun": W,
        "CancelWorkflowRun": W,
        "HeartbeatWorkflowRun": W,
        "StartTaskRun": W,
        "Heartbeat": W,
        "CompleteTaskRun": W,
        "FailTaskRun": W,
        "GetTaskRun": R,
        "ListTaskRuns": R,
        "AppendEvents": W,
        "ListEvents": R,
        "GetAgentHistory": R,
        "SubscribeEvents": R,
    },
    "stateward.v1.RecoveryService": {
        "CreateCheckpoint": W,
        "BatchCreateCheckpoints": W,
        "UploadCheckpoint": W,
        "GetCheckpoint": R,
        "ListCheckpoints": R,
        "BatchListCheckpoints": R,
        "DownloadCheckpoint": R,
        "DeleteCheckpoint": A,
        "RestoreCheckpoint": W,
        "RecoverAgent": R,
        "RetryWorkflowRun": W,
        "GetCompensationPlan": R,
        "CompleteCompensation": W,
        "PruneCheckpoints": A,
        "ArchiveRuns": A,
        "CollectGarbage": Rule(Role.ADMIN, every_namespace=True),
    },
}

RULES: dict[str, Rule] = {
    f"/{service}/{method}": rule
    for service, methods in _TABLE.items()
    for method, rule in methods.items()
}

# Health and reflection, when not left open, take any valid token.
INFRASTRUCTURE: dict[str, Rule] = {
    service: Rule(Role.READER, namespaced=False)
    for service in (
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    )
}

# Anything else (a new RPC nobody classified yet) is refused to all but admins with
# every namespace: failing closed.
UNCLASSIFIED = Rule(Role.ADMIN, every_namespace=True)


def rule_for(full_method: str) -> Rule:
    rule = RULES.get(full_method)
    if rule is None:
        rule = INFRASTRUCTURE.get(full_method[1:].partition("/")[0], UNCLASSIFIED)
    return rule


class OpenMethods:
    """The RPCs answered without a token: whole services or single ``/service/method`` paths.

    Parsed from a comma-separated setting, e.g. ``grpc.health.v1.Health,/pkg.Svc/Method``.
    """

    def __init__(self, spec: str) -> None:
        self.services: frozenset[str] = frozenset()
        self.methods: frozenset[str] = frozenset()
        services, methods = set(), set()
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            if item.startswith("/"):
                methods.add(item)
            else:
                services.add(item)
        self.services, self.methods = frozenset(services), frozenset(methods)

    def __contains__(self, full_method: str) -> bool:
        if full_method in self.methods:
            return True
        service = full_method[1:].partition("/")[0]
        return service in self.services
