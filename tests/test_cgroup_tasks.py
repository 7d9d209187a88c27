"""One cgroup per task where systemd delegates a subtree (``Delegate=yes``), booted for real
by a private systemd user manager (see systemd_user_manager.py: its own cgroup namespace
rooted at a fresh sub-cgroup, so the machine's hierarchy is not touched). A process that
leaves the task's session and scrubs its environment (so no marker finds it) is still the
task's, and still ended with it."""

from __future__ import annotations

import os
import signal

import pytest

from tests.helpers import call, pid_gone, run_json, wait_until, write_config
from tests.projects import task, write_project
from tests.systemd_user_manager import UserManager

UNIT = "taskmuxd.service"
# The task's shell starts a process that escapes its session and environment, then waits.
ESCAPE = "setsid env -i /bin/sleep 6001 & exec /bin/sleep 6002"


def _procs(folder: str) -> list[int]:
    try:
        with open(os.path.join(folder, "cgroup.procs")) as fh:
            return [int(x) for x in fh.read().split()]
    except FileNotFoundError:
        return []


def _with_cmdline(cmd: bytes) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if fh.read() == cmd and not pid_gone(int(entry)):
                        out.append(int(entry))
            except OSError:
                continue
    return out


@pytest.mark.slow
def test_each_task_runs_in_its_own_delegated_cgroup(manager: UserManager, home: str,
                                                    env: dict[str, str], tmp_path: str,
                                                    tmux_socket: str) -> None:
    v2 = [top for top in manager.tracking if "/unified/" in top or
          os.path.exists(os.path.join(top, "cgroup.controllers"))]
    if not v2:
        pytest.skip("this machine has no cgroup v2 hierarchy to delegate")
    env = {**env, "XDG_RUNTIME_DIR": manager.runtime, "XDG_CONFIG_HOME": manager.config,
           "TASKMUX_SERVICE_MANAGER": "systemd"}
    write_config(home, f'tmux_socket = "{tmux_socket}"\nhealth_check_interval = 0.5\n')
    proj = write_project(str(tmp_path / "p"), f"""
        name = "cg"
        [tasks.esc]
        command = "{ESCAPE}"
        stop_grace_period = 1
        restart_backoff = 1.0
    """)
    sleepers: list[int] = []
    try:
        code, out = run_json(["daemon", "install", "--user-unit"], env)
        assert code == 0, out
        group = manager.show(UNIT, "ControlGroup")["ControlGroup"]
        assert manager.show(UNIT, "Delegate")["Delegate"] == "yes"
        assert run_json(["start"], env, cwd=proj)[0] == 0
        info = run_json(["inspect", "esc"], env, cwd=proj)[1]["task"]
        assert info["cgroup"].endswith("/tasks/cg.esc"), info
        folder = v2[0] + group + "/tasks/cg.esc"
        escaped = wait_until(lambda: _with_cmdline(b"/bin/sleep\x006001\x00"), 10,
                             "the escaped sleeper")
        sleepers += escaped
        members = _procs(folder)
        # The runner, the task and the process that left its session are all inside.
        assert escaped[0] in members and info["pid"] in members
        with open(f"/proc/{escaped[0]}/environ", "rb") as fh:
            assert b"TASKMUX_RUN" not in fh.read()  # no marker: only the group knows it
        assert isinstance(info["cpu_seconds"], float)

        # The runner is killed: the daemon ends the whole group (the escaped process too)
        # before it starts the task again.
        runner = info["runner"]["runner_pid"]
        os.kill(runner, signal.SIGKILL)
        wait_until(lambda: pid_gone(escaped[0]), 15, "the escaped process to be ended")
        wait_until(lambda: task(env, proj, "esc")["state"] == "running"
                   and len(_with_cmdline(b"/bin/sleep\x006001\x00")) == 1, 15,
                   "one new copy of the task")
        sleepers += _with_cmdline(b"/bin/sleep\x006001\x00")

        runner = run_json(["inspect", "esc"], env, cwd=proj)[1]["task"]["runner"]["runner_pid"]
        assert run_json(["stop"], env, cwd=proj)[0] == 0
        # Nothing of the task is left; its runner may stay, idle (warm_runner_seconds).
        wait_until(lambda: set(_procs(folder)) <= {runner}, 10,
                   "no task process in the group after stop")
        assert all(pid_gone(p) for p in sleepers)
        assert call(os.path.join(home, "ctl.sock"), "daemon.status")["pid"]
    finally:
        run_json(["daemon", "uninstall"], env)
        manager.systemctl("stop", UNIT)
        for pid in sleepers:
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)
