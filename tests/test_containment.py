"""Containment: a task's whole process tree is the task's, proven by identity, and ends with it.

Three layers: ``proctree`` on real processes (identity, markers, trees, the ladder); the runner
alone in a real tmux pane, ended by every route; and a real daemon with a task shaped like
PostgreSQL (ignores SIGHUP, forks a child that ignores it too: ``tests/postgres_shape.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from taskmuxd import proctree
from tests.helpers import PYTHON, REPO, pid_gone, read, run_json, wait_until
from tests.projects import task, tmux, write_project

pytestmark = pytest.mark.skipif(not proctree.AVAILABLE,
                                reason="proving process identity needs /proc (Linux)")

SHAPE = os.path.join(REPO, "tests", "postgres_shape.py")
RUNNER = os.path.join(REPO, "taskmuxd", "runner.py")
RUNNER_MAIN = os.path.join(REPO, "taskmuxd", "runner_main.py")


def shape_pids(path: str, line: int = 0, timeout: float = 15.0) -> tuple[int, int]:
    """(parent, child) pids from line ``line`` of a postgres-shaped task's pids file."""
    def ready() -> list[str] | None:
        with contextlib.suppress(FileNotFoundError), open(path, encoding="ascii") as fh:
            lines = [x for x in fh.read().splitlines() if x]
            return lines if len(lines) > line else None
        return None

    parent, child = wait_until(ready, timeout, f"line {line} of {path}")[line].split()
    return int(parent), int(child)


