"""Putting a task's runner into its tmux window, and what follows once it reports.

``begin`` records the launch before anything else happens (write-ahead): the new run id is on
disk before tmux is asked, so a daemon killed at any later point finds the run it had started
and reconciles it with what the runner recorded, rather than mistaking a live run for a dead
one. ``launch`` then carries out the state machine's Launch action: end whatever an earlier
run may have left behind, claim the port, build the environment, run ``before_start``, write
the runner's spec and open (or respawn) the window, then wait for the runner's report.
Whatever goes wrong is fed back as LAUNCH_FAILED or ABORTED, so the supervisor decides what
happens next. ``finish`` settles a launch a killed daemon left half done.

Relaunch in place (``taskmuxd.runrelaunch``): a runner whose run ended cleanly by itself
offers, in its exit record, to run the next run in its pane. When the machine's next Launch
for the task comes while it waits, the launch orders it there (after the write-ahead, as a
tmux launch would be), skipping a tmux command and a new runner's start-up (and the spec's
file: the order carries the spec when it fits, the file is written only for tmux); any other
outcome (no answer, a refusal, the runner gone) falls back to ``tmux respawn-pane``, after
ending what an order of unknown fate may have started. A restart that waits a backoff first
tells the runner to hold on that long. When no relaunch is coming (stopped, exited, fatal),
the runner is told to finish at once (SIGTERM, by its identity), so its pane ends as it
always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from taskmuxctl.core import diskspace
from taskmuxctl.core.paths import MAX_SOCKET_PATH
from taskmuxd import proctree, runrecord, runrelaunch
from taskmuxd.policy import TaskState
from taskmuxd.projects import ownership, readiness, restartgrant, strangers
from taskmuxd.projects import state as st
from taskmuxd.projects.hooks import HookFailed, HookRun, run_hook
from taskmuxd.projects.taskport import claim_port
from taskmuxd.runrecord import RunSpec
from taskmuxd.supervisor import messages as m

if TYPE_CHECKING:
    from taskmuxd.projects.projectview import ProjectView
    from taskmuxd.projects.task import TaskRuntime
    from taskmuxd.runrecord import RunRecord

log = logging.getLogger("taskmuxd.project")

LAUNCH_TIMEOUT = 15.0  # seconds for a runner to report its process
DEFAULT_SHELL = "/bin/sh"


def begin(project: ProjectView, task: TaskRuntime) -> tuple[int, bool]:
    """Start a new run in the record and hand it to the writer at once (``launch`` waits
    until it is in place before tmux is asked). Returns the run id and whether earlier runs
    are known to be gone."""
    rec = task.record
    was_clean = rec.clean
    rec.run_id += 1
    rec.pid = rec.pgid = rec.pid_start = rec.runner_pid = rec.runner_start = None
    rec.clean = False
    project.services.runners.unwatch(project.task_key(task))
    project.write_ahead(task)  # with every launch and signal of this turn: one file
    return rec.run_id, was_clean


async def _written_ahead(project: ProjectView, task: TaskRuntime) -> None:
    """Wait until the launch's record is in place: what a successor reads if this daemon is
    killed from here on (its fsync follows in the background; ``statewriter`` says why that
    is not waited for). The launches of one turn (a start of a hundred tasks) are written
    ahead together, as one file (``ahead.json``, as a stop's signals are: ``state.load``
    takes whichever of it and a task's own file is later), so that the hundred orders or
    tmux launches wait for one file, not for a hundred written one after another."""
    project.flush()  # nothing when this turn's batch is handed over already
    placed = project.ahead_placed(task.name)
    if placed is None:  # placed already (its future is dropped once it is)
        return
    try:
        await placed
    except OSError as exc:  # the launch goes on; adoption then proves the run by its marker
        log.error("cannot record the launch of %s/%s: %s", project.name, task.name, exc)


async def launch(project: ProjectView, task: TaskRuntime, run_id: int, was_clean: bool) -> None:
    rec = task.record
    try:
        if not was_clean:
            # An earlier run may still have processes (its runner was killed, or a daemon died
            # mid-launch): end them before a second copy could start.
            prefix = ownership.task_prefix(project.services.paths.home, project.name, task.name)
            found = await ownership.clear_leftovers(
                prefix, task.config.stop_grace_period,
                members=lambda: project.services.groups.members(project.name, task.name))
            if found:
                project.services.events.emit("leftovers_stopped", project.name, task.name,
                                             processes=found)
            if rec.run_id != run_id:
                return
        marker = ownership.run_marker(project.services.paths.home, project.name, task.name, run_id)
        port = await claim_port(project, task) if task.config.wants_port else None
        env = project.task_env(task, port)
        cwd = project.loaded.task_cwd(task.config)
        if task.config.hooks.before_start:
            await run_hook(HookRun("before_start", task.name, task.config.hooks.before_start),
                           env, cwd)
        spec = RunSpec(
            project=project.name, task=task.name, run_id=run_id,
            command=task.config.command, shell=task.config.shell or DEFAULT_SHELL,
            cwd=cwd, env=env, log=project.log_path(task),
            log_max_size=task.config.log_max_size, log_max_files=task.config.log_max_files,
            record=project.files.record(task.name), socket=project.services.paths.socket,
            marker=marker, stop_grace_period=task.config.stop_grace_period,
            cgroup=project.services.groups.ensure(project.name, task.name),
            relaunch_socket=relaunch_socket(project, task),
            ending=strangers.token(project),
            record_in_place=True,  # this daemon checks sealed records (``runrecord``)
            **readiness.runner_spec(project, task),
        )
        grant = restartgrant.offer(project, task, run_id)
        writes = []
        if grant is not None:  # the next run, granted ahead (``restartgrant``)
            spec.grant = restartgrant.path(project, task)
            writes.append(st.write_file(spec.grant, grant))
        text = runrecord.dumps(spec)
        order = _run_order(project, task, run_id, text) \
            if task.waiting_runner and was_clean else None
        if order is None:  # else the runner waiting in the pane takes the spec in its order
            # Off the loop, not fsynced (only this run's runner reads it); the launch's
            # record, handed to the writer by ``begin``, must be in place before tmux is asked.
            writes.append(st.write_spec(project.files, task.name, text))
        await asyncio.gather(*writes)
        await _written_ahead(project, task)
        if rec.run_id != run_id:
            return
        waiting, task.waiting_runner = task.waiting_runner, None
        placed = await _relaunch_in_place(project, task, waiting, was_clean,
                                          order or _run_order(project, task, run_id, None))
        if rec.run_id != run_id:
            return
        if not placed and order is not None:
            await st.write_spec(project.files, task.name, text)
            if rec.run_id != run_id:
                return
        if not placed:
            rec.window_id = await project.launcher.launch(
                task.name, project.files.spec(task.name), cwd, rec.window_id, marker) \
                or rec.window_id
        reported = await project.changed.wait_for(
            lambda: rec.run_id != run_id or task.state != TaskState.STARTING, LAUNCH_TIMEOUT)
        if not reported:
            runner = st.read_runner_record(project.files, task.name)
            if runner and runner.run_id == run_id and runner.pid:
                project.runner_started(task.name, runner)
            else:
                launch_failed(project, task, run_id,
                              f"the runner did not report within {LAUNCH_TIMEOUT:.0f}s")
            return
    except HookFailed as exc:
        if rec.run_id == run_id:
            task.last_launch_error = exc.message
            task.last_launch_code = exc.code
            project.services.events.emit("hook_failed", project.name, task.name,
                                         hook="before_start", error=exc.message)
            project.handle(m.Aborted(task.name))
    except Exception as exc:  # a full disk: say which file and what to do
        launch_failed(project, task, run_id, diskspace.describe(exc) if diskspace.is_full(exc)
                      else str(getattr(exc, "message", exc)))
    else:
        if rec.run_id == run_id and task.state == TaskState.RUNNING \
                and task.config.hooks.after_start:
                await project.after_hook(task, "after_start", task.config.hooks.after_start)
    finally:
        if rec.run_id == run_id:
            project.handle(m.LaunchSettled(task.name))


def relaunch_socket(project: ProjectView, task: TaskRuntime) -> str | None:
    """Where the task's runner listens for a relaunch order: ``run/{task}.relaunch``, or None
    when that path is too long for a Unix socket (then every launch goes through tmux)."""
    path = os.path.join(project.files.run_dir, task.name + runrelaunch.SUFFIX)
    return path if len(path.encode()) <= MAX_SOCKET_PATH else None


ANSWER_LIMIT = 64  # bytes of a runner's answer read at most


def _run_order(project: ProjectView, task: TaskRuntime, run_id: int,
               spec: str | None) -> bytes | None:
    """The order to run ``run_id`` in place: the spec's path, and the spec itself (``spec``,
    its JSON) when it fits in an order, so that no file need be written first; None when it
    does not fit (the spec is then written to its file and the order names only that)."""
    head = f'{{"run": {run_id}, "spec": {json.dumps(project.files.spec(task.name))}'
    line = (head + (f', "spec_json": {spec}}}' if spec else "}") + "\n").encode()
    return line if len(line) <= runrelaunch.ORDER_LIMIT else None


async def _order(path: str, order: dict[str, Any] | bytes) -> bool | None:
    """Send a relaunch order; True once the runner said ``ok``, False when it certainly did
    not take it (no runner listening, a refusal, closed unanswered), None when unknown.

    On a bare non-blocking socket of the loop (no stream objects: a start of a hundred
    tasks sends a hundred orders): the connection is made at once or refused, the order
    fits the socket's buffer, and the answer is one short line."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(runrelaunch.ORDER_SECONDS):
                await loop.sock_connect(sock, path)
        except (OSError, TimeoutError):
            return False
        try:
            async with asyncio.timeout(runrelaunch.ORDER_SECONDS):
                await loop.sock_sendall(sock, order if isinstance(order, bytes)
                                        else (json.dumps(order) + "\n").encode())
                answer = b""
                while not answer.endswith(b"\n") and len(answer) < ANSWER_LIMIT:
                    chunk = await loop.sock_recv(sock, ANSWER_LIMIT - len(answer))
                    if not chunk:
                        break
                    answer += chunk
        except (OSError, TimeoutError):
            return None
    finally:
        sock.close()
    return answer == b"ok\n"  # the runner answers before it starts anything, or closes


