"""``daemon start|stop|restart|status`` when a service manager runs the daemon: they go
through systemctl or launchctl, so that the manager's view and taskmux's agree."""

from __future__ import annotations

from taskmuxctl.core.paths import Paths
from taskmuxctl.service import record as record_mod

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.service.launchd import Launchd
    from taskmuxctl.service.systemd import Systemd


def managed(paths: Paths) -> tuple[record_mod.Record, Systemd | Launchd] | None:
    """The installed service for this state directory and its controller, or None."""
    rec = record_mod.load(paths)
    if rec is None:
        return None
    return rec, rec.controller()


def start(paths: Paths) -> dict[str, Any] | None:
    """Start the service and wait until the daemon answers; None when no service is
    installed (the caller starts a detached daemon instead)."""
    found = managed(paths)
    if found is None:
        return None
    rec, ctl = found
    from taskmuxctl.core.daemonctl import ping
    from taskmuxctl.service.install import wait_answering

    info = ping(paths)
    if info:
        return {"pid": info["pid"], "action": "already_running", "unit": rec.unit}
    ctl.start()
    info = wait_answering(paths, ctl)
    return {"pid": info["pid"], "action": "started", "unit": rec.unit,
            "manager": rec.manager, "ran": ctl.actions}


def stop(paths: Paths) -> dict[str, Any] | None:
    found = managed(paths)
    if found is None:
        return None
    rec, ctl = found
    state = ctl.state()
    if not state.active:
        return {"pid": None, "action": "not_running", "unit": rec.unit}
    ctl.stop()
    return {"pid": state.main_pid, "action": "stopped", "unit": rec.unit,
            "manager": rec.manager, "ran": ctl.actions}


def restart(paths: Paths) -> dict[str, Any] | None:
    found = managed(paths)
    if found is None:
        return None
    rec, ctl = found
    from taskmuxctl.core.daemonctl import ping
    from taskmuxctl.service.install import wait_answering

    old = ping(paths)
    old_pid = int(str(old["pid"])) if old else None
    ctl.restart()
    info = wait_answering(paths, ctl, not_pid=old_pid)
    return {"pid": info["pid"], "previous_pid": old_pid, "action": "restarted",
            "unit": rec.unit, "manager": rec.manager, "ran": ctl.actions}


def status(paths: Paths) -> dict[str, Any] | None:
    """The manager's view, as a section for ``daemon status`` (None: no service)."""
    found = managed(paths)
    if found is None:
        return None
    rec, ctl = found
    from taskmuxctl.service.manager import ServiceError

    section: dict[str, Any] = {"manager": rec.manager, "scope": rec.scope, "unit": rec.unit}
    if rec.scope == "system":
        problem = _root_code_problem(rec)
        if problem:
            section["root_code_problem"] = problem
    try:
        state = ctl.state()
    except ServiceError as exc:
        section.update({"error": exc.message, "summary": f"{rec.unit}: {exc.message}"})
        return section
    section.update(state.to_dict())
    section["summary"] = f"{rec.unit} ({rec.manager}): {state.summary()}"
    return section


def _root_code_problem(rec: record_mod.Record) -> str | None:
    """Why the system service's program (which root runs) could be changed by a user; its
    paths only (``doctor`` checks this installation's packages too)."""
    from taskmuxctl.service import rootcode

    program = rootcode.installed_program(rec.manager, rec.unit_file)
    if program is None:
        return None
    try:
        return rootcode.program_problem(program)
    except OSError:
        return None  # cannot look: doctor says so