def copies_running(pids_file: str) -> int:
    """Live processes of the shape writing ``pids_file`` (found by command line)."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if SHAPE.encode() in argv and pids_file.encode() in argv and not pid_gone(int(name)):
            count += 1
    return count


# -- proctree on real processes ------------------------------------------------------------


def test_identity_is_pid_start_and_boot(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = spawn(["sleep", "60"])
    me = proctree.procid(proc.pid)
    assert me is not None and me.pid == proc.pid and me.boot == proctree.boot_id()
    assert me.start == proctree.start_ticks(proc.pid) and proctree.is_alive(me)
    assert proctree.procid(2**22 + 7) is None  # above pid_max: no such process
    # The hand-made named tuple (no collections import in the runner) behaves like one.
    pid, start, boot = me
    assert me == (pid, start, boot) and hash(me) == hash((pid, start, boot))
    assert me._asdict() == {"pid": pid, "start": start, "boot": boot}
    assert me._replace(start=1) == proctree.ProcId._make([pid, 1, boot]) != me
    assert repr(me) == f"ProcId(pid={pid}, start={start}, boot={boot!r})"
    proc.kill()
    wait_until(lambda: not proctree.is_alive(me), what="the zombie to count as ended")
    assert proctree.procid(proc.pid) is not None  # an unreaped zombie still has its pid


def test_a_reused_pid_is_never_signalled(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = spawn(["sleep", "60"])
    real = proctree.procid(proc.pid)
    assert real is not None
    # The same pid with another start time, or from another boot: a different process.
    reused = proctree.ProcId(real.pid, real.start + 1, real.boot)
    other_boot = real._replace(boot="00000000-0000-0000-0000-000000000000")
    assert proctree.signal_ids([reused, other_boot], signal.SIGKILL) == 0
    steps: list[tuple[int, int]] = []
    # To the ladder, a process that is not provably the one named is already gone.
    assert proctree.stop_ladder(lambda: [reused, other_boot], 0.05,
                                lambda sig, n: steps.append((sig, n)))
    assert steps == []
    assert proc.poll() is None and proctree.is_alive(real)
    # Nonsense pids that os.kill would read as "a group" or "everyone" are refused.
    assert proctree.signal_ids([proctree.ProcId(0, 0, real.boot),
                                proctree.ProcId(-1, 0, real.boot)], 0) == 0
    assert proctree.signal_ids([real], signal.SIGKILL) == 1
    assert proc.wait(5) == -signal.SIGKILL


def test_find_marked_finds_only_the_run_asked_for(
        spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    tag = uuid.uuid4().hex
    env = dict(os.environ)
    env.pop(proctree.MARKER_VAR, None)
    run1 = spawn(["sleep", "60"], env={**env, proctree.MARKER_VAR: f"{tag}:p:db:1"})
    run10 = spawn(["sleep", "60"], env={**env, proctree.MARKER_VAR: f"{tag}:p:db:10"})
    other = spawn(["sleep", "60"], env={**env, proctree.MARKER_VAR: f"{tag}:p:api:1"})
    spawn(["sleep", "60"], env=env)  # unmarked

    def pids(prefix: str, exact: bool = False) -> set[int]:
        return {p.pid for p in proctree.find_marked(prefix, exact=exact)}

    assert pids(f"{tag}:p:db:") == {run1.pid, run10.pid}
    assert pids(f"{tag}:p:db:1", exact=True) == {run1.pid}
    assert pids(f"{tag}:p:") == {run1.pid, run10.pid, other.pid}
    assert pids(f"{tag}:p:db:1", exact=True) == {p.pid for p in proctree.find_marked(
        f"{tag}:p:db:1", uid=os.getuid(), exact=True)}
    assert pids(f"{tag}:p:db:", exact=False) - pids(f"{tag}:p:db:1", exact=True) == {run10.pid}
    assert not proctree.find_marked(f"{tag}:p:db:", uid=os.getuid() + 4242)
    assert proctree.marker_of(run1.pid) == f"{tag}:p:db:1"
    run1.kill()  # a zombie (not yet reaped) is no longer the task's running process
    wait_until(lambda: pids(f"{tag}:p:db:1", exact=True) == set(), what="the zombie to go")


def test_tree_stats_sees_through_the_shell_wrapper(
        spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    one = spawn(["/bin/sh", "-c", "sleep 100 & wait"])
    # (until the child has exec'd, it is a second sh: wait for the sleep itself)
    main = wait_until(lambda: (s := proctree.tree_stats(one.pid))[1] == 2
                      and read(f"/proc/{s[0]}/comm") == "sleep\n" and s,
                      what="sh and its one child, a sleep")[0]
    assert main != one.pid and proctree.procid(main) in proctree.descendants(one.pid)
    # A shell running two things is the main process itself.
    two = spawn(["/bin/sh", "-c", "sleep 100 & sleep 100 & wait"])
    assert wait_until(lambda: (s := proctree.tree_stats(two.pid))[1] == 3 and s,
                      what="sh and two children")[0] == two.pid
    # Nested wrappers: sh -> sh -> sleep.
    nested = spawn(["/bin/sh", "-c", "/bin/sh -c 'sleep 100 & wait' & wait"])
    main = wait_until(lambda: (s := proctree.tree_stats(nested.pid))[1] == 3
                      and read(f"/proc/{s[0]}/comm") == "sleep\n" and s,
                      what="two shells and a sleep")[0]
    assert proctree.descendants(main) == []
    # A program that is not a shell is the main process even with one child.
    py = spawn([PYTHON, "-c", "import subprocess; subprocess.run(['sleep', '100'])"])
    assert wait_until(lambda: (s := proctree.tree_stats(py.pid))[1] == 2 and s,
                      what="python and its child")[0] == py.pid
    assert proctree.tree_stats(2**22 + 7) == (2**22 + 7, 0)


def test_stop_ladder_climbs_only_as_far_as_needed(
        spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    polite = spawn(["sleep", "60"])
    stubborn = spawn(["/bin/sh", "-c", "trap '' INT TERM; echo ready; exec sleep 60"],
                     stdout=subprocess.PIPE)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    ids = [proctree.procid(polite.pid), proctree.procid(stubborn.pid)]
    steps: list[tuple[int, int]] = []

    def current() -> list[proctree.ProcId]:
        return [i for i in ids if i is not None and proctree.is_alive(i)]

    started = time.monotonic()
    assert proctree.stop_ladder(current, 0.2, lambda sig, n: steps.append((sig, n)))
    assert steps == [(signal.SIGINT, 2), (signal.SIGTERM, 1), (signal.SIGKILL, 1)]
    assert 0.4 <= time.monotonic() - started < 10  # two waits of 0.2 s, no more than a few
    assert polite.wait(5) == -signal.SIGINT and stubborn.wait(5) == -signal.SIGKILL
    # Nothing to stop: done at once, no signal sent.
    steps.clear()
    assert proctree.stop_ladder(list, 10.0, lambda sig, n: steps.append((sig, n)))
    assert steps == []


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def test_stop_ladder_catches_processes_started_meanwhile(
        spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    first = spawn(["sleep", "60"])
    later: list[subprocess.Popen[bytes]] = []

    def current() -> list[proctree.ProcId]:
        if not later:  # the first look: a new process appears as the first one is stopped
            later.append(spawn(["/bin/sh", "-c", "trap '' INT; exec sleep 60"]))
            # Once the shell has become sleep, its trap is set (an ignored SIGINT survives
            # the exec); before that a SIGINT could end it first.
            wait_until(lambda: _comm(later[0].pid) == "sleep", 10, "the shell's exec")
        procs = [first, *later]
        return [i for p in procs if (i := proctree.procid(p.pid)) and proctree.is_alive(i)]

    assert proctree.stop_ladder(current, 0.2)
    assert first.wait(5) == -signal.SIGINT
    assert later[0].wait(5) == -signal.SIGTERM


# -- the runner alone, in a real tmux pane ---------------------------------------------------


class RunnerUnderTest:
    """One runner started by hand (no daemon: its reports go to a socket nobody serves)."""

    def __init__(self, home: str, command: str, grace: float = 2.0,
                 entry: str = RUNNER) -> None:
        self.home = home
        self.entry = entry
        run = os.path.join(home, "projects", "rt", "run")
        os.makedirs(run, exist_ok=True)
        self.record_path = os.path.join(run, "t.json")
        self.log_path = os.path.join(home, "projects", "rt", "logs", "t.log")
        self.marker = f"{uuid.uuid4().hex}:rt:t:1"
        self.spec_path = os.path.join(run, "t.spec.json")
        spec = {
            "project": "rt", "task": "t", "run_id": 1, "command": command, "shell": "/bin/sh",
            "cwd": home, "env": {"PATH": os.environ["PATH"], "TASKMUX_HOME": home},
            "log": self.log_path, "log_max_size": 1_000_000, "log_max_files": 2,
            "record": self.record_path, "socket": os.path.join(home, "ctl.sock"),
            "marker": self.marker, "stop_grace_period": grace,
        }
        with open(self.spec_path, "w") as fh:
            json.dump(spec, fh)

    @property
    def argv(self) -> list[str]:
        return [PYTHON, "-I", "-S", self.entry, self.spec_path, self.marker]

    def in_tmux(self, socket: str) -> RunnerUnderTest:
        tmux(socket, "new-session", "-d", "-s", "rt", "-x", "80", "-y", "24", *self.argv)
        # Started: running now, or already done (a quick task can finish between two looks).
        wait_until(lambda: self.record()["status"] in ("running", "exited"),
                   what="the runner to start the task")
        return self

    def record(self) -> dict[str, Any]:
        with open(self.record_path) as fh:
            rec: dict[str, Any] = json.load(fh)
        return rec

    def running(self) -> dict[str, Any]:
        return wait_until(lambda: (r := self.record())["status"] == "running" and r,
                          what="the runner to start the task")

    def exited(self, timeout: float = 20.0) -> dict[str, Any]:
        return wait_until(lambda: (r := self.record())["status"] == "exited" and r, timeout,
                          "the runner's exit record")

    def log(self) -> str:
        with open(self.log_path) as fh:
            return fh.read()


@pytest.fixture
def make_runner(home: str) -> Callable[..., RunnerUnderTest]:
    def make(command: str, grace: float = 2.0, entry: str = RUNNER) -> RunnerUnderTest:
        return RunnerUnderTest(home, command, grace, entry)
    return make


def test_runner_records_the_identity_of_the_run(make_runner: Callable[..., RunnerUnderTest],
                                                 tmux_socket: str, tmp_path: str) -> None:
    pids = os.path.join(str(tmp_path), "pids")
    # Through runner_main.py, the entry that runs the runner from its compiled module.
    r = make_runner(f"exec {PYTHON} {SHAPE} {pids}", entry=RUNNER_MAIN).in_tmux(tmux_socket)
    rec = r.running()
    parent, child = shape_pids(pids)
    assert parent == rec["pid"] == rec["pgid"]
    assert rec["pid_start"] == proctree.start_ticks(parent)
    assert rec["runner_start"] == proctree.start_ticks(rec["runner_pid"])
    assert rec["boot_id"] == proctree.boot_id() and rec["marker"] == r.marker
    assert rec["subreaper"] is True
    found = {p.pid for p in proctree.find_marked(r.marker, exact=True)}
    assert found == {parent, child}  # the marker reached every process of the task
    with open(f"/proc/{rec['runner_pid']}/cmdline", "rb") as fh:
        assert fh.read().split(b"\0")[-2] == r.marker.encode()  # the runner names its run


def test_pane_closed_stops_the_tree_before_the_exit_is_recorded(
        make_runner: Callable[..., RunnerUnderTest], tmux_socket: str, tmp_path: str) -> None:
    pids = os.path.join(str(tmp_path), "pids")
    r = make_runner(f"exec {PYTHON} {SHAPE} {pids}").in_tmux(tmux_socket)
    parent, child = shape_pids(pids)
    tmux(tmux_socket, "kill-server")
    rec = r.exited()
    assert pid_gone(parent) and pid_gone(child)  # already gone when the exit was written
    assert rec["ended_by"] in ("hangup", "pane_write_failed"), rec
    assert (rec["exit_code"], rec["exit_signal"], rec["tree_clean"]) == (7, None, True)
    # SIGINT to both (the parent's handler may end the child first): the task's own ladder.
    assert re.search(r"(the pane closed|could not be written to): sent SIGINT to [12] of the "
                     r"task.s processes", r.log())


def test_signals_to_the_runner_stop_the_tree(make_runner: Callable[..., RunnerUnderTest],
                                             tmux_socket: str, tmp_path: str) -> None:
    pids = os.path.join(str(tmp_path), "pids")
    r = make_runner(f"exec {PYTHON} {SHAPE} {pids}").in_tmux(tmux_socket)
    parent, child = shape_pids(pids)
    os.kill(r.record()["runner_pid"], signal.SIGTERM)
    rec = r.exited()
    assert pid_gone(parent) and pid_gone(child)
    assert (rec["ended_by"], rec["exit_code"], rec["tree_clean"]) == ("signal:SIGTERM", 7, True)


def test_a_dead_shell_wrapper_takes_its_orphans_with_it(
        make_runner: Callable[..., RunnerUnderTest], tmux_socket: str, tmp_path: str) -> None:
    pids = os.path.join(str(tmp_path), "pids")
    r = make_runner(f"{PYTHON} {SHAPE} {pids}; exit $?").in_tmux(tmux_socket)
    parent, child = shape_pids(pids)
    wrapper = r.record()["pid"]
    assert wrapper != parent
    os.kill(wrapper, signal.SIGKILL)  # the program is orphaned: the runner is its subreaper
    rec = r.exited()
    assert pid_gone(parent) and pid_gone(child)
    assert (rec["ended_by"], rec["exit_code"], rec["exit_signal"], rec["tree_clean"]) == (
        "exit", None, signal.SIGKILL, True)


def test_a_first_process_that_exits_leaves_nothing_behind(
        make_runner: Callable[..., RunnerUnderTest], tmux_socket: str, tmp_path: str) -> None:
    pids = os.path.join(str(tmp_path), "pids")
    r = make_runner(f"{PYTHON} {SHAPE} {pids} & "
                    f"while [ ! -s {pids} ]; do sleep 0.02; done; exit 3").in_tmux(tmux_socket)
    rec = r.exited()
    parent, child = shape_pids(pids)
    assert pid_gone(parent) and pid_gone(child)
    assert (rec["ended_by"], rec["exit_code"], rec["tree_clean"]) == ("exit", 3, True)


def test_processes_that_left_the_session_are_still_the_tasks(
        make_runner: Callable[..., RunnerUnderTest], tmux_socket: str, tmp_path: str,
        spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    flag = os.path.join(str(tmp_path), "escaped")
    # A descendant that clears its environment (no marker) and leaves the session, ignoring
    # SIGINT and SIGTERM: the runner still owns it as its subreaper.
    r = make_runner(f"env -i setsid /bin/sh -c \"trap '' HUP INT TERM; echo \\$\\$ > {flag}; "
                    f"exec sleep 300\" & exec sleep 300", grace=0.2).in_tmux(tmux_socket)
    escaped = int(wait_until(lambda: read(flag).strip(), what="the escapee"))
    assert proctree.marker_of(escaped) is None
    # A process elsewhere that carries the run's marker (started on the task's behalf).
    stranger = spawn(["sleep", "300"], env={**os.environ, proctree.MARKER_VAR: r.marker})
    wait_until(lambda: stranger.pid in {p.pid for p in proctree.find_marked(r.marker, exact=True)})
    os.kill(r.record()["runner_pid"], signal.SIGTERM)
    rec = r.exited()
    assert pid_gone(escaped) and stranger.wait(5) == -signal.SIGINT
    assert (rec["exit_signal"], rec["tree_clean"]) == (signal.SIGINT, True)
    assert "sent SIGKILL to 1 of the task's processes" in r.log()


def test_a_failing_pane_write_does_not_crash_the_runner(
        make_runner: Callable[..., RunnerUnderTest], spawn: Callable[..., subprocess.Popen[bytes]],
        tmp_path: str) -> None:
    pids = os.path.join(str(tmp_path), "pids")
    r = make_runner(f"exec {PYTHON} {SHAPE} {pids} --chatty")
    proc = spawn(r.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    parent, child = shape_pids(pids)
    assert proc.stdout.readline()  # the pane shows output ...
    proc.stdout.close()  # ... until it is gone: the next write fails with EPIPE
    assert proc.wait(20) == 7  # the runner ends with the task's own status, not a traceback
    rec = r.exited(1)
    assert pid_gone(parent) and pid_gone(child)
    assert (rec["ended_by"], rec["exit_code"], rec["tree_clean"]) == (
        "pane_write_failed", 7, True)
    log = r.log()
    assert "tick 1" in log and "the pane could not be written to" in log
    assert "output no longer goes to the pane: EPIPE" in log


def test_the_task_starts_with_every_signal_at_its_default(
        make_runner: Callable[..., RunnerUnderTest], tmux_socket: str, tmp_path: str) -> None:
    out = os.path.join(str(tmp_path), "status")
    r = make_runner(f"grep -E 'Sig(Ign|Blk)' /proc/self/status > {out}").in_tmux(tmux_socket)
    assert r.exited()["exit_code"] == 0
    got = dict(line.split(":") for line in read(out).splitlines())
    ignored, blocked = int(got["SigIgn"], 16), int(got["SigBlk"], 16)
    assert blocked == 0, f"the task starts with signals blocked: {blocked:#x}"
    assert not ignored & (1 << (signal.SIGPIPE - 1)) and not ignored & (1 << (signal.SIGXFSZ - 1))
    # None at all: not the C library's own two either (32 and 33, which glibc's posix_spawn
    # leaves ignored in its child), as under any other supervisor or a login shell.
    assert ignored == 0, f"the task starts with signals ignored: {ignored:#x}"


def test_without_proc_the_runner_stops_the_process_group(
        make_runner: Callable[..., RunnerUnderTest], tmux_socket: str, tmp_path: str) -> None:
    """Where identities cannot be proven (no /proc: macOS), the runner still ends the task:
    the ladder goes to its process group while its first process is unreaped."""
    pids = os.path.join(str(tmp_path), "pids")
    r = make_runner(f"exec {PYTHON} {SHAPE} {pids}")
    boot = (f"import sys; sys.path.insert(0, {REPO!r}); from taskmuxd import proctree; "
            "proctree.AVAILABLE = False; from taskmuxd.runner import main; "
            f"sys.exit(main(['runner.py', {r.spec_path!r}]))")
    tmux(tmux_socket, "new-session", "-d", "-s", "rt", PYTHON, "-I", "-S", "-c", boot)
    rec = r.running()
    parent, child = shape_pids(pids)
    assert rec["subreaper"] is False
    os.kill(rec["runner_pid"], signal.SIGTERM)
    rec = r.exited()
    assert pid_gone(parent) and pid_gone(child)
    # The task's own exit; whether anything outside the group remains cannot be told.
    assert (rec["ended_by"], rec["exit_code"], rec["tree_clean"]) == ("signal:SIGTERM", 7, False)


def _postgres_bin() -> str | None:
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return found[-1] if found else None


@pytest.mark.slow
def test_real_postgres_survives_no_pane_and_comes_back_once(tmux_socket: str) -> None:
    """PostgreSQL's children each leave the session (setsid) and blank their environment (the
    process title): only the runner's subreaper tree still holds them all."""
    import shutil
    import tempfile

    from tests.users import throwaway_user

    postgres = _postgres_bin()
    if postgres is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs it)")
    with throwaway_user() as user:
        base = tempfile.mkdtemp(prefix="tmxpg-", dir="/tmp")
        try:
            os.chmod(base, 0o755)
            data = os.path.join(base, "data")
            as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                       "--init-groups"]
            os.chown(base, user.pw_uid, user.pw_gid)
            subprocess.run([*as_user, os.path.join(os.path.dirname(postgres), "initdb"),
                            "-D", data, "-A", "trust", "-U", "pg"], check=True,
                           capture_output=True, timeout=120)
            # Shared memory segments in the data folder, not /dev/shm: a killed server leaves
            # its segment behind, and the data folder is removed with the test.
            command = (f"exec {postgres} -D {data} -k {base} -c listen_addresses= "
                       "-c dynamic_shared_memory_type=mmap")
            for run in (1, 2):
                r = RunnerUnderTest(base, command, grace=5.0)
                os.chown(r.spec_path, user.pw_uid, user.pw_gid)
                for folder in (os.path.dirname(r.record_path), os.path.dirname(r.log_path)):
                    os.makedirs(folder, exist_ok=True)
                    shutil.chown(folder, user.pw_uid, user.pw_gid)
                tmux(tmux_socket, "new-session", "-d", "-s", "pg", *as_user, *r.argv)
                rec = r.running()
                wait_until(lambda r=r, run=run: r.log().count("ready to accept connections")
                           == run, 60, "postgres to be ready")
                assert "already exists" not in r.log()
                tree = proctree.descendants(rec["runner_pid"])
                assert len(tree) >= 4  # the postmaster and its background processes
                # Children blank the marker in their environment (the process title); a
                # child the postmaster has only just forked still wears it for a moment.
                wait_until(lambda r=r, rec=rec: [p.pid for p in proctree.find_marked(
                    r.marker, uid=user.pw_uid, exact=True)] == [rec["pid"]], 10,
                    "only the postmaster to carry the marker")
                tmux(tmux_socket, "kill-server")
                rec = r.exited(30)
                assert not any(proctree.is_alive(p) for p in tree)
                assert (rec["exit_code"], rec["tree_clean"]) == (0, True), rec
                assert not os.path.exists(os.path.join(data, "postmaster.pid"))
                assert "database system is shut down" in r.log()
        finally:
            shutil.rmtree(base, ignore_errors=True)