async def _relaunch_in_place(project: ProjectView, task: TaskRuntime, waiting: str | None,
                             was_clean: bool, order: bytes | None) -> bool:
    """Order the runner that waits in the task's pane to run the launch's run (``order``,
    from ``_run_order``); whether it took it. When its answer was lost, whatever it may have
    started is ended before tmux is asked."""
    if not waiting or not was_clean or order is None:
        return False
    placed = await _order(waiting, order)
    if placed is None:
        log.warning("%s/%s: no answer to the relaunch order; launching through tmux",
                    project.name, task.name)
        prefix = ownership.task_prefix(project.services.paths.home, project.name, task.name)
        await ownership.clear_leftovers(prefix, task.config.stop_grace_period)
    return bool(placed)


def runner_waits(task: TaskRuntime, record: RunRecord) -> None:
    """The exit record of the current run: whether its runner waits for a relaunch order."""
    task.waiting_runner = record.relaunch if record.tree_clean is True else None


def release_waiting(project: ProjectView, task: TaskRuntime) -> None:
    """After each event: a runner that waits in vain (no relaunch is coming before it would
    give up) is told to finish now, so its pane ends at once, as it did before."""
    path = task.waiting_runner
    if path is None or task.state == TaskState.STARTING:
        return
    at = task.record.policy.restart_at
    if task.state == TaskState.BACKOFF and at is not None:
        left = at - time.monotonic()
        if left < runrelaunch.WAIT_SECONDS / 2:
            return  # the relaunch comes while it waits
        if left + runrelaunch.WAIT_SECONDS <= runrelaunch.HOLD_LIMIT:
            if task.runner_held_for != at:  # ask it to wait for this restart (once)
                task.runner_held_for = at
                project.services.spawn(_order(path, {"hold": left + runrelaunch.WAIT_SECONDS}),
                                f"hold runner {project.name}/{task.name}")
            return
    task.waiting_runner = None
    rid = task.record.runner_id()  # still the exited run's runner: no launch came since
    if rid is not None and proctree.is_alive(rid):
        with contextlib.suppress(OSError):
            os.kill(rid.pid, signal.SIGTERM)  # "finish", by the runner's identity


