"""What the supervisor's machine needs of a task's configuration (``TaskSpec``).

Its own module so that the machine and its messages both name it without importing each
other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from taskmuxd.policy import PolicySpec
from taskmuxd.supervisor.verdict import HealthSpec


@dataclass(frozen=True)
class TaskSpec:
    """What the machine needs of a task's configuration."""

    policy: PolicySpec = field(default_factory=PolicySpec)
    depends_on: Mapping[str, str] = field(default_factory=dict)  # dependency -> condition
    restart_with: frozenset[str] = frozenset()  # dependencies whose restart restarts it
    health: HealthSpec = field(default_factory=HealthSpec)
    gated_by_probe: bool = False  # "healthy" needs a passing probe (else running is enough)
    stop_grace: float = 5.0
