"""A real PostgreSQL from the distribution as a task: after ``tmux kill-server`` it comes back
exactly once, healthy, with no stale ``postmaster.pid`` in its way (issue 11).

PostgreSQL is the shape that breaks naive supervision: the postmaster ignores SIGHUP (it reads
it as "reload") and forks its workers. It refuses to run as root, so as root (the test
machines) the task runs it as a throwaway user through ``setpriv``. Skips cleanly when
PostgreSQL (``.ci/run`` installs it) or a way to run it is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, call, pid_gone, run_json, wait_until
from tests.projects import write_project
from tests.users import throwaway_user

# The server's options: on loopback only, no syncing, and its shared memory segments in the
# data folder rather than /dev/shm (a server killed with its tmux server leaves its segment
# behind; the data folder goes with the test).
SERVER_OPTIONS = "-c listen_addresses=127.0.0.1 -c fsync=off -c dynamic_shared_memory_type=mmap"


def postgres_bin() -> str:
    """The folder holding postgres, initdb and pg_isready (PATH first, then Debian's)."""
    for folder in [os.path.dirname(p) for p in [shutil.which("postgres")] if p] + sorted(
            glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all(os.access(os.path.join(folder, b), os.X_OK)
               for b in ("postgres", "initdb", "pg_isready")):
            return folder
    pytest.skip("PostgreSQL is not installed (postgres, initdb and pg_isready; .ci/run "
                "installs the postgresql package)")


def postmasters(data: str) -> list[int]:
    """The postmasters serving ``data``: workers rename themselves ("postgres: checkpointer"),
    the postmaster keeps its command line."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"postgres") and data.encode() in args \
                and not pid_gone(int(entry)):
            found.append(int(entry))
    return found


@contextlib.contextmanager
def runs_as() -> Iterator[tuple[list[str], Callable[[str], None]]]:
    """A command prefix that runs a program as a user PostgreSQL accepts, and a chown for
    the folders it writes."""
    if os.geteuid() != 0:
        yield [], lambda path: None
        return
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to run PostgreSQL as another user")
    with throwaway_user() as user:
        yield ([setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"],
               lambda path: os.chown(path, user.pw_uid, user.pw_gid))


@pytest.mark.slow
def test_postgres_comes_back_once_and_healthy_after_tmux_kill_server(
        env: dict[str, str], tmux_socket: str, start_daemon: Callable[..., DaemonProcess],
        tmp_path: Path) -> None:
    bin_dir = postgres_bin()
    base = tempfile.mkdtemp(prefix="tmxpg-", dir="/tmp")  # the db user must reach it
    data, sockets = os.path.join(base, "data"), os.path.join(base, "sock")
    daemon: DaemonProcess | None = None
    try:
        with runs_as() as (prefix, chown):
            for path in (base, sockets):
                os.makedirs(path, exist_ok=True)
                chown(path)
            init = subprocess.run([*prefix, f"{bin_dir}/initdb", "-D", data, "-A", "trust",
                                   "-U", "postgres", "--no-locale", "-E", "UTF8", "--no-sync"],
                                  capture_output=True, text=True, cwd=base, timeout=120)
            assert init.returncode == 0, init.stderr
            postgres = " ".join([*prefix, f"{bin_dir}/postgres"])
            proj = write_project(str(tmp_path / "p"), f"""
                name = "pg"
                [tasks.db]
                command = "{postgres} -D {data} -p $PORT -k {sockets} {SERVER_OPTIONS}"
                cwd = "{base}"
                port = "auto"
                health_check = "{bin_dir}/pg_isready -q -h 127.0.0.1 -p $PORT"
                health_interval = 0.5
                health_grace = 20
                restart_backoff = 1.0
                stop_grace_period = 10
            """)
            daemon = start_daemon()
            code, out = run_json(["start"], env, cwd=proj)
            assert code == 0, out

            def db() -> dict[str, object]:
                st = call(daemon.socket, "project.status", {"project": "pg"})
                return dict(next(t for t in st["tasks"] if t["name"] == "db"))

            wait_until(lambda: db()["healthy"] and len(postmasters(data)) == 1, 60,
                       "PostgreSQL running and healthy")
            first = postmasters(data)[0]
            first_run = db()["pid"]
            subprocess.run(["tmux", "-L", tmux_socket, "kill-server"], capture_output=True,
                           check=False)

            def back_once() -> bool:
                t = db()
                if t["state"] == "fatal":  # gave up: no need to wait any longer
                    return True
                # A new run (until its exit is recorded, the old run still reads "running";
                # a postmaster's freshly forked child briefly wears its command line too).
                return bool(t["state"] == "running" and t["healthy"]
                            and t["pid"] != first_run) \
                    and len(postmasters(data)) == 1 and first not in postmasters(data)

            try:
                wait_until(back_once, 45, "PostgreSQL back, healthy, once")
                assert db()["state"] == "running", "gave up"
            except AssertionError as exc:
                raise AssertionError(f"{exc}; db: {db()}; postmasters: {postmasters(data)} "
                                     f"(the first was {first})") from None
            history = [(e["event"], e.get("details", e)) for e in
                       run_json(["events", "-p", "pg"], env)[1].get("events", [])]
            assert first not in postmasters(data), history
            assert len(postmasters(data)) == 1, (postmasters(data), history)
            logs = glob.glob(os.path.join(env["TASKMUX_HOME"], "projects", "pg", "logs",
                                          "db.log*"))
            text = ""
            for path in sorted(logs):
                with open(path, encoding="utf-8", errors="replace") as fh:
                    text += fh.read()
            assert "postmaster.pid" not in text, text[-2000:]
            assert "already exists" not in text, text[-2000:]
            daemon.stop()  # before the user goes: no restart may race its removal
            subprocess.run(["tmux", "-L", tmux_socket, "kill-server"], capture_output=True,
                           check=False)
    finally:
        if daemon is not None:
            daemon.stop()
        subprocess.run(["tmux", "-L", tmux_socket, "kill-server"], capture_output=True,
                       check=False)
        for pid in postmasters(data):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
