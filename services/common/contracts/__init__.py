"""The documents exchanged between services (DESIGN.md, "Contracts between services").

Every document carries ``schema_version``; readers ignore unknown fields (an old reader accepts a newer
document), writers are strict and write atomically (:mod:`services.common.atomic`).
"""

from services.common.contracts.audit import AuditEntry
from services.common.contracts.base import SCHEMA_VERSION, Document, validate_model_name
from services.common.contracts.desired_state import (
    DesiredStateDocument,
    ModelPolicy,
    ResolvedModel,
    StateProblem,
    resolve_model,
    successor_problem,
)
from services.common.contracts.local import (
    FailedDocument,
    FailedVersion,
    LocalDesired,
    LocalModelTarget,
    Manifest,
    ManifestObject,
)
from services.common.contracts.registration import NodeRole, Registration
from services.common.contracts.rollout import RolloutPolicy, RolloutRecord, Wave
from services.common.contracts.status import (
    Alarm,
    CapacityShortfall,
    DownloadProgress,
    HeldChange,
    LiveVersion,
    ModelNodeStatus,
    SidecarStatus,
    TrafficCounters,
)

__all__ = [
    "SCHEMA_VERSION",
    "Alarm",
    "AuditEntry",
    "CapacityShortfall",
    "DesiredStateDocument",
    "Document",
    "DownloadProgress",
    "FailedDocument",
    "FailedVersion",
    "HeldChange",
    "LiveVersion",
    "LocalDesired",
    "LocalModelTarget",
    "Manifest",
    "ManifestObject",
    "ModelNodeStatus",
    "ModelPolicy",
    "NodeRole",
    "Registration",
    "ResolvedModel",
    "RolloutPolicy",
    "RolloutRecord",
    "SidecarStatus",
    "StateProblem",
    "TrafficCounters",
    "Wave",
    "resolve_model",
    "successor_problem",
    "validate_model_name",
]
