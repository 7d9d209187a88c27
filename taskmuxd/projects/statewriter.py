"""The state files' writer: one thread that makes the projects' state durable, in batches.

The event loop hands it the bytes of a file (``submit``) or a removal (``remove``) and goes
on; the thread takes everything pending at once, keeps only the latest version of each path
(an older one is superseded before it is written), writes each through a temporary file that
is fsynced and renamed over the old one, and fsyncs each folder once per batch. Readers see
the old file or the new, never half, and a ``kill -9`` at any moment leaves either.

Each submission returns a future of the loop that made it, resolved once that version (or a
later one of the same path) is durable, or failed with the ``OSError`` of the write (a full
disk: the caller retries). Code that must not go on before a record is on disk awaits
``durable(path)``; a launch (or a signal), written ahead, awaits only ``in_place(path)``:
the new file renamed over the old, its data already fsynced, the folder's fsync still to come.

Why that is enough for the write-ahead: it guards against the daemon dying (``kill -9``)
between asking tmux for a runner and recording that it did. Once renamed, the record is what
any later reader of the path gets, whatever becomes of this process: the fsyncs add nothing
there. They matter only if the machine loses power, and then every process the launch
started is gone with it, so no run can be left behind or started twice whatever the record
says; the next daemon finds the old run gone by its boot id. So the write-ahead of launches
and signals (one file per batch: ``ahead.json``) is even written ``late``: renamed into place
first, its data fsynced after (then the folder, as for every write). The price is a window
of a few milliseconds in which a power loss could leave that one file torn on a file system
that does not order a rename after the data it replaces (ext4 does, by default); a torn
record is moved aside when read, and the task starts afresh from its configuration. A
version that supersedes a late one before it was written (the next batch's write-ahead) is
written late in its place: the same file, renamed before its fsync either way. A file written
without fsync (a runner's spec) is done once in place: it never waits for the batch's fsyncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from dataclasses import dataclass, field

from taskmuxctl.core.fsutil import TEMP_SUFFIX, fsync_dir


@dataclass(eq=False)
class _Write:
    data: bytes | None  # None: remove the file
    mode: int
    sync: bool = True  # fsynced (and its folder); False: only atomic (a file read at once)
    late: bool = False  # with sync: renamed into place first, fsynced after (see ``submit``)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    placed: list[asyncio.Future[None]] = field(default_factory=list)  # see ``in_place``
    is_placed: bool = False  # renamed into place (or removed); the folder may be unsynced


MAX_ROUNDS = 8  # rounds of renames before the folders' fsyncs (bounds a durable wait)


class StateWriter:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, _Write] = {}
        self._writing: dict[str, list[_Write]] = {}  # taken, not yet durable, oldest first
        self._thread: threading.Thread | None = None
        self._hurry = False  # a write awaited only in place is pending (see ``_batch``)
        self.batches = 0  # batches written (the tests read it)

    def submit(self, path: str, data: bytes | str, mode: int = 0o600,
               sync: bool = True, late: bool = False) -> asyncio.Future[None]:
        """Replace ``path`` with ``data`` soon; the future says when it is durable (with
        ``sync`` False: when it is in place, not fsynced, for a file that matters only
        until the next reboot, such as a runner's spec). ``late``: rename the file into
        place before its fsync, so that ``in_place`` comes a fsync sooner; for the write-ahead
        of launches and signals only (the module's note says why the order does not matter
        there)."""
        raw = data.encode() if isinstance(data, str) else data
        return self._put(path, _Write(raw, mode, sync, late))

    def submit_many(self, files: list[tuple[str, bytes | str]], mode: int = 0o600
                    ) -> list[asyncio.Future[None]]:
        """``submit`` of several files (fsynced) at once: handed over together, the thread
        woken once (the records of a hundred tasks changed in one turn: one hand-over, not
        a hundred that each wake the thread for a batch of its own)."""
        jobs = [(path, _Write(data.encode() if isinstance(data, str) else data, mode))
                for path, data in files]
        return self._put_many(jobs)

    def remove(self, path: str, sync: bool = True) -> asyncio.Future[None]:
        """Remove ``path`` after any write of it still pending (a missing file is fine);
        ``sync``: its folder fsynced too."""
        return self._put(path, _Write(None, 0, sync))

    def durable(self, path: str) -> asyncio.Future[None]:
        """Resolved once whatever was submitted for ``path`` so far is durable (at once when
        nothing is)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._cond:
            taken = self._writing.get(path)
            job = self._pending.get(path) or (taken[-1] if taken else None)
            if job is not None:
                job.waiters.append(fut)
                return fut
        fut.set_result(None)
        return fut

    def in_place(self, path: str) -> asyncio.Future[None]:
        """Resolved once whatever was submitted for ``path`` so far is renamed into place
        (its data fsynced, the folder's fsync perhaps not yet; see the module's note)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._cond:
            taken = self._writing.get(path)
            job = self._pending.get(path) or (taken[-1] if taken else None)
            if job is not None and not job.is_placed:
                job.placed.append(fut)
                return fut
        fut.set_result(None)
        return fut

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (or failed)."""
        with self._cond:
            paths = list(self._pending) + list(self._writing)
        for path in paths:
            with contextlib.suppress(OSError):
                await self.durable(path)

    def _put(self, path: str, job: _Write) -> asyncio.Future[None]:
        return self._put_many([(path, job)])[0]

    def _put_many(self, jobs: list[tuple[str, _Write]]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[None]] = []
        for _path, job in jobs:
            fut: asyncio.Future[None] = loop.create_future()
            job.waiters.append(fut)
            futs.append(fut)
        with self._cond:
            for path, job in jobs:
                old = self._pending.get(path)
                if old is not None:  # superseded before it was written: its waiters wait
                    job.waiters[:0] = old.waiters
                    job.placed[:0] = old.placed
                    # Written late as the superseded version would have been (the file was
                    # to be renamed before its fsync either way): ``in_place`` waits for no
                    # fsync.
                    job.late = job.data is not None and (job.late or old.late)
                    job.sync = job.sync or old.sync
                self._pending[path] = job
                if job.data is not None and (job.late or not job.sync):
                    self._hurry = True  # awaited in place: before the batch's next fsync
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="taskmux-state",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return futs

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
            self._batch()
            self.batches += 1

    def _batch(self) -> None:
        """Rounds of files written, fsynced and renamed into place (each round's ``in_place``
        waiters released as soon as it is), for as long as more keep coming (up to
        MAX_ROUNDS); then each folder fsynced once and every waiter of the batch released.
        A launch written ahead thus never waits for the folder fsync of the writes before it.

        Nor for any other fsync: a write whose waiters need it only in place (a late one,
        the write-ahead of launches or signals; one without fsync, a spec) handed over while
        the batch writes is hurried in before the batch's next fsync (unless an older version
        of the same file waits to be written in this round: order first)."""
        failed: dict[int, OSError] = {}  # id(job) -> why
        folders: dict[str, list[tuple[str, _Write]]] = {}
        unsynced: list[tuple[str, _Write, int]] = []  # renamed before their fsync: open fds
        taken: list[tuple[str, _Write]] = []

        def place(jobs: list[_Write]) -> None:
            """Release the waiters of written jobs that wait only for them in place."""
            with self._cond:
                placed = []
                for job in jobs:
                    job.is_placed = True
                    placed += [(fut, failed.get(id(job))) for fut in job.placed]
                    if not job.sync and job.data is not None:  # in place is all it waits for
                        placed += [(fut, failed.get(id(job))) for fut in job.waiters]
            _settle(placed)

        def write(batch: dict[str, _Write], hurry: bool) -> None:
            unwritten = set(batch)
            # Those awaited only in place go first, and are released before the round's
            # other files are written (each with its fsync).
            order = sorted(batch.items(), key=lambda item: not _hasty(item[1]))
            written: list[_Write] = []
            for path, job in order:
                if written and not _hasty(job):
                    place(written)
                    written = []
                if hurry and self._hurry and job.sync and not job.late and job.data is not None:
                    hurried = self._take_hurried(unwritten)
                    if hurried:
                        write(hurried, False)
                unwritten.discard(path)
                try:
                    if job.data is None:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
                    elif job.sync and job.late:
                        unsynced.append((path, job, _replace(path, job.data, job.mode, False,
                                                             keep=True)))
                    else:
                        _replace(path, job.data, job.mode, job.sync)
                    if job.sync:
                        folders.setdefault(os.path.dirname(path), []).append((path, job))
                except OSError as exc:
                    failed[id(job)] = exc
                written.append(job)
            place(written)
            taken.extend(batch.items())

        def hurry() -> None:
            if self._hurry:
                hurried = self._take_hurried(set())
                if hurried:
                    write(hurried, False)

        for _ in range(MAX_ROUNDS):
            with self._cond:
                if not self._pending:
                    break
                batch, self._pending = self._pending, {}
                self._hurry = False
                for path, job in batch.items():
                    self._writing.setdefault(path, []).append(job)
            write(batch, True)
        def sync_close(path: str, job: _Write, fd: int) -> None:
            """The data fsync of a file renamed into place before it; its descriptor closed."""
            try:
                os.fsync(fd)
            except OSError as exc:
                failed[id(job)] = OSError(exc.errno, exc.strerror, path)
            finally:
                os.close(fd)

        done_fds = 0
        while done_fds < len(unsynced):  # hurried writes may add to it
            hurry()
            sync_close(*unsynced[done_fds])
            done_fds += 1
        while folders:
            hurry()
            folder = next(iter(folders))
            entries = folders.pop(folder)
            for entry in unsynced[done_fds:]:  # hurried in just now: its data first
                sync_close(*entry)
            done_fds = len(unsynced)
            try:
                fsync_dir(folder)
            except OSError as exc:  # the renames may not be durable: say so to each
                for path, job in entries:
                    failed[id(job)] = OSError(exc.errno, exc.strerror, path)
        with self._cond:
            for path, job in taken:
                jobs = self._writing[path]
                jobs.remove(job)
                if not jobs:
                    del self._writing[path]
            done = [(fut, failed.get(id(job))) for _, job in taken for fut in job.waiters]
        _settle(done)

    def _take_hurried(self, unwritten: set[str]) -> dict[str, _Write]:
        """The pending writes awaited only in place (see ``_batch``), taken out of the queue,
        but for a file whose older version waits in ``unwritten``."""
        with self._cond:
            self._hurry = False
            got: dict[str, _Write] = {}
            for path, job in list(self._pending.items()):
                if not _hasty(job):
                    continue
                if path in unwritten:
                    self._hurry = True  # not yet: after that version
                    continue
                got[path] = self._pending.pop(path)
                self._writing.setdefault(path, []).append(job)
            return got


def _hasty(job: _Write) -> bool:
    """Whether a write's waiters need it only in place (late, or not fsynced at all)."""
    return job.data is not None and (job.late or not job.sync)


def _replace(path: str, data: bytes, mode: int, sync: bool, keep: bool = False) -> int:
    """Write ``data`` to a temporary file (fsynced with ``sync``) and rename it over
    ``path``. ``keep``: return the file's descriptor, open, for a fsync after the rename
    (the caller closes it); else -1."""
    # One writer thread: one temporary name per file is enough (``tempfiles`` knows it).
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.getpid()}{TEMP_SUFFIX}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            raise
        if keep:
            return fd
        os.close(fd)
        return -1
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OSError(exc.errno, exc.strerror, path) from exc


Outcome = tuple[asyncio.Future[None], OSError | None]


def _settle(outcomes: list[Outcome]) -> None:
    """Resolve a batch's futures, all in one turn of each loop (the launches it releases
    then reach tmux together)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for fut, exc in outcomes:
        by_loop.setdefault(fut.get_loop(), []).append((fut, exc))
    for loop, some in by_loop.items():
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, some)


def _resolve(outcomes: list[Outcome]) -> None:
    for fut, exc in outcomes:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a caller that does not look is not warned about it


WRITER = StateWriter()
