"""What a project's supervision needs to survive a daemon restart, under ``projects/{name}/``.

``state.json`` (format-versioned, atomic): whether the project should be up.
``tasks/{task}.json``: per task its policy state, run id, port, window and last known process,
written off the event loop by ``statewriter`` in batches. ``ahead.json``: the records of a
batch of tasks about to be signalled (a stop of a hundred tasks), written ahead as one file,
before their own files (see ``save_ahead``). Every record carries ``seq``, the project's write
counter: where the same task (or ``running``) is in two files, the higher ``seq`` is the
later word, whichever file it is in. ``env.json`` (0600): the environment
of the shell that started the project. ``config.last.toml``: the last valid
taskmux.toml, so a broken edit never stops supervision. ``run/{task}.json``: the runner's
record; ``run/{task}.spec.json``: what the runner was asked to run. ``run/*.ending``: tokens
of earlier versions (one per task a stop ended; ``run/ending.runs`` replaced them), removed
when the project is restored (``load``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from dataclasses import dataclass, field, fields
from typing import Any

from taskmuxctl.core.fsutil import atomic_write
from taskmuxctl.core.paths import Paths
from taskmuxd.policy import Cause, State, TaskState
from taskmuxd.proctree import ProcId
from taskmuxd.projects.statewriter import WRITER
from taskmuxd.runrecord import FormatError, RunRecord, read_record

log = logging.getLogger("taskmuxd.state")

FORMAT = 1
OLD_ENDING = ".ending"  # run/{task}.ending: an earlier version's token (see the docstring)


@dataclass
class TaskRecord:
    """Per-task facts kept across daemon restarts (times as wall-clock seconds)."""

    policy: State = field(default_factory=State)
    run_id: int = 0
    port: int | None = None
    window_id: str | None = None
    pid: int | None = None
    pgid: int | None = None
    pid_start: int | None = None  # the task's first process's start time in clock ticks
    runner_pid: int | None = None
    runner_start: int | None = None  # the runner's start time in clock ticks (its identity)
    boot_id: str | None = None  # the boot the runner ran in
    # Whether every process of the last run is known to be gone (the runner said so, or the
    # daemon ended them). A launch first clears what is left of earlier runs when it is not.
    clean: bool = True
    started_wall: float | None = None
    exited_wall: float | None = None

    def task_id(self) -> ProcId | None:
        """The identity of the task's first process (the shell or the program itself)."""
        return ident(self.pid, self.pid_start, self.boot_id)

    def runner_id(self) -> ProcId | None:
        return ident(self.runner_pid, self.runner_start, self.boot_id)


def ident(pid: int | None, start: int | None, boot: str | None) -> ProcId | None:
    return ProcId(pid, start, boot or "") if isinstance(pid, int) and isinstance(start, int) \
        else None


@dataclass
class ProjectRecord:
    running: bool = False  # the user wants the project up (restore it if tmux goes away)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)


class ProjectFiles:
    def __init__(self, paths: Paths, project: str) -> None:
        self.dir = paths.project_dir(project)
        self.run_dir = os.path.join(self.dir, "run")
        self.logs_dir = paths.logs_dir(project)
        self.tasks_dir = os.path.join(self.dir, "tasks")
        self.state = os.path.join(self.dir, "state.json")
        self.env = os.path.join(self.dir, "env.json")
        self.last_config = os.path.join(self.dir, "config.last.toml")
        self.ahead = os.path.join(self.dir, "ahead.json")
        self.seq = 0  # the last write's number (``load`` starts from what is on disk)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def ensure(self) -> None:
        """The project's folders, 0700 each (its task runners, started with the user's umask,
        find ``logs/`` already there)."""
        for folder in (self.dir, self.run_dir, self.tasks_dir, self.logs_dir):
            os.makedirs(folder, mode=0o700, exist_ok=True)

    def task_state(self, task: str) -> str:
        return os.path.join(self.tasks_dir, f"{task}.json")

    def record(self, task: str) -> str:
        return os.path.join(self.run_dir, f"{task}.json")

    def spec(self, task: str) -> str:
        return os.path.join(self.run_dir, f"{task}.spec.json")


def _policy_to_json(p: State, mono_now: float, wall_now: float) -> dict[str, Any]:
    out = {name: getattr(p, name) for name in _policy_fields()}  # flat: asdict is slower
    out["state"] = p.state.value
    out["cause"] = p.cause.value if p.cause else None
    for key in ("started_at", "unhealthy_at", "restart_at"):  # monotonic → wall
        if out[key] is not None:
            out[key] = wall_now - (mono_now - out[key])
    return out


@functools.cache
def _policy_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(State))