# -- with a real daemon --------------------------------------------------------------------


def shape_project(tmp_path: Any, command: str) -> tuple[str, str]:
    pids = os.path.join(str(tmp_path), "pids")
    proj = write_project(str(tmp_path / "p"), f"""
        name = "pg{uuid.uuid4().hex[:6]}"
        [tasks.db]
        command = '{command.format(python=PYTHON, shape=SHAPE, pids=pids)}'
        stop_grace_period = 2
        restart_backoff = 1
    """)
    return proj, pids


def runner_record(env: dict[str, str], proj: str) -> dict[str, Any]:
    code, out = run_json(["status"], env, cwd=proj)
    assert code == 0, out
    path = os.path.join(env["TASKMUX_HOME"], "projects", out["project"], "run", "db.json")
    with open(path) as fh:
        rec: dict[str, Any] = json.load(fh)
    return rec


def back_once(env: dict[str, str], proj: str, pids: str, old_pid: int) -> dict[str, Any]:
    """The task runs again, exactly one copy of it."""
    t = wait_until(lambda: (t := task(env, proj, "db"))["state"] == "running"
                   and t["pid"] != old_pid and t, 30, "the task to run again")
    shape_pids(pids, line=1)
    wait_until(lambda: copies_running(pids) == 2, 10, "one copy (parent and child)")
    time.sleep(0.3)  # a second copy would have appeared by now
    assert copies_running(pids) == 2
    return t


