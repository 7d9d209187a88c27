"""The installed layout under ``{home}/app``::

    versions/{version}/   a virtual environment holding that version (``.taskmux-version`` in
                          it once it is installed and passed its preflight)
    current, previous     symlinks to ``versions/{version}``, switched atomically
    bootguard.py          the launcher the service manager starts (see ``bootguard``)
    layout.json           the interpreter the versions are built from (it also runs the guard)
    update.json           the updater's state: a rollback pin, the last update's outcome
    bootguard.json        the guard's record: armed version, attempts, bad versions, events
    run.json              the running daemon's attempt: READY, stable, clean exit
    update.lock, bootguard.lock, tmp/, update.log

Stdlib only: the service-unit renderer calls ``installed_daemon_command`` on the client side.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from typing import Any

from taskmuxctl.core.fsutil import atomic_write
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.update import bootguard

STATE_FORMAT = 1
COMPLETE_MARKER = ".taskmux-version"


class AppLayout:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.app = paths.app_dir

    def _join(self, *parts: str) -> str:
        return os.path.join(self.app, *parts)

    @property
    def versions_dir(self) -> str:
        return self._join(bootguard.VERSIONS)

    def version_dir(self, version: str) -> str:
        return self._join(bootguard.VERSIONS, version)

    def bin(self, version: str, name: str) -> str:
        return self._join(bootguard.VERSIONS, version, "bin", name)

    @property
    def guard_script(self) -> str:
        return self._join("bootguard.py")

    @property
    def layout_file(self) -> str:
        return self._join("layout.json")

    @property
    def state_file(self) -> str:
        return self._join("update.json")

    @property
    def lock_file(self) -> str:
        return self._join("update.lock")

    @property
    def tmp_dir(self) -> str:
        return self._join("tmp")

    @property
    def update_log(self) -> str:
        return self._join("update.log")

    def ensure(self) -> None:
        self.paths.ensure()
        for folder in (self.app, self.versions_dir, self.tmp_dir):
            os.makedirs(folder, mode=0o700, exist_ok=True)

    # -- versions -------------------------------------------------------------------------

    def installed(self) -> bool:
        return self.current_version() is not None

    def current_version(self) -> str | None:
        return bootguard.link_version(self.app, bootguard.CURRENT)

    def previous_version(self) -> str | None:
        return bootguard.link_version(self.app, bootguard.PREVIOUS)

    def is_complete(self, version: str) -> bool:
        return os.path.exists(os.path.join(self.version_dir(version), COMPLETE_MARKER))

    def completed_sha256(self, version: str) -> str | None:
        try:
            with open(os.path.join(self.version_dir(version), COMPLETE_MARKER),
                      encoding="utf-8") as fh:
                return str(json.load(fh).get("sha256")) or None
        except (OSError, ValueError, AttributeError):
            return None

    def mark_complete(self, version: str, sha256: str) -> None:
        atomic_write(os.path.join(self.version_dir(version), COMPLETE_MARKER),
                     json.dumps({"version": version, "sha256": sha256,
                                 "installed_at": time.time()}) + "\n", mode=0o644)

    def installed_versions(self) -> list[str]:
        try:
            names = os.listdir(self.versions_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith("."))

    def switch(self, current: str, previous: str | None) -> None:
        bootguard.switch(self.app, current, previous)

    def remove_version(self, version: str) -> None:
        path = self.version_dir(version)
        if os.path.islink(path):
            os.unlink(path)
        else:
            shutil.rmtree(path, ignore_errors=True)

    def prune(self) -> list[str]:
        """Remove every version but ``current`` and ``previous`` (and stale downloads)."""
        keep = {self.current_version(), self.previous_version()}
        removed = []
        try:
            names = os.listdir(self.versions_dir)
        except FileNotFoundError:
            names = []
        for name in names:
            if name not in keep:
                self.remove_version(name)
                removed.append(name)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.tmp_dir):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.tmp_dir, name))
        return sorted(n for n in removed if not n.startswith("."))

    # -- the interpreter ------------------------------------------------------------------

    def python(self) -> str | None:
        data = bootguard.read_json(self.layout_file) or {}
        python = data.get("python")
        return python if isinstance(python, str) and os.path.exists(python) else None

    def write_python(self, python: str) -> None:
        atomic_write(self.layout_file,
                     json.dumps({"format": STATE_FORMAT, "python": python}) + "\n", mode=0o644)

    # -- the updater's state --------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        data = bootguard.read_json(self.state_file)
        state: dict[str, Any] = {"format": STATE_FORMAT, "pinned": None, "last": None}
        if data and data.get("format") == STATE_FORMAT:
            state.update(data)
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        atomic_write(self.state_file, json.dumps(state, indent=1, sort_keys=True) + "\n")


def installed_daemon_command(paths: Paths) -> list[str] | None:
    """The program a service manager (or ``daemon start``) runs in the installed layout: the
    boot-guard on the base interpreter, which execs ``current``'s ``taskmuxd`` with the
    arguments that follow (append ``run`` and its options, as to ``taskmuxd``). None when
    taskmux is not installed that way. ``service.program.daemon_program`` returns it."""
    layout = AppLayout(paths)
    python = layout.python()
    if python is None or not os.path.exists(layout.guard_script) or not layout.installed():
        return None
    return [python, layout.guard_script, "--home", paths.home, "--"]