def _policy_from_json(d: dict[str, Any], mono_now: float, wall_now: float) -> State:
    known = {f.name for f in fields(State)}
    kw = {k: v for k, v in d.items() if k in known}
    kw["state"] = TaskState(kw.get("state", "stopped"))
    kw["cause"] = Cause(kw["cause"]) if kw.get("cause") else None
    for key in ("started_at", "unhealthy_at", "restart_at"):
        if kw.get(key) is not None:
            kw[key] = mono_now - (wall_now - float(kw[key]))
    return State(**kw)


def _task_to_json(t: TaskRecord, mono: float, wall: float, seq: int) -> dict[str, Any]:
    return {"format": FORMAT, "seq": seq, "run_id": t.run_id, "port": t.port,
            "window_id": t.window_id, "pid": t.pid, "pgid": t.pgid, "runner_pid": t.runner_pid,
            "pid_start": t.pid_start, "runner_start": t.runner_start, "boot_id": t.boot_id,
            "clean": t.clean,
            "started_wall": t.started_wall, "exited_wall": t.exited_wall,
            "policy": _policy_to_json(t.policy, mono, wall)}


def _task_from_json(d: dict[str, Any], mono: float, wall: float) -> TaskRecord:
    known = {f.name for f in fields(TaskRecord)} - {"policy"}
    kw = {k: v for k, v in d.items() if k in known}
    kw.setdefault("clean", False)  # written before runs were tracked: prove it, once
    return TaskRecord(policy=_policy_from_json(d.get("policy", {}), mono, wall), **kw)


def save(files: ProjectFiles, rec: ProjectRecord) -> asyncio.Future[None]:
    """The project-level record (each task has its own file: see ``save_task``), handed to
    the writer thread (a stop's ``save_ahead`` carries it too)."""
    files.ensure()
    return WRITER.submit(files.state, json.dumps(
        {"format": FORMAT, "seq": files.next_seq(), "running": rec.running}) + "\n")


def save_ahead(files: ProjectFiles, rec: ProjectRecord,
               names: list[str]) -> asyncio.Future[None]:
    """The write-ahead of a batch of signals as one file: the records of ``names`` and
    whether the project should be up, as they are now. Renamed into place before its fsync
    (``statewriter`` says why that is enough); the future says when it is in place. The
    tasks' own files follow (``save_task``), with higher ``seq``: ``load`` takes, per task,
    whichever is later, so a daemon killed between the two finds what this one said."""
    mono, wall = time.monotonic(), time.time()
    data = {"format": FORMAT, "seq": files.next_seq(), "running": rec.running,
            "tasks": {n: _task_to_json(rec.tasks[n], mono, wall, files.next_seq())
                      for n in names if n in rec.tasks}}
    done = WRITER.submit(files.ahead, json.dumps(data) + "\n", late=True)
    done.add_done_callback(_retrieved)
    return WRITER.in_place(files.ahead)


def _retrieved(fut: asyncio.Future[None]) -> None:
    """A write-ahead that failed is said by its ``in_place`` future; this one is dropped."""
    if not fut.cancelled():
        fut.exception()


def save_task(files: ProjectFiles, name: str, task: TaskRecord) -> asyncio.Future[None]:
    """Hand the task's record to the writer thread (``statewriter``): the future says when it
    is durable, or why it could not be written. (The write-ahead of a launch or of a signal
    goes first, with the others of its turn, as one file: ``save_ahead``.)"""
    return WRITER.submit(files.task_state(name), json.dumps(
        _task_to_json(task, time.monotonic(), time.time(), files.next_seq())) + "\n")


def save_tasks(files: ProjectFiles, records: dict[str, TaskRecord]
               ) -> dict[str, asyncio.Future[None]]:
    """``save_task`` of several tasks, handed to the writer together (one hand-over)."""
    mono, wall = time.monotonic(), time.time()
    names = list(records)
    futs = WRITER.submit_many([(files.task_state(n), json.dumps(
        _task_to_json(records[n], mono, wall, files.next_seq())) + "\n") for n in names])
    return dict(zip(names, futs, strict=True))


def task_durable(files: ProjectFiles, name: str) -> asyncio.Future[None]:
    """Resolved once every record of the task handed to the writer so far is on disk."""
    return WRITER.durable(files.task_state(name))


def write_file(path: str, text: str) -> asyncio.Future[None]:
    """A private file the runner reads (0600; not fsynced), in place atomically."""
    return WRITER.submit(path, text, mode=0o600, sync=False)


def remove_file(path: str) -> asyncio.Future[None]:
    """Remove a file the runner reads, in order with the writes handed over before (its
    folder not fsynced)."""
    return WRITER.remove(path, sync=False)


