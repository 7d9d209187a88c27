"""The boot-guard: what the service manager starts, and what undoes a release that cannot run.

It lives outside the versions it guards (an update copies this file to ``app/bootguard.py``
once the new version has proved itself) and runs on the interpreter the versions were built
from, using the standard library only, so it works when the newest version cannot even import.
It reads ``app/current``, decides, and execs that version's ``taskmuxd`` (same pid, so the
service manager watches the daemon itself).

When an update switches ``current`` it *arms* the guard for the new version. Each start of an
armed version is an *attempt*; the daemon reports on its attempt in ``app/run.json`` (READY,
then stable after running a while, then a clean exit). At the next start the guard settles the
last attempt: one that became stable disarms the guard for good; one that ended cleanly (a
manual restart), or belonged to an earlier boot (a reboot), is not a failure; one that never
reached READY, or died soon after, is. After ``failures`` of them within ``window`` seconds in
this boot, the guard switches ``current`` back to ``previous``, records the version as bad
(auto-update skips it until a newer release appears) and starts the good version instead.

The same file is imported by the updater (``taskmuxctl.core.update.bootguard``) for the shared
record, and by the daemon's READY hook for ``run.json``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

FORMAT = 1
RECORD = "bootguard.json"
RUN_MARKER = "run.json"
LOCK = "bootguard.lock"
CURRENT = "current"
PREVIOUS = "previous"
VERSIONS = "versions"
ATTEMPT_ENV = "TASKMUX_GUARD_ATTEMPT"
STABLE_ENV = "TASKMUX_GUARD_STABLE"
DEFAULT_FAILURES = 3
DEFAULT_WINDOW = 300.0
DEFAULT_STABLE = 30.0
MAX_ATTEMPTS = 20
MAX_EVENTS = 50
FAILED = ("no_ready", "crashed_after_ready")
EXIT_NOT_INSTALLED = 78


# -- files ------------------------------------------------------------------------------------

def atomic_write_json(path: str, data: Any) -> None:
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        _owned_like_folder(fh.fileno(), folder)
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(folder)


def _owned_like_folder(fd: int, folder: str) -> None:
    """Started as root by a system unit (before the daemon drops to its user), the guard
    keeps the files it writes owned by the user whose state directory it is."""
    if os.geteuid() != 0:
        return
    st = os.stat(folder)
    if st.st_uid != 0:
        os.fchown(fd, st.st_uid, st.st_gid)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when missing. A corrupt file is moved aside."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        aside = f"{path}.corrupt-{int(time.time())}"
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        log(f"{path} was unreadable; moved it to {aside}")
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def locked(app: str) -> Iterator[None]:
    """Hold the guard's lock (short sections only: never while waiting on a daemon)."""
    os.makedirs(app, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(app, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _owned_like_folder(fd, app)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def log(message: str) -> None:
    sys.stderr.write(f"taskmux boot-guard: {message}\n")
    sys.stderr.flush()


# -- the installed layout ---------------------------------------------------------------------

def link_version(app: str, name: str) -> str | None:
    """The version a link (``current``/``previous``) points at, or None."""
    try:
        target = os.readlink(os.path.join(app, name))
    except OSError:
        return None
    return os.path.basename(target.rstrip("/")) or None


def set_link(app: str, name: str, version: str | None) -> None:
    """Point ``app/name`` at ``versions/{version}`` atomically (None removes the link)."""
    path = os.path.join(app, name)
    if version is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    else:
        tmp = os.path.join(app, f".{name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.path.join(VERSIONS, version), tmp)
        if os.geteuid() == 0:
            st = os.stat(app)
            os.lchown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    _fsync_dir(app)


def switch(app: str, current: str, previous: str | None) -> None:
    """Make ``current``/``previous`` point at the given versions. ``previous`` is written
    first: a crash in between leaves the running version current."""
    set_link(app, PREVIOUS, previous)
    set_link(app, CURRENT, current)


def boot_id() -> str:
    """Identifies this boot, so attempts cut short by a reboot are not counted as crashes."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        pass
    try:
        import subprocess

        out = subprocess.run(["sysctl", "-n", "kern.boottime"], capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# -- the record -------------------------------------------------------------------------------

def empty_record() -> dict[str, Any]:
    return {"format": FORMAT, "armed": None, "attempts": [], "bad": {}, "events": [],
            "seq": 0, "delivered": 0}


def load_record(app: str) -> dict[str, Any]:
    rec = read_json(os.path.join(app, RECORD))
    if rec is None or rec.get("format") != FORMAT:
        return empty_record()
    base = empty_record()
    base.update(rec)
    return base


def save_record(app: str, rec: dict[str, Any]) -> None:
    atomic_write_json(os.path.join(app, RECORD), rec)


def add_event(rec: dict[str, Any], event: str, now: float, **details: Any) -> None:
    rec["seq"] = int(rec.get("seq", 0)) + 1
    rec["events"] = [*rec["events"], {"seq": rec["seq"], "at": now, "event": event, **details}]
    rec["events"] = rec["events"][-MAX_EVENTS:]


def settle(attempt: dict[str, Any], run: dict[str, Any] | None, boot: str) -> str:
    """How an attempt ended, judged from the daemon's ``run.json``."""
    if run is not None and run.get("attempt") == attempt["id"]:
        if run.get("stable_at"):
            return "stable"
        if run.get("exit"):
            return "clean"
        if run.get("ready_at"):
            return "crashed_after_ready"
    if attempt.get("boot") != boot:
        return "reboot"
    return "no_ready"


def decide(record: dict[str, Any], current: str, run: dict[str, Any] | None, boot: str,
           now: float, attempt_id: str, failures: int = DEFAULT_FAILURES,
           window: float = DEFAULT_WINDOW,
           can_revert: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """The guard's policy, without I/O: the new record and what to do.

    The action is ``{"kind": "exec", "version": V, "attempt": id}`` or
    ``{"kind": "revert", "version": P, "bad": V, "previous": O}`` (start P, with ``previous``
    pointing at O). ``can_revert`` says whether the previous version is still installed.
    """
    rec = copy.deepcopy(record)
    armed = rec.get("armed")
    start = {"kind": "exec", "version": current, "attempt": attempt_id}
    if not armed:
        rec["attempts"] = []
        return rec, start
    version = armed["version"]
    if version != current:  # someone else switched (a rollback): nothing to guard
        rec["armed"], rec["attempts"] = None, []
        return rec, start
    for attempt in rec["attempts"]:
        if attempt.get("outcome") is None:
            attempt["outcome"] = settle(attempt, run, boot)
    if any(a["outcome"] == "stable" for a in rec["attempts"]):
        add_event(rec, "update_proved", now, version=version)
        rec["armed"], rec["attempts"] = None, []
        return rec, start
    failed = [a for a in rec["attempts"]
              if a["outcome"] in FAILED and a.get("boot") == boot and now - a["at"] <= window]
    good = armed.get("previous")
    if len(failed) >= failures and good and can_revert:
        reason = (f"failed to start {len(failed)} times within {window:g}s "
                  f"({', '.join(a['outcome'] for a in failed)})")
        rec["bad"] = {**rec.get("bad", {}), version: {"reason": reason, "at": now,
                                                      "by": "boot-guard"}}
        add_event(rec, "update_guard_reverted", now, version=version, to=good, reason=reason)
        rec["armed"], rec["attempts"] = None, []
        return rec, {"kind": "revert", "version": good, "bad": version,
                     "previous": armed.get("previous_previous"), "attempt": attempt_id}
    rec["attempts"] = [*rec["attempts"], {"id": attempt_id, "version": version, "at": now,
                                          "boot": boot, "outcome": None}][-MAX_ATTEMPTS:]
    return rec, start


# -- the updater's side -----------------------------------------------------------------------

def arm(app: str, version: str, previous: str | None, previous_previous: str | None,
        now: float) -> None:
    with locked(app):
        rec = load_record(app)
        rec["armed"] = {"version": version, "previous": previous,
                        "previous_previous": previous_previous, "at": now}
        rec["attempts"] = []
        save_record(app, rec)


def disarm(app: str) -> None:
    with locked(app):
        rec = load_record(app)
        if rec["armed"] or rec["attempts"]:
            rec["armed"], rec["attempts"] = None, []
            save_record(app, rec)


def mark_bad(app: str, version: str, reason: str, now: float, by: str = "update") -> None:
    with locked(app):
        rec = load_record(app)
        rec["bad"] = {**rec["bad"], version: {"reason": reason, "at": now, "by": by}}
        save_record(app, rec)


def revert(app: str, bad: str, good: str, good_previous: str | None, reason: str,
           now: float) -> bool:
    """The updater's own rollback: if ``bad`` is still current, switch back to ``good`` and
    record ``bad``. False when the guard (or anyone) already switched away."""
    with locked(app):
        rec = load_record(app)
        rec["armed"], rec["attempts"] = None, []
        reverted = link_version(app, CURRENT) == bad
        if reverted:
            switch(app, good, good_previous)
            rec["bad"] = {**rec["bad"], bad: {"reason": reason, "at": now, "by": "update"}}
        save_record(app, rec)
    return reverted


def bad_versions(app: str) -> dict[str, Any]:
    return dict(load_record(app)["bad"])


def take_events(app: str) -> list[dict[str, Any]]:
    """Events the guard recorded that nobody has reported yet (marks them reported)."""
    with locked(app):
        rec = load_record(app)
        new = [e for e in rec["events"] if e["seq"] > rec["delivered"]]
        if new:
            rec["delivered"] = new[-1]["seq"]
            save_record(app, rec)
    return new


# -- the daemon's side (run.json) -------------------------------------------------------------

def write_run(app: str, **fields: Any) -> None:
    """Record this daemon's attempt: called at READY, once stable, and at a clean exit."""
    path = os.path.join(app, RUN_MARKER)
    current = read_json(path) or {}
    if current.get("attempt") != fields.get("attempt", current.get("attempt")):
        current = {}
    atomic_write_json(path, {"format": FORMAT, **current, **fields})


# -- the launcher -----------------------------------------------------------------------------

def _parse(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    opts: dict[str, Any] = {"home": os.environ.get("TASKMUX_HOME") or
                            os.path.join(os.path.expanduser("~"), ".taskmux"),
                            "failures": DEFAULT_FAILURES, "window": DEFAULT_WINDOW,
                            "stable": DEFAULT_STABLE}
    kinds = {"--home": str, "--failures": int, "--window": float, "--stable": float}
    i = 0
    while i < len(argv) and argv[i] in kinds:
        if i + 1 >= len(argv):
            raise SystemExit(f"bootguard: {argv[i]} needs a value")
        opts[argv[i][2:]] = kinds[argv[i]](argv[i + 1])
        i += 2
    rest = argv[i:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return opts, rest or ["run"]


def _daemon(app: str, version: str) -> str:
    return os.path.join(app, VERSIONS, version, "bin", "taskmuxd")


def main(argv: list[str] | None = None) -> int:
    opts, daemon_args = _parse(sys.argv[1:] if argv is None else argv)
    home = os.path.abspath(opts["home"])
    app = os.path.join(home, "app")
    attempt_id = os.urandom(6).hex()
    with locked(app):
        current = link_version(app, CURRENT)
        if current is None:
            log(f"taskmux is not installed under {app} (no 'current' link); reinstall it with "
                "install.sh")
            return EXIT_NOT_INSTALLED
        rec = load_record(app)
        run = read_json(os.path.join(app, RUN_MARKER))
        good = (rec.get("armed") or {}).get("previous")
        can_revert = bool(good) and os.path.exists(_daemon(app, str(good)))
        new, action = decide(rec, current, run, boot_id(), time.time(), attempt_id,
                             opts["failures"], opts["window"], can_revert)
        if action["kind"] == "revert":
            switch(app, action["version"], action["previous"])
            log(f"taskmux {action['bad']} failed to start {opts['failures']} times; switched "
                f"back to {action['version']} and marked {action['bad']} bad")
        if new != rec:
            save_record(app, new)
    version = action["version"]
    target = _daemon(app, version)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update({"TASKMUX_HOME": home, ATTEMPT_ENV: attempt_id, STABLE_ENV: str(opts["stable"])})
    try:
        os.execve(target, [target, *daemon_args], env)
    except OSError as exc:
        log(f"cannot start {target}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
