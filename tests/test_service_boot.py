"""taskmux's units booted for real, by a systemd user manager (PID 1 here is not systemd,
so the system manager is out of reach; see systemd_user_manager.py): Type=notify readiness,
watchdog pings, restart on failure and on watchdog timeout, no restart on exit 78, a clean
stop, KillMode=process, and `daemon install|start|stop|restart|status` against the real
systemctl."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.helpers import BIN, call, pid_gone, run_json, wait_until
from tests.systemd_user_manager import UserManager

UNIT = "taskmuxd.service"


def _drop_in(mgr: UserManager, unit: str, output: str) -> None:
    """Test-only settings: output to a file (no journald here), a 1 s watchdog that kills
    (a stopped process cannot act on SIGABRT), quick restarts."""
    folder = os.path.join(mgr.config, "systemd", "user", f"{unit}.d")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "test.conf"), "w") as fh:
        fh.write(f"[Service]\nStandardOutput=append:{output}\nStandardError=append:{output}\n"
                 "WatchdogSec=1s\nWatchdogSignal=SIGKILL\nRestartSec=100ms\n")


def _answering_pid(sock: str, not_pid: int | None = None) -> int | None:
    try:
        pid = int(call(sock, "daemon.status", timeout=1.0)["pid"])
    except (OSError, RuntimeError):
        return None
    return pid if pid != not_pid else None


def _ready_and_watched(manager: UserManager, home: str, pid: int) -> None:
    props = manager.show(UNIT, "ActiveState", "SubState", "MainPID", "Type", "NotifyAccess",
                         "KillMode", "Restart", "StatusText", "ExecStart", "Environment")
    assert (props["ActiveState"], props["SubState"], props["MainPID"]) == \
        ("active", "running", str(pid))
    assert (props["Type"], props["NotifyAccess"], props["KillMode"], props["Restart"]) == \
        ("notify", "main", "process", "on-failure")
    assert props["StatusText"].startswith("serving on ")  # from the daemon's READY=1
    assert f"path={BIN}/taskmuxd" in props["ExecStart"]
    assert f"TASKMUX_HOME={home}" in props["Environment"]

    # WATCHDOG=1 arrives every WatchdogSec/2: systemd's record of the last ping moves.
    def last_ping() -> int:
        return int(manager.show(UNIT, "WatchdogTimestampMonotonic")
                   ["WatchdogTimestampMonotonic"])

    seen = [last_ping()]
    for _ in range(3):
        seen.append(wait_until(lambda: last_ping() > seen[-1] and last_ping(), 5,
                               "a watchdog ping"))


def _running_as(manager: UserManager, pid: int) -> bool:
    """The unit is active with ``pid`` as its main process: READY=1 has been received.
    The socket answers a moment before that, and a daemon stopped in between would sit in
    "activating", where the start timeout (90 s) applies instead of the watchdog."""
    props = manager.show(UNIT, "ActiveState", "SubState", "MainPID")
    return (props["ActiveState"], props["SubState"], props["MainPID"]) == \
        ("active", "running", str(pid))


def _restarts(manager: UserManager, sock: str, pid: int) -> int:
    """A crash is restarted; so is a hang, by the watchdog. Returns the last pid."""
    wait_until(lambda: _running_as(manager, pid), 20, "the unit to be running")
    os.kill(pid, signal.SIGKILL)
    pid = wait_until(lambda: _answering_pid(sock, pid), 20, "a restart after a crash")
    wait_until(lambda: _running_as(manager, pid), 20, "the restarted unit to be running")
    os.kill(pid, signal.SIGSTOP)
    pid = wait_until(lambda: _answering_pid(sock, pid), 20, "a restart after a hang")
    assert int(manager.show(UNIT, "NRestarts")["NRestarts"]) == 2
    return pid


def _exit_78_is_final(manager: UserManager, home: str, env: dict[str, str], pid: int) -> int:
    """Exit 78 (invalid settings) is not retried; `daemon start` recovers once fixed."""
    wait_until(lambda: _running_as(manager, pid), 20, "the unit to be running")
    with open(os.path.join(home, "config.toml"), "w") as fh:
        fh.write("log_levle = 'debug'\n")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: manager.show(UNIT, "ActiveState")["ActiveState"] == "failed", 20,
               "the unit to fail")
    assert manager.show(UNIT, "ExecMainStatus")["ExecMainStatus"] == "78"
    code, out = run_json(["daemon", "status"], env)
    # LSB 1: dead, its pid file left behind (SIGKILL gave it no chance to remove it).
    assert code == 1 and out["service"]["state"] == "failed"
    assert out["service"]["last_exit"].startswith("exited 78 (invalid settings")
    os.unlink(os.path.join(home, "config.toml"))
    code, out = run_json(["daemon", "start"], env)
    assert code == 0 and out["action"] == "started", out
    return int(out["pid"])


@pytest.mark.slow(14)
def test_user_unit_runs_under_systemd(manager: UserManager, home: str,
                                      env: dict[str, str]) -> None:
    env = {**env, "XDG_RUNTIME_DIR": manager.runtime, "XDG_CONFIG_HOME": manager.config,
           "TASKMUX_SERVICE_MANAGER": "systemd"}
    sock = os.path.join(home, "ctl.sock")
    output = os.path.join(home, "service.out")
    _drop_in(manager, UNIT, output)
    sleeper = None
    try:
        code, out = run_json(["daemon", "install", "--user-unit"], env)
        assert code == 0, out
        pid = out["pid"]
        _ready_and_watched(manager, home, pid)
        # Install again: nothing to do.
        code, out = run_json(["daemon", "install", "--user-unit"], env)
        assert (code, out["changed"], out["actions"], out["pid"]) == (0, False, [], pid)
        code, out = run_json(["daemon", "status"], env)
        assert code == 0 and out["service"]["active"] and out["service"]["enabled"]
        assert out["service"]["main_pid"] == pid

        # KillMode=process: a task's process in the unit's cgroup outlives a restart.
        sleeper = subprocess.Popen(["sleep", "300"])
        manager.move_into(UNIT, sleeper.pid)
        assert str(sleeper.pid) in manager.systemctl("status", UNIT).stdout
        code, out = run_json(["daemon", "restart"], env)
        assert code == 0 and out["pid"] != pid
        assert sleeper.poll() is None

        pid = _restarts(manager, sock, out["pid"])
        pid = _exit_78_is_final(manager, home, env, pid)

        # `daemon stop` is a clean stop (exit 143 counts as success), not a failure.
        code, out = run_json(["daemon", "stop"], env)
        assert (code, out["action"]) == (0, "stopped")
        props = manager.show(UNIT, "ActiveState", "Result")
        assert (props["ActiveState"], props["Result"]) == ("inactive", "success")
        assert pid_gone(pid) and sleeper.poll() is None
        with open(output) as fh:
            log = fh.read()
        assert "serving on" in log and "<6>" not in log  # not the journal: plain lines

        code, out = run_json(["daemon", "uninstall"], env)
        assert code == 0 and out["changed"]
        assert manager.show(UNIT, "LoadState")["LoadState"] == "not-found"
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        manager.systemctl("stop", UNIT)


def _supports_user_flag() -> bool:
    proc = subprocess.run([os.path.join(BIN, "taskmuxd"), "run", "--help"],
                          capture_output=True, text=True, timeout=30)
    return "--user" in proc.stdout


def test_system_template_with_its_hardening_runs(manager: UserManager, home: str) -> None:
    """The system template (root, Type=notify, the hardening) under the root user manager:
    the hardening applies and does not stop the daemon from starting and serving, and the
    user's tasks keep what they need (no NoNewPrivileges, so sudo works in a task)."""
    from taskmuxctl.core.daemonprogram import daemon_program
    from taskmuxctl.service.render import render
    from taskmuxctl.service.target import Target

    target = Target("systemd", "system", "root", 0, 0, "/root", home)
    unit = "taskmuxd@root.service"
    folder = os.path.join(manager.config, "systemd", "user")
    os.makedirs(os.path.join(folder, f"{unit}.d"), exist_ok=True)
    template, drop_in = render(target, daemon_program())
    content = template.content
    if not _supports_user_flag():
        # Until the privilege drop (`run --user`) is merged, run the template without it.
        content = content.replace(" run --user %i\n", " run\n")
    with open(os.path.join(folder, "taskmuxd@.service"), "w") as fh:
        fh.write(content)
    with open(os.path.join(folder, f"{unit}.d", "taskmux.conf"), "w") as fh:
        fh.write(drop_in.content)
    _drop_in(manager, unit, os.path.join(home, "service.out"))
    try:
        assert manager.systemctl("daemon-reload").returncode == 0
        started = manager.systemctl("start", unit)
        assert started.returncode == 0, started.stderr
        pid = int(manager.show(unit, "MainPID")["MainPID"])
        assert _answering_pid(os.path.join(home, "ctl.sock")) == pid
        with open(f"/proc/{pid}/status") as fh:
            status = dict(line.split(":", 1) for line in fh)
        assert status["NoNewPrivs"].strip() == "0"
        assert status["Seccomp"].strip() == "2"  # RestrictRealtime/RestrictSUIDSGID filters
        bounding = int(status["CapBnd"], 16)
        assert not bounding & (1 << 16) and not bounding & (1 << 34)  # SYS_MODULE, SYSLOG
        with open(f"/proc/{pid}/mountinfo") as fh:
            assert " /dev/kmsg " in fh.read()  # ProtectKernelLogs covered it
    finally:
        manager.systemctl("stop", unit)
        for name in (f"{unit}.d/taskmux.conf", f"{unit}.d/test.conf", "taskmuxd@.service"):
            os.unlink(os.path.join(folder, name))
        manager.systemctl("daemon-reload")
