"""A subsystem's background jobs, owned by one ``asyncio.TaskGroup``.

``start(setup)`` runs ``setup(jobs)`` inside the group and returns once it has (so the
subsystem reports "started" only when it serves, as with trio's ``nursery.start``); ``stop``
cancels every job and waits for them. A job that fails ends the group and is logged; it never
cancels the daemon's own task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("taskmuxd.jobs")


class Jobs:
    def __init__(self, name: str) -> None:
        self.name = name
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        if self._group is None:
            coro.close()
            raise RuntimeError(f"{self.name}: jobs are not running")
        task = self._group.create_task(coro, name=f"{self.name}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self, setup: Callable[[Jobs], Awaitable[None]]) -> None:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop.clear()
        self._main = asyncio.create_task(self._run(setup, started), name=f"{self.name} jobs")
        await started

    async def _run(self, setup: Callable[[Jobs], Awaitable[None]],
                   started: asyncio.Future[None]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                await setup(self)
                started.set_result(None)
                await self._stop.wait()
                for task in list(self._tasks):
                    task.cancel()
        except BaseException as exc:
            if not started.done():
                while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                    exc = exc.exceptions[0]
                started.set_exception(exc)
            elif not isinstance(exc, asyncio.CancelledError):
                log.error("%s: a background job failed; the others were stopped",
                          self.name, exc_info=exc)
            else:
                raise
        finally:
            self._group = None

    async def stop(self) -> None:
        self._stop.set()
        if self._main is not None:
            await asyncio.wait([self._main])
            self._main = None

    @property
    def running(self) -> bool:
        return self._main is not None and not self._main.done()
