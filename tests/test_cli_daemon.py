"""taskmuxctl against a real daemon: the envelope, daemon start/stop/status, errors."""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest

from taskmuxctl.context import Context
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.rpcclient import Client, DaemonUnavailable
from tests.helpers import (
    BIN,
    DaemonProcess,
    call,
    listening_socket,
    pid_gone,
    run_cli,
    run_json,
    wait_until,
    write_config,
)


def test_envelope_shape_success_and_failure(daemon: DaemonProcess, env: dict[str, str]) -> None:
    code, out = run_json(["daemon", "status"], env)
    assert code == 0
    assert out["ok"] is True
    assert out["running"] is True
    assert out["pid"] == daemon.pid
    for key in ("version", "uptime", "socket", "projects"):
        assert key in out
    # A failure: same single line, ok false, a message and a stable code.
    code, out = run_json(["config", "set", "no_such_key", "1"], env)
    assert code != 0
    assert set(out) >= {"ok", "error", "code"}
    assert out["ok"] is False
    assert out["code"] == Code.SETTINGS_UNKNOWN_KEY
    assert isinstance(out["error"], str) and "no_such_key" in out["error"]


def test_json_flag_is_accepted_anywhere(daemon: DaemonProcess, env: dict[str, str]) -> None:
    for argv in (["--json", "daemon", "status"], ["daemon", "--json", "status"],
                 ["daemon", "status", "--json"]):
        proc = run_cli(argv, env)
        assert proc.returncode == 0, argv
        assert proc.stdout.startswith('{"ok":true'), argv


def test_usage_errors_in_json_mode_are_envelopes(env: dict[str, str]) -> None:
    code, out = run_json(["daemon", "frobnicate"], env)
    assert code == 2
    assert out["ok"] is False and out["code"] == Code.USAGE
    proc = run_cli(["daemon", "frobnicate"], env)
    assert proc.returncode == 2 and "unknown command 'daemon frobnicate'" in proc.stderr


def test_status_exit_codes_follow_lsb(env: dict[str, str], home: str) -> None:
    code, out = run_json(["daemon", "status"], env)
    assert (code, out["running"], out["reason"]) == (3, False, "no_socket")
    proc = run_cli(["daemon", "status"], env)
    assert proc.returncode == 3 and "not running" in proc.stdout
    # A pid file naming a process that is gone: "dead, pid file exists" (1).
    gone = subprocess.Popen(["true"])
    gone.wait()
    with open(os.path.join(home, "daemon.pid"), "w") as fh:
        fh.write(f"{gone.pid}\n")
    code, out = run_json(["daemon", "status"], env)
    assert code == 1 and out["stale_pid"] == gone.pid


def test_start_stop_restart(env: dict[str, str], home: str) -> None:
    code, out = run_json(["daemon", "start"], env)
    assert code == 0 and out["action"] == "started"
    pid = out["pid"]
    sock = os.path.join(home, "ctl.sock")
    assert call(sock, "daemon.status")["pid"] == pid
    code, out = run_json(["daemon", "start"], env)
    assert (code, out["action"], out["pid"]) == (0, "already_running", pid)
    code, out = run_json(["daemon", "restart"], env)
    assert code == 0 and out["previous_pid"] == pid and out["pid"] != pid
    new_pid = out["pid"]
    code, out = run_json(["daemon", "stop"], env)
    assert (code, out["action"], out["pid"]) == (0, "stopped", new_pid)
    assert pid_gone(new_pid)
    code, out = run_json(["daemon", "stop"], env)
    assert (code, out["action"]) == (0, "not_running")


@pytest.mark.skipif(os.geteuid() != 0, reason="the warning is about running as root")
def test_starting_the_daemon_as_root_says_so_once(env: dict[str, str], home: str) -> None:
    from taskmuxctl.core.daemonctl import ROOT_WARNING

    # The first command that needs the daemon starts it, and warns: once, on stderr.
    first = run_cli(["--json", "status"], env, cwd=home)
    assert first.stderr.count("running as root") == 1, first.stderr
    assert ROOT_WARNING in first.stderr
    assert "sudo taskmux daemon install --user NAME" in first.stderr
    assert first.stdout.count("\n") == 1  # the JSON envelope alone on stdout
    # The daemon runs now: later commands say nothing more.
    for argv in (["daemon", "start"], ["daemon", "status"]):
        later = run_cli(argv, env)
        assert later.returncode == 0 and "running as root" not in later.stderr, later.stderr


