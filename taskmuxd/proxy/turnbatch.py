"""Work the proxy's HTTP/2 path does once at the end of a turn of the event loop.

What several callbacks of one turn queue for a connection (a dozen requests read from the
browser at once, for the task; answers from several task connections, for the browser)
goes out in one write per connection. The plain way is ``loop.call_soon``, which runs in
the *next* turn, and a turn with callbacks ready polls the selector again first: one more
``epoll_wait`` and one more pass of the loop for every request when a browser sends its
requests one TLS record at a time, as Chromium mostly does for a page of modules.

So the callbacks that queue such work (a read from the browser, a read from a task) run
inside ``with batch:``, and as the outermost one ends, the queued work runs at once when
nothing else waits to run in this turn (the loop's ready queue is empty: this was the
turn's last callback, so the next turn would have run the work first thing), else it is
left to ``call_soon`` as before. Several reads ready in one turn (answers from a dozen task
connections) each queue work: the first leaves it to ``call_soon``, and the last one, finding
nothing but that call waiting, cancels it and runs the work at once: the answers go out in
the turn they were read, not after another poll of the selector. (Cancelled, not taken
out: the loop counts this turn's callbacks before it runs them, and whether the call was
among them cannot be seen.)
Work queued outside such a callback always goes through ``call_soon``. Where the loop's
ready queue cannot be seen (a loop other than asyncio's own), nothing runs early.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger("taskmuxd.proxy")


def turn_ends(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether no other callback waits to run in ``loop``'s current turn (False when that
    cannot be known)."""
    ready = getattr(loop, "_ready", None)  # (asyncio's BaseEventLoop: this turn's callbacks)
    return ready is not None and not ready


class TurnBatch:
    """Jobs run once, together, at the end of the current turn (see the module's doc)."""

    __slots__ = ("handle", "holding", "jobs", "loop", "ready", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # (asyncio's BaseEventLoop: this turn's callbacks, a deque; None for another loop)
        self.ready: deque[asyncio.Handle] | None = getattr(loop, "_ready", None)
        self.jobs: list[Callable[[], None]] = []
        self.scheduled = False  # a call_soon of ``run`` is pending
        self.handle: asyncio.Handle | None = None  # (that call_soon's)
        self.holding = 0  # ``with`` blocks under way

    def later(self, job: Callable[[], None]) -> None:
        """Run ``job`` at the end of this turn (the caller queues each job once)."""
        self.jobs.append(job)
        if not self.holding and not self.scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self.scheduled = True
        self.handle = self.loop.call_soon(self.run)

    def run(self) -> None:
        self.scheduled = False
        self.handle = None
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            try:
                job()
            except Exception:
                log.exception("a proxy job at the end of a turn failed")

    def __enter__(self) -> None:
        self.holding += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.holding -= 1
        if self.holding or not self.jobs:
            return
        ready = self.ready
        if self.scheduled:
            # Only our own call waits in the ready queue: this is the turn's last callback.
            handle = self.handle
            if ready is not None and len(ready) == 1 and ready[0] is handle \
                    and handle is not None:
                handle.cancel()
                self.run()
            return
        if ready is not None and not ready:
            self.run()
        else:
            self._schedule()
