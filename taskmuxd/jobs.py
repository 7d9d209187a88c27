"""A subsystem's background jobs, owned by one ``asyncio.TaskGroup``; and a cheap "something
changed" signal to wait on.

``start(setup)`` runs ``setup(jobs)`` inside the group and returns once it has, so a subsystem
reports "started" only when it serves (as with trio's ``nursery.start``); an exception from
``setup`` comes out of ``start``. A job that fails later is logged and does not take its
siblings down. ``stop`` cancels every job and waits for them. ``CancelledError`` is never
swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("taskmuxd.jobs")


async def _nothing(_jobs: Jobs) -> None:
    return None


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
            raise RuntimeError(f"{self.name}: jobs are not running, cannot start {name}")
        task = self._group.create_task(self._guard(coro, name), name=f"{self.name}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guard(self, coro: Coroutine[Any, Any, Any], name: str) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: job %s failed", self.name, name)
            return None

    async def start(self, setup: Callable[[Jobs], Awaitable[None]] = _nothing) -> None:
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
                log.error("%s: background jobs failed", self.name, exc_info=exc)
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


class Changed:
    """Waiters wait for a predicate; ``fire`` has them all re-checked.

    The fires of one turn of the loop are checked once, at its end, by one callback that
    runs every waiting predicate and wakes only those that hold: a start of a hundred tasks
    has a hundred launches waiting here while their runners report, and a task, a timer and
    an event per waiter per fire made that quadratic in asyncio's own machinery."""

    def __init__(self) -> None:
        self._waiters: dict[asyncio.Future[bool], Callable[[], bool]] = {}
        self._scheduled = False

    def fire(self) -> None:
        if self._waiters and not self._scheduled:
            self._scheduled = True
            next(iter(self._waiters)).get_loop().call_soon(self._check)

    def _check(self) -> None:
        self._scheduled = False
        for fut, predicate in list(self._waiters.items()):
            if fut.done():
                continue
            try:
                if predicate():
                    fut.set_result(True)
            except Exception as exc:  # the waiter's own error, raised in the waiter
                fut.set_exception(exc)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """True once ``predicate()`` holds; False if ``timeout`` seconds pass first."""
        if predicate():
            return True
        if timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiters[fut] = predicate
        timer = loop.call_later(timeout, _timed_out, fut)
        try:
            return await fut or predicate()
        finally:
            timer.cancel()
            del self._waiters[fut]


def _timed_out(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)
