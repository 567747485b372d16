"""The coordinator (``masterlinc coordinator``): agent registry, call ownership, assignment and the safe route.

``service`` (the coordinator: assignment, escalation, lease expiry), ``rules`` (assignment rules on the shared rule
loader), ``assignments`` (pending assignments in KV), ``guard`` (the worker's lease check), ``mirror`` (KV watches).
"""

from hub.coordinator.guard import LeaseGuard
from hub.coordinator.rules import ACTIONS, AssignmentRules, Decision
from hub.coordinator.service import Coordinator, CoordinatorConfig

__all__ = ["ACTIONS", "AssignmentRules", "Coordinator", "CoordinatorConfig", "Decision", "LeaseGuard"]
