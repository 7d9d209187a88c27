"""``daemon install`` and ``daemon uninstall``: make the service what it should be, and say
what that took.

Install converges: files whose content is already right are left alone, the manager is
reloaded only when a file changed, enabled only when it is not, started only when it is not
running, and restarted only when its definition changed. Running it twice changes nothing
the second time.
"""

from __future__ import annotations

import os
import time
from typing import Any

from taskmuxctl.core.daemonctl import ping, stop_daemon
from taskmuxctl.core.daemonprogram import ctl_command
from taskmuxctl.core.fsutil import atomic_write, chown_nofollow
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code
from taskmuxctl.service import record as record_mod
from taskmuxctl.service.launchd import Launchd
from taskmuxctl.service.manager import ServiceError, ServiceState
from taskmuxctl.service.render import FileSpec, render
from taskmuxctl.service.systemd import Systemd
from taskmuxctl.service.target import DROP_IN, LAUNCHD, SYSTEM, SYSTEMD, Target

WAIT_TIMEOUT = 60.0

Controller = Systemd | Launchd


def controller_for(target: Target) -> Controller:
    env = dict(target.environ) if target.environ else None
    if target.manager == LAUNCHD:
        return Launchd(target.unit, target.domain, target.on_disk(target.unit_file), env)
    return Systemd(target.unit, user=target.scope != SYSTEM, env=env)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""  # unreadable counts as different: it gets rewritten


def compare(target: Target, specs: list[FileSpec]) -> list[tuple[FileSpec, str]]:
    """Each file with what install must do to it: create, update or nothing (unchanged)."""
    out = []
    for spec in specs:
        current = _read(target.on_disk(spec.path))
        action = "create" if current is None else \
            "unchanged" if current == spec.content else "update"
        out.append((spec, action))
    return out


def _makedirs(path: str, uid: int, gid: int, mode: int = 0o755) -> None:
    """Create ``path`` and missing parents, owned by uid:gid when running as root."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        os.mkdir(folder, mode)
        if os.geteuid() == 0:
            chown_nofollow(folder, uid, gid)


def _write(target: Target, spec: FileSpec) -> None:
    path = target.on_disk(spec.path)
    _makedirs(os.path.dirname(path), spec.uid, spec.gid)
    atomic_write(path, spec.content, mode=spec.mode,
                 owner=(spec.uid, spec.gid) if os.geteuid() == 0 else None)


def _ensure_state_dir(target: Target) -> None:
    if os.path.isdir(target.state_dir):
        return
    Paths(target.state_dir).ensure()
    if os.geteuid() == 0 and target.uid != 0:
        chown_nofollow(target.state_dir, target.uid, target.gid)


def _write_record(target: Target) -> None:
    rec = record_mod.Record.for_target(target)
    path = target.paths.service_record
    if _read(path) != record_mod.text(rec):
        owner = (target.uid, target.gid) if os.geteuid() == 0 and target.uid != 0 else None
        atomic_write(path, record_mod.text(rec), mode=0o600, owner=owner)


def wait_answering(paths: Paths, controller: Controller, not_pid: int | None = None,
                   timeout: float = WAIT_TIMEOUT) -> dict[str, Any]:
    """Wait until a daemon (other than ``not_pid``) answers; fail early, with the manager's
    view, when the service stopped trying."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 1.0
    while True:
        info = ping(paths, timeout=1.0)
        if info and info.get("pid") != not_pid:
            return info
        now = time.monotonic()
        if now >= next_check or now >= deadline:
            next_check = now + 1.0
            state = controller.state()
            if now >= deadline or (not state.active and state.state != "unknown"):
                why = "did not answer in time" if now >= deadline else \
                    f"is {state.state}" + (f", last exit: {state.last_exit}"
                                           if state.last_exit else "")
                raise ServiceError(
                    f"{controller.unit} was started but the daemon {why}; see "
                    f"`{controller.logs_hint()}`",
                    Code.DAEMON_START_FAILED, {"service": state.to_dict()})
        time.sleep(0.05)


def _start(controller: Controller, restart: bool) -> None:
    try:
        controller.restart() if restart else controller.start()
    except ServiceError as exc:
        try:
            state = controller.state()
        except ServiceError:
            raise exc from None
        extra = f" (last exit: {state.last_exit})" if state.last_exit else ""
        raise ServiceError(f"{exc.message}{extra}; see `{controller.logs_hint()}`",
                           exc.code, exc.data) from None


def install(target: Target, program: list[str], tmux: str | None = None,
            dry_run: bool = False, controller: Controller | None = None) -> dict[str, Any]:
    """Render, write, reload, enable, start, wait. Returns what was found and done."""
    specs = render(target, program, tmux)
    files = compare(target, specs)
    changed = any(action != "unchanged" for _, action in files)
    controller = controller or controller_for(target)
    data: dict[str, Any] = {
        "manager": target.manager, "scope": target.scope, "unit": target.unit,
        "user": target.user, "state_dir": target.state_dir, "program": program,
        "unit_file": target.unit_file, "changed": changed, "dry_run": dry_run,
        "files": [{"path": target.on_disk(s.path), "action": a} for s, a in files],
    }
    if dry_run:
        data["content"] = {target.on_disk(s.path): s.content for s, _ in files}
        return data
    _check_allowed(target, program)
    before = controller.state()  # fails early when the manager cannot be reached
    _ensure_state_dir(target)
    notes = _write_files(target, files)
    previous = _converge(target, controller, changed, before, notes)
    info = wait_answering(target.paths, controller, not_pid=previous)
    _write_record(target)
    data["actions"] = notes + [f"ran {a}" for a in controller.actions]
    data["pid"] = info.get("pid")
    data["service"] = controller.state().to_dict()
    return data


