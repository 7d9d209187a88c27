"""``registry.json``: which projects the daemon supervises (name → taskmux.toml path).

Written atomically under an flock, with a format version; a corrupt file is moved aside (the
caller is told, to write an event) and an empty registry is used, never a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from taskmuxctl.core.errors import ClientError
from taskmuxctl.core.fsutil import atomic_write
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.rpctypes import RegistryAction

log = logging.getLogger("taskmuxd.registry")

FORMAT = 1


@dataclass(frozen=True)
class Entry:
    name: str
    config: str
    registered_at: float


class RegistryConflict(ClientError):
    default_code = Code.REGISTRY_CONFLICT


class Registry:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = path + ".lock"
        self.corrupt_moved_to: str | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self) -> dict[str, Entry]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
            projects = data["projects"]
            return {name: Entry(name, str(e["config"]), float(e.get("registered_at", 0)))
                    for name, e in projects.items()}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = f"{self.path}.corrupt-{int(time.time())}"
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            self.corrupt_moved_to = aside
            log.error("registry %s was unreadable (%s); moved aside to %s", self.path, exc, aside)
            return {}

    def _save(self, entries: dict[str, Entry]) -> None:
        data = {"format": FORMAT, "projects": {
            e.name: {"config": e.config, "registered_at": e.registered_at}
            for e in sorted(entries.values(), key=lambda e: e.name)}}
        atomic_write(self.path, json.dumps(data, indent=2) + "\n")

    def register(self, name: str, config: str, force: bool = False) -> RegistryAction:
        """Add or re-point ``name``. Returns "registered", "repointed", "replaced" or
        "unchanged". Two live paths with one name are refused unless ``force``."""
        config = os.path.abspath(config)
        with self._locked():
            entries = self.load()
            old = entries.get(name)
            if old is not None and old.config == config:
                return "unchanged"
            action: RegistryAction
            if old is None:
                action = "registered"
            elif not os.path.exists(old.config):
                action = "repointed"
            elif force:
                action = "replaced"
            else:
                raise RegistryConflict(
                    f"a project named {name!r} is already registered from {old.config}, which "
                    f"still exists; rename one of them, or pass --force to make {config} win",
                    {"name": name, "registered": old.config, "new": config})
            entries[name] = Entry(name, config, time.time())
            self._save(entries)
            return action

    def unregister(self, name: str) -> bool:
        with self._locked():
            entries = self.load()
            if name not in entries:
                return False
            del entries[name]
            self._save(entries)
            return True
