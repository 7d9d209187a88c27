"""Watching every registered taskmux.toml (watchdog), debounced, on the event loop.

The folder is watched rather than the file, because editors save by writing a temporary file
and renaming it over the old one; every burst of events for one config counts as one change.
watchdog is loaded in a worker thread when the first config is to be watched (a daemon with no
project never loads it); folders asked for meanwhile are watched as soon as it is.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger("taskmuxd.watcher")

DEBOUNCE = 0.25
CHANGES = frozenset(("modified", "created", "moved", "deleted", "closed"))


class ConfigWatcher:
    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
        self._observer: Any = None
        self._watches: dict[str, Any] = {}  # folder -> watch handle
        self._files: dict[str, set[str]] = {}  # folder -> config paths in it
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Task[None] | None = None  # the observer being made
        self._stopped = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def _start(self) -> None:
        try:
            observer = await asyncio.to_thread(_new_observer)
        except OSError as exc:  # no inotify left: supervision goes on, edits need a reload
            log.error("cannot watch the projects' taskmux.toml files: %s", exc)
            return
        if self._starting is None:  # stopped meanwhile
            observer.stop()
            return
        self._observer = observer
        for folder in list(self._files):
            self._schedule(folder)

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._stopped = True  # no observer is made after this
        self._starting = None  # an observer still being made is stopped once it is
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def watch(self, config_path: str) -> None:
        if self._loop is None:
            return
        folder = os.path.dirname(os.path.abspath(config_path))
        self._files.setdefault(folder, set()).add(os.path.abspath(config_path))
        if self._observer is not None:
            self._schedule(folder)
        elif self._starting is None and not self._stopped:
            self._starting = self._loop.create_task(self._start())

    def _schedule(self, folder: str) -> None:
        if folder in self._watches or not os.path.isdir(folder):
            return
        from watchdog.events import FileSystemEvent, FileSystemEventHandler

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in CHANGES:
                    return  # opened / closed-without-writing: someone (we) only read it
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    path = os.fsdecode(raw) if raw else ""
                    if path and path in watcher._files.get(folder, ()):
                        assert watcher._loop is not None
                        watcher._loop.call_soon_threadsafe(watcher._bump, path)

        try:
            self._watches[folder] = self._observer.schedule(Handler(), folder, recursive=False)
        except OSError as exc:
            log.warning("cannot watch %s: %s", folder, exc)

    def unwatch(self, config_path: str) -> None:
        folder = os.path.dirname(os.path.abspath(config_path))
        files = self._files.get(folder)
        if files is None:
            return
        files.discard(os.path.abspath(config_path))
        if not files:
            del self._files[folder]
            if folder in self._watches and self._observer is not None:
                self._observer.unschedule(self._watches.pop(folder))

    def _bump(self, path: str) -> None:
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        assert self._loop is not None
        self._timers[path] = self._loop.call_later(DEBOUNCE, self._fire, path)

    def _fire(self, path: str) -> None:
        self._timers.pop(path, None)
        self.on_change(path)


def _new_observer() -> Any:
    """A started watchdog observer (its import, ~15-30 ms, runs in a worker thread)."""
    import watchdog.events  # noqa: F401  (what ``_schedule`` imports, loaded here too)
    from watchdog.observers import Observer

    observer = Observer()
    observer.daemon = True
    observer.start()
    return observer