def test_daemon_task_survives_no_tmux_kill_server(env: dict[str, str], tmp_path: Any,
                                                  tmux_socket: str) -> None:
    proj, pids = shape_project(tmp_path, "exec {python} {shape} {pids}")
    assert run_json(["start"], env, cwd=proj)[0] == 0
    parent, child = shape_pids(pids)
    tmux(tmux_socket, "kill-server")
    wait_until(lambda: pid_gone(parent) and pid_gone(child), 15, "the old tree to end")
    t = back_once(env, proj, pids, parent)
    assert t["last_exit"]["code"] == 7, t["last_exit"]


def test_daemon_task_survives_no_kill_9_of_its_runner(env: dict[str, str], tmp_path: Any,
                                                      home: str) -> None:
    proj, pids = shape_project(tmp_path, "exec {python} {shape} {pids}")
    assert run_json(["start"], env, cwd=proj)[0] == 0
    parent, child = shape_pids(pids)
    os.kill(runner_record(env, proj)["runner_pid"], signal.SIGKILL)
    wait_until(lambda: pid_gone(parent) and pid_gone(child), 10, "the old tree to end")
    back_once(env, proj, pids, parent)


def test_daemon_task_survives_no_kill_9_of_the_shell_wrapper(env: dict[str, str],
                                                             tmp_path: Any) -> None:
    proj, pids = shape_project(tmp_path, "{python} {shape} {pids}; exit $?")
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    parent, child = shape_pids(pids)
    wrapper = task(env, proj, "db")["pid"]
    assert wrapper != parent
    os.kill(wrapper, signal.SIGKILL)
    wait_until(lambda: pid_gone(parent) and pid_gone(child), 15, "the old tree to end")
    t = back_once(env, proj, pids, wrapper)
    assert t["last_exit"]["signal"] == signal.SIGKILL, t["last_exit"]


def test_daemon_task_survives_no_stop(env: dict[str, str], tmp_path: Any) -> None:
    proj, pids = shape_project(tmp_path, "exec {python} {shape} {pids}")
    assert run_json(["start"], env, cwd=proj)[0] == 0
    parent, child = shape_pids(pids)
    code, out = run_json(["stop", "db"], env, cwd=proj)
    assert (code, out["action"]) == (0, "stopped"), out
    assert pid_gone(parent) and pid_gone(child)
    t = task(env, proj, "db")
    assert t["state"] == "stopped" and t["last_exit"]["code"] == 7, t
    assert run_json(["start", "db"], env, cwd=proj)[0] == 0
    back_once(env, proj, pids, parent)