def _check_allowed(target: Target, program: list[str]) -> None:
    if target.scope == SYSTEM and os.geteuid() != 0:
        raise ServiceError(
            f"installing the system service needs root: sudo {ctl_command()} daemon install "
            f"--user {target.user} (or --user-unit for a per-user service without root)",
            Code.SERVICE_UNAVAILABLE)
    if target.scope == SYSTEM:
        problem = root_code_problem(program)
        if problem:
            raise ServiceError(
                f"the system service would run {' '.join(program)} as root, but {problem}: "
                "a user could change what root runs. Install taskmux where only root can "
                "change it (a root-owned virtualenv or system package) and install the "
                f"service from there, or use a per-user service: {ctl_command()} daemon "
                "install --user-unit (run as the user, without sudo)",
                Code.SERVICE_UNAVAILABLE, {"program": program})
    other = record_mod.load(target.paths)
    if other is not None and (other.manager, other.scope, other.unit) != \
            (target.manager, target.scope, target.unit):
        raise ServiceError(
            f"{other.unit} ({other.manager}, {other.scope}) already runs the daemon for "
            f"{target.state_dir}; two services would fight over it. Remove that one first: "
            f"{'sudo ' if other.scope == SYSTEM else ''}{ctl_command()} daemon uninstall "
            f"--{'system' if other.scope == SYSTEM else 'user-unit'}",
            Code.SERVICE_UNAVAILABLE, {"installed": other.to_dict()})


def root_code_problem(program: list[str]) -> str | None:
    """Why ``program`` must not run as root (see
    ``taskmuxctl.core.system.rootfiles.code_problem``). When it is this installation (not the
    install.sh layout, whose boot-guard the check of the program's own paths covers), this
    installation's packages are checked as well."""
    from taskmuxctl.core.system.rootfiles import code_problem
    from taskmuxctl.service.rootcode import this_installation_packages

    return code_problem(program, this_installation_packages())


def _write_files(target: Target, files: list[tuple[FileSpec, str]]) -> list[str]:
    notes = []
    for spec, action in files:
        if action != "unchanged":
            _write(target, spec)
            notes.append(f"wrote {target.on_disk(spec.path)}")
    if target.log_file:  # launchd does not create the log's folder
        _makedirs(os.path.dirname(target.on_disk(target.log_file)),
                  *((0, 0) if target.scope == SYSTEM else (target.uid, target.gid)))
    return notes


def _converge(target: Target, controller: Controller, changed: bool, before: ServiceState,
              notes: list[str]) -> int | None:
    """Reload, enable, start or restart: each only when needed. Returns the pid of the
    daemon being replaced (None when none is)."""
    if changed:
        controller.reload()
    state = controller.state() if changed else before
    if not state.enabled:
        controller.enable()
    if state.active:
        if changed:
            _start(controller, restart=True)
            return state.main_pid
        return None
    stray = ping(target.paths)
    if stray:
        # A daemon started by hand holds the lock: the service's would exit at once.
        stop_daemon(target.paths)
        notes.append(f"stopped the daemon started outside the service (pid {stray['pid']}; "
                     "tasks keep running)")
    _start(controller, restart=False)
    return None


def _other_instances(target: Target) -> list[str]:
    """Other users' instances of the shared systemd template (their drop-ins)."""
    folder = target.on_disk(target.unit_dir)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    mine = f"{target.unit}.d"
    return [name[: -len(".d")] for name in names
            if name.startswith("taskmuxd@") and name.endswith(".service.d") and name != mine
            and os.path.exists(os.path.join(folder, name, DROP_IN))]


def uninstall(target: Target, controller: Controller | None = None) -> dict[str, Any]:
    """Stop and disable the service, remove its files; keep the state directory."""
    controller = controller or controller_for(target)
    specs = render(target, ["/taskmuxd"])  # only the paths matter here
    others = _other_instances(target) if target.manager == SYSTEMD else []
    present = [s for s in specs if os.path.exists(target.on_disk(s.path))
               and not (s.shared and others)]
    data: dict[str, Any] = {"manager": target.manager, "scope": target.scope,
                            "unit": target.unit, "user": target.user, "removed": [],
                            "kept": [], "state_dir": target.state_dir}
    if not present:
        _remove_record(target)
        data["changed"] = False
        data["actions"] = []
        return data
    if target.scope == SYSTEM and os.geteuid() != 0:
        raise ServiceError(f"removing the system service needs root: sudo {ctl_command()} "
                           f"daemon uninstall --user {target.user}", Code.SERVICE_UNAVAILABLE)
    state: ServiceState = controller.state()
    if state.loaded or state.active:
        controller.remove()
    actions = [f"ran {a}" for a in controller.actions]
    data["kept"] = [target.on_disk(s.path) for s in specs if s.shared and others
                    and os.path.exists(target.on_disk(s.path))]
    for spec in present:
        path = target.on_disk(spec.path)
        os.unlink(path)
        data["removed"].append(path)
        actions.append(f"removed {path}")
        if os.path.basename(os.path.dirname(path)).endswith(".service.d"):
            try:
                os.rmdir(os.path.dirname(path))
            except OSError:
                pass  # someone's own drop-ins are in there too
    done = len(controller.actions)
    controller.forget()
    actions += [f"ran {a}" for a in controller.actions[done:]]
    _remove_record(target)
    data["changed"] = True
    data["other_instances"] = others
    data["actions"] = actions
    return data


def _remove_record(target: Target) -> None:
    try:
        os.unlink(target.paths.service_record)
    except FileNotFoundError:
        pass