def test_no_root_warning_for_a_user(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from taskmuxctl.core import daemonctl

    monkeypatch.setattr(daemonctl.os, "geteuid", lambda: 1000)
    daemonctl.warn_if_root()
    monkeypatch.setattr(daemonctl.os, "geteuid", lambda: 0)
    daemonctl.warn_if_root()
    assert capsys.readouterr().err.count("running as root") == 1


def test_start_failure_shows_the_log(env: dict[str, str], home: str) -> None:
    with open(os.path.join(home, "config.toml"), "w") as fh:
        fh.write("shutdown_timeout = 'soon'\n")
    code, out = run_json(["daemon", "start"], env)
    assert code == 1
    assert out["code"] == Code.DAEMON_START_FAILED
    assert "exited with status 78" in out["error"]
    assert "shutdown_timeout" in out["error"]


def test_unreachable_reasons(home: str) -> None:
    paths = Paths(home)
    with pytest.raises(DaemonUnavailable) as info:
        Client(paths).connect()
    assert info.value.reason == "no_socket" and "daemon start" in info.value.message
    with listening_socket(paths.socket):
        pass
    with pytest.raises(DaemonUnavailable) as info:
        Client(paths).connect()
    assert info.value.reason == "refused"
    os.unlink(paths.socket)
    # A listener that accepts but never answers.
    with listening_socket(paths.socket) as server:
        accepted: list[socket.socket] = []
        t = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
        t.start()
        with pytest.raises(DaemonUnavailable) as info:
            Client(paths, timeout=0.3).call("daemon.ping")
        t.join()
        for conn in accepted:
            conn.close()
    assert info.value.reason == "timeout"
    assert info.value.code == Code.DAEMON_TIMEOUT


def test_commands_needing_the_daemon_start_it(env: dict[str, str], home: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TASKMUX_NO_DAEMON_START", raising=False)
    paths = Paths(home)
    # Refused when asked not to, by flag or by setting.
    with pytest.raises(DaemonUnavailable):
        Context(paths, no_daemon_start=True).call("daemon.ping")
    write_config(home, "auto_start_daemon = false\n")
    with pytest.raises(DaemonUnavailable):
        Context(paths).call("daemon.ping")
    write_config(home)
    ctx = Context(paths)
    try:
        assert ctx.call("daemon.ping") == {"pong": True}
        assert ctx.started_daemon is not None
    finally:
        ctx.close()
    wait_until(lambda: call(paths.socket, "daemon.status")["pid"] == ctx.started_daemon)


def test_version_reports_both(daemon: DaemonProcess, env: dict[str, str]) -> None:
    code, out = run_json(["version"], env)
    assert code == 0 and out["version"] == out["daemon_version"]


def test_taskmux_alias_is_the_same_program(daemon: DaemonProcess, env: dict[str, str]) -> None:
    a = run_cli(["--json", "daemon", "status"], env, prog="taskmux")
    b = run_cli(["--json", "daemon", "status"], env, prog="taskmuxctl")
    assert a.returncode == b.returncode == 0
    assert f'"pid":{daemon.pid}' in a.stdout
    assert f'"pid":{daemon.pid}' in b.stdout


def test_daemon_alone_runs_it_in_the_foreground(env: dict[str, str], home: str) -> None:
    """`taskmux daemon` with no subcommand is the foreground daemon, as in taskmux 0.6."""
    import signal

    proc = subprocess.Popen([f"{BIN}/taskmux", "daemon"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        sock = os.path.join(home, "ctl.sock")
        # Ready, not just answering: the socket answers before the daemon's signal handlers
        # are set, and a SIGTERM then would end it with -15, not 143.
        status = wait_until(lambda: (s := call(sock, "daemon.status", timeout=1.0))["ready"]
                            is True and s, 20, "the daemon to be ready")
        assert status["pid"] == proc.pid  # the client became the daemon (exec), not a spawn
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    code, out = run_json(["config"], env)
    assert code == 2 and "choose a command" in out["error"]  # a group without a default
