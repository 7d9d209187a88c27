"""Background jobs with an owner, and a cheap "something changed" signal to wait on.

A subsystem owns one ``Jobs``: its jobs run in one ``asyncio.TaskGroup`` that lives as long as
the subsystem. A job that fails is logged and does not take its siblings down; closing the
group cancels whatever still runs. ``CancelledError`` is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("taskmuxd.jobs")


class Jobs:
    def __init__(self, name: str) -> None:
        self.name = name
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None

    async def open(self) -> None:
        started = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner = asyncio.create_task(self._run(started), name=f"{self.name} jobs")
        await started.wait()

    async def _run(self, started: asyncio.Event) -> None:
        assert self._closing is not None
        async with asyncio.TaskGroup() as group:
            self._group = group
            started.set()
            await self._closing.wait()
            for task in list(asyncio.all_tasks()):
                if task.get_name().startswith(f"{self.name}:"):
                    task.cancel()
        self._group = None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[None]:
        if self._group is None:
            coro.close()
            raise RuntimeError(f"{self.name}: not running, cannot start {name}")
        return self._group.create_task(self._guard(coro, name), name=f"{self.name}:{name}")

    async def _guard(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: job %s failed", self.name, name)

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner
            self._runner = None


class Changed:
    """Waiters wait for a predicate; ``fire`` wakes them all to re-check it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """True once ``predicate()`` holds; False if ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            event = self._event
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True
