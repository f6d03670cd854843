"""What the ruler's API layers read: snapshots of groups, rules and alerts.

These are plain data, copied out of the evaluation core under its lock so the
HTTP/gRPC layers never see a half-updated group.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rulefile (owner F) is only needed for the annotations
    from pythanos.rule.rulefile import Rule, RuleGroup

__all__ = ["AlertState", "RuleState", "GroupState"]


@dataclass
class AlertState:
    """One alert instance of an alerting rule (times are unix seconds)."""

    labels: dict[str, str]
    annotations: dict[str, str]
    state: str  # "pending" | "firing" | "inactive"
    active_at: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    last_sent_at: float | None = None
    valid_until: float | None = None
    keep_firing_since: float | None = None
    value: float = 0.0


@dataclass
class RuleState:
    """One rule with its health; ``alerts`` is filled for alerting rules only."""

    rule: "Rule"
    health: str = "unknown"  # "unknown" | "ok" | "err"
    last_error: str = ""
    evaluation_time_s: float = 0.0
    last_evaluation: float = 0.0  # unix s, 0: never
    alerts: list[AlertState] = field(default_factory=list)
    state: str = "inactive"  # alerting: the highest state of its alerts


@dataclass
class GroupState:
    """One rule group as last evaluated."""

    group: "RuleGroup"
    interval_s: float
    evaluation_time_s: float = 0.0
    last_evaluation: float = 0.0
    rules: list[RuleState] = field(default_factory=list)