def write_spec(files: ProjectFiles, task: str, text: str) -> asyncio.Future[None]:
    """The runner's spec (0600: it holds the task's environment), in place atomically."""
    return WRITER.submit(files.spec(task), text, mode=0o600, sync=False)


async def drain() -> None:
    """Wait until every record handed to the writer so far is written (at shutdown)."""
    await WRITER.drain()


def delete_task(files: ProjectFiles, name: str) -> asyncio.Future[None]:
    """Remove the task's record, after any write of it still pending."""
    return WRITER.remove(files.task_state(name))


def _move_aside(path: str, exc: Exception) -> str:
    aside = f"{path}.corrupt-{int(time.time())}"
    with contextlib.suppress(OSError):
        os.replace(path, aside)
    log.error("%s was unreadable (%s); moved aside to %s", path, exc, aside)
    return aside


def drop_old_endings(files: ProjectFiles) -> int:
    """Remove the ``run/*.ending`` tokens an earlier version left: regular files only, named
    in the run folder itself (opened without following a symlink; a symlink, a folder or
    anything else of that name stays, and no link is ever followed). How many went."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(files.run_dir, flags)
    except OSError:
        return 0  # no run folder (yet), or not a folder
    removed = 0
    try:
        with os.scandir(fd) as entries:
            names = [e.name for e in entries
                     if e.name.endswith(OLD_ENDING) and e.is_file(follow_symlinks=False)]
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)  # a name unlinked, never what a link names
                removed += 1
    except OSError as exc:
        log.warning("cannot tidy %s: %s", files.run_dir, exc)
    finally:
        os.close(fd)
    if removed:
        log.info("removed %d token file(s) of an earlier version from %s", removed,
                 files.run_dir)
    return removed


def load(files: ProjectFiles) -> tuple[ProjectRecord, str | None]:
    """The saved record (an earlier version's ``run/*.ending`` tokens removed first), and a
    note when a corrupt file had to be moved aside. Where
    ``ahead.json`` holds a later word (a higher ``seq``) than a task's own file or
    ``state.json``, it wins: a batch's write-ahead whose own files were not written yet."""
    drop_old_endings(files)
    mono, wall = time.monotonic(), time.time()
    note = None
    rec = ProjectRecord()
    seqs: dict[str, int] = {}
    state_seq = 0
    try:
        with open(files.state, encoding="utf-8") as fh:
            data = json.load(fh)
        rec.running = bool(data.get("running"))
        state_seq = _seq(data)
    except FileNotFoundError:
        pass
    except (ValueError, AttributeError) as exc:
        note = _move_aside(files.state, exc)
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(files.tasks_dir)):
            if not entry.endswith(".json"):
                continue
            path = os.path.join(files.tasks_dir, entry)
            try:
                with open(path, encoding="utf-8") as fh:
                    data = json.load(fh)
                rec.tasks[entry[:-5]] = _task_from_json(data, mono, wall)
                seqs[entry[:-5]] = _seq(data)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                note = _move_aside(files.task_state(entry[:-5]), exc)
    top = max([state_seq, *seqs.values()])
    try:
        with open(files.ahead, encoding="utf-8") as fh:
            ahead = json.load(fh)
        if _seq(ahead) > state_seq:
            rec.running = bool(ahead.get("running"))
        top = max(top, _seq(ahead))
        for name, data in dict(ahead.get("tasks") or {}).items():
            if not isinstance(name, str) or not isinstance(data, dict):
                continue
            top = max(top, _seq(data))
            if _seq(data) > seqs.get(name, -1):
                rec.tasks[name] = _task_from_json(data, mono, wall)
    except FileNotFoundError:
        pass
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        note = _move_aside(files.ahead, exc)
    files.seq = max(files.seq, top)
    return rec, note


def _seq(data: object) -> int:
    seq = data.get("seq") if isinstance(data, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def save_env(files: ProjectFiles, env: dict[str, str]) -> None:
    files.ensure()
    atomic_write(files.env, json.dumps(env), mode=0o600)


def load_env(files: ProjectFiles) -> dict[str, str] | None:
    try:
        with open(files.env, encoding="utf-8") as fh:
            data = json.load(fh)
        return {str(k): str(v) for k, v in data.items()}
    except (FileNotFoundError, ValueError, AttributeError):
        return None


def read_runner_record(files: ProjectFiles, task: str) -> RunRecord | None:
    """The task's runner record (``runrecord``), or None when there is none that this
    version can read (one of another format is logged, and then treated as none: the run
    is proven by its marker instead)."""
    try:
        return read_record(files.record(task))
    except FormatError as exc:
        log.error("%s: %s", files.record(task), exc)
        return None
    except OSError:
        return None
