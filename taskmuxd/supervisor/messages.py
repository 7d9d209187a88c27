"""What goes into the supervisor machine (events) and what comes out (actions).

Every event names its task (project-wide ones an empty name); the time comes with the call
(``Machine.handle(event, now)``), never read. A dependency's change of state is no event of its
own: every task of the project is in the one machine, and after each event it looks again at
whatever waits on a dependency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from taskmuxd.policy import Ev, State

if TYPE_CHECKING:
    from taskmuxd.supervisor.taskspec import TaskSpec

# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """The user (or ``auto_start``, or a restore) asks: start, stop, kill or restart."""

    task: str
    kind: Ev  # Ev.START | Ev.STOP | Ev.KILL | Ev.RESTART


@dataclass(frozen=True)
class RunnerStarted:
    """The runner reports the task's process."""

    task: str


@dataclass(frozen=True)
class RunnerExited:
    task: str
    exit_code: int | None = None
    exit_signal: int | None = None


@dataclass(frozen=True)
class LaunchFailed:
    """The launch itself failed (tmux error, a silent runner)."""

    task: str


@dataclass(frozen=True)
class Aborted:
    """A ``before_start`` hook failed: the start is called off, not retried."""

    task: str


@dataclass(frozen=True)
class ProbeResult:
    """A readiness or liveness verdict on the current run: a probe (HTTP, command, port), or
    what the task says of itself. ``reason`` is what was checked, or why it failed."""

    task: str
    ok: bool
    reason: str = ""
    method: str = ""


@dataclass(frozen=True)
class TimerFired:
    """A wake-up the machine asked for (``WakeAt``) is due."""

    task: str


@dataclass(frozen=True)
class LaunchSettled:
    """The launch of the current run is over, its ``after_start`` hook included."""

    task: str


@dataclass(frozen=True)
class StartRequested:
    """Start ``tasks`` (and answer with ``Answer``), each once its dependencies meet their
    conditions, failing the ones still waiting after ``timeout`` seconds; independent tasks
    start at once, together."""

    request: int
    tasks: tuple[str, ...]
    timeout: float
    task: str = ""


@dataclass(frozen=True)
class ConfigChanged:
    """A new configuration (a config diff): every task's spec, and the recorded state of tasks
    new to the machine. Tasks gone are forgotten."""

    specs: Mapping[str, TaskSpec]
    states: Mapping[str, State] = field(default_factory=dict)
    task: str = ""


Found = Literal["running", "exited", "launching", "gone", "waiting"]


@dataclass(frozen=True)
class Adopted:
    """At daemon start, what was found for a task whose record says it was live, or waiting
    to be restarted: ``found`` is ``running`` (its runner runs this run), ``exited`` (the
    runner recorded the exit), ``launching`` (killed mid-launch: the runner may be on its way)
    or ``gone`` (nothing of the run is left, and nobody recorded its end); ``waiting`` for a
    task that was in backoff or fatal."""

    task: str
    found: Found
    exit_code: int | None = None
    exit_signal: int | None = None


Event = (Command | RunnerStarted | RunnerExited | LaunchFailed | Aborted | ProbeResult
         | TimerFired | LaunchSettled | StartRequested | ConfigChanged
         | Adopted)

# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """Start a new run of the task."""

    task: str


@dataclass(frozen=True)
class Signal:
    """Send ``signal`` (a name: SIGINT, SIGTERM, SIGKILL) to the task's process group, while
    its leader is provably the task's; when the group and the runner are both gone, end what
    the run left and record its exit. With ``kill``, close the task's window too."""

    task: str
    signal: str
    kill: bool = False


@dataclass(frozen=True)
class RecordExit:
    """No exit report came after the last rung of a stop: record the exit from the runner's
    file, or as a SIGKILL."""

    task: str


@dataclass(frozen=True)
class Probe:
    """Probe the current run at ``at``."""

    task: str
    at: float


@dataclass(frozen=True)
class StopProbing:
    task: str


@dataclass(frozen=True)
class WakeAt:
    """Feed ``TimerFired`` at ``at`` (replaces the task's earlier wake-up; with no task, a
    start request's deadline, added to the others)."""

    task: str
    at: float


@dataclass(frozen=True)
class CancelWake:
    task: str


@dataclass(frozen=True)
class FinishLaunch:
    """Adoption found a launch cut short: wait briefly for its runner, else launch again."""

    task: str


@dataclass(frozen=True)
class Emit:
    """Write an event to the history."""

    task: str
    event: str
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """How the start of one task of a ``StartRequested`` ended: ``started``,
    ``already_running`` or ``failed`` (``reason``: ``dependency`` or ``launch``)."""

    task: str
    action: str
    reason: str = ""
    error: str = ""


@dataclass(frozen=True)
class Answer:
    """Every task of start request ``request`` is decided."""

    request: int
    outcomes: tuple[Outcome, ...]
    task: str = ""


@dataclass(frozen=True)
class Refused:
    """An event the transition table has no row for in the task's state: a bug, to log."""

    task: str
    state: str
    event: str


@dataclass(frozen=True)
class Save:
    """The task's state changed: write its record and tell listeners."""

    task: str


Action = (Launch | Signal | RecordExit | Probe | StopProbing | WakeAt | CancelWake | FinishLaunch
          | Emit | Answer | Refused | Save)