def started(project: ProjectView, task: TaskRuntime) -> None:
    """Every start is in the event history, the user's and the automatic ones alike: with its
    pid, and ``attempt`` (0 for a start by the user, n for the n-th restart in a streak)."""
    rec, pol = task.record, task.record.policy
    project.services.events.emit("task_started", project.name, task.name, pid=rec.pid,
                                 port=rec.port, attempt=pol.attempt, restarts=pol.restarts)


def launch_failed(project: ProjectView, task: TaskRuntime, run_id: int, reason: str) -> None:
    if task.record.run_id != run_id:
        return
    log.warning("%s/%s: launch failed: %s", project.name, task.name, reason)
    task.last_launch_error = reason
    task.last_launch_code = None
    project.handle(m.LaunchFailed(task.name))


async def finish(project: ProjectView, task: TaskRuntime, run_id: int) -> None:
    """A daemon was killed mid-launch of ``run_id``: its runner may be on its way, or tmux was
    never asked. Wait for it briefly; else launch again, clearing leftovers first."""
    marker = ownership.run_marker(project.services.paths.home, project.name, task.name, run_id)
    if await ownership.marked_alive(marker):
        reported = await project.changed.wait_for(
            lambda: task.record.run_id != run_id or task.state != TaskState.STARTING,
            LAUNCH_TIMEOUT)
        if reported:
            return
        runner = st.read_runner_record(project.files, task.name)
        if runner and runner.run_id == run_id and runner.status == "running" \
                and ownership.runner_record_alive(runner):
            project.runner_started(task.name, runner)
            return
    if task.record.run_id != run_id or task.state != TaskState.STARTING:
        return
    task.record.clean = False  # the launch below ends anything of this task first
    log.info("%s/%s: the launch of run %d did not finish; launching again", project.name,
             task.name, run_id)
    new_run, clean = begin(project, task)
    project.services.spawn(launch(project, task, new_run, clean),
                           f"launch {project.name}/{task.name}")
