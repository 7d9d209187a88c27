"""The daemon process: single instance, stale sockets, signals, reload, sd_notify."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.helpers import (
    PYTHON,
    DaemonProcess,
    call,
    listening_socket,
    rpc_lines,
    wait_until,
    write_config,
)

StartDaemon = Callable[..., DaemonProcess]


def test_state_directory_is_private(daemon: DaemonProcess, home: str) -> None:
    assert os.stat(home).st_mode & 0o777 == 0o700
    assert os.stat(daemon.socket).st_mode & 0o777 == 0o600
    with open(os.path.join(home, "daemon.pid")) as fh:
        assert int(fh.read()) == daemon.pid


def test_a_second_daemon_refuses_and_names_the_first(
        daemon: DaemonProcess, env: dict[str, str]) -> None:
    second = subprocess.run([PYTHON, "-m", "taskmuxd", "run"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert second.returncode != 0
    assert f"already running (pid {daemon.pid})" in second.stderr
    # The first one's socket was left alone: it still answers.
    assert call(daemon.socket, "daemon.ping") == {"pong": True}


def test_a_stale_socket_file_is_replaced(start_daemon: StartDaemon, home: str) -> None:
    path = os.path.join(home, "ctl.sock")
    with listening_socket(path):
        pass  # bound then closed: a socket file nobody listens on, as a crash leaves it
    assert os.path.exists(path)
    with pytest.raises(ConnectionRefusedError), socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
    daemon = start_daemon()
    assert call(daemon.socket, "daemon.ping") == {"pong": True}


def test_a_stale_pid_file_does_not_block_a_start(start_daemon: StartDaemon, home: str) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(os.path.join(home, "daemon.pid"), "w") as fh:
        fh.write(f"{dead.pid}\n")
    daemon = start_daemon()
    with open(os.path.join(home, "daemon.pid")) as fh:
        assert int(fh.read()) == daemon.pid


def _slow_call(sock_path: str, delay: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock_path)
    s.sendall(json.dumps({"jsonrpc": "2.0", "method": "daemon.ping", "params": {"delay": delay},
                          "id": "inflight"}).encode() + b"\n")
    return s


def _wait_in_flight(daemon: DaemonProcess, n: int = 1) -> None:
    wait_until(lambda: call(daemon.socket, "daemon.status")["calls_in_flight"] >= n,
               what="a call in flight")


def _read_reply(s: socket.socket) -> dict[str, object]:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return json.loads(buf)


def test_sigterm_finishes_the_call_in_flight_then_exits_143(daemon: DaemonProcess) -> None:
    s = _slow_call(daemon.socket, 1.0)
    _wait_in_flight(daemon)
    daemon.signal(signal.SIGTERM)
    # New connections are refused once shutdown began (the socket is gone).
    wait_until(lambda: not os.path.exists(daemon.socket), what="the socket to be removed")
    reply = _read_reply(s)
    s.close()
    assert reply == {"jsonrpc": "2.0", "result": {"pong": True}, "id": "inflight"}
    assert daemon.wait() == 128 + signal.SIGTERM
    assert not os.path.exists(os.path.join(daemon.home, "daemon.pid"))


def test_sigint_exits_130_and_a_second_sigint_forces_it(daemon: DaemonProcess) -> None:
    s = _slow_call(daemon.socket, 50.0)
    _wait_in_flight(daemon)
    daemon.signal(signal.SIGINT)
    wait_until(lambda: not os.path.exists(daemon.socket), what="shutdown to begin")
    assert daemon.proc.poll() is None  # still waiting for the call in flight
    daemon.signal(signal.SIGINT)
    assert daemon.wait(timeout=10) == 130
    s.close()
    assert "second interrupt" in daemon.output()


def test_shutdown_method_exits_zero(daemon: DaemonProcess) -> None:
    assert call(daemon.socket, "daemon.shutdown")["stopping"] is True
    assert daemon.wait() == 0


def test_sighup_reloads_settings_and_keeps_them_when_invalid(
        daemon: DaemonProcess, home: str) -> None:
    assert call(daemon.socket, "config.get")["config"]["log_level"] == "info"
    write_config(home, 'log_level = "debug"\n')
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: call(daemon.socket, "config.get")["config"]["log_level"] == "debug",
               what="the reload")
    write_config(home, 'log_level = "loud"\nbogus_key = 1\n')
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in daemon.output(), what="the refusal to be logged")
    assert call(daemon.socket, "config.get")["config"]["log_level"] == "debug"
    assert daemon.proc.poll() is None


def test_invalid_settings_at_start_exit_78_with_the_reason(
        home: str, env: dict[str, str]) -> None:
    with open(os.path.join(home, "config.toml"), "w") as fh:
        fh.write("log_levle = 'debug'\n")
    proc = subprocess.run([PYTHON, "-m", "taskmuxd", "run"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 78
    assert "log_levle" in proc.stderr and "log_level" in proc.stderr


class NotifyListener:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(10)
        self.messages: list[tuple[float, str]] = []

    def next(self) -> str:
        data = self.sock.recv(4096).decode()
        self.messages.append((time.monotonic(), data))
        return data

    def until(self, needle: str) -> str:
        while True:
            msg = self.next()
            if needle in msg.split("\n"):
                return msg


def test_notify_socket_messages(start_daemon: StartDaemon, home: str) -> None:
    listener = NotifyListener(os.path.join(home, "notify.sock"))
    daemon = start_daemon({"NOTIFY_SOCKET": os.path.join(home, "notify.sock"),
                           "WATCHDOG_USEC": "200000"}, wait=False)
    try:
        ready = listener.until("READY=1")
        # READY is sent only once the socket serves: a call right now must succeed.
        assert call(daemon.socket, "daemon.ping") == {"pong": True}
        assert any(x.startswith("STATUS=") for x in ready.split("\n"))
        assert f"MAINPID={daemon.pid}" in ready.split("\n")
        pings = []
        while len(pings) < 6:
            msg = listener.next()
            if msg == "WATCHDOG=1":
                pings.append(listener.messages[-1][0])
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        mean = sum(gaps) / len(gaps)
        assert 0.05 < mean < 0.2, gaps  # half of WATCHDOG_USEC = 0.1 s
        daemon.signal(signal.SIGTERM)
        stopping = listener.until("STOPPING=1")
        assert "STATUS=stopping (SIGTERM)" in stopping
        assert daemon.wait() == 143
    finally:
        listener.sock.close()


def test_watchdog_off_when_meant_for_another_pid(start_daemon: StartDaemon, home: str) -> None:
    listener = NotifyListener(os.path.join(home, "notify.sock"))
    daemon = start_daemon({"NOTIFY_SOCKET": os.path.join(home, "notify.sock"),
                           "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}, wait=False)
    listener.until("READY=1")  # (start-up may take a while on a busy machine)
    listener.sock.settimeout(0.5)
    got: list[str] = []
    try:
        while True:
            got.append(listener.next())
    except TimeoutError:
        pass
    assert "WATCHDOG=1" not in got
    daemon.stop()
    listener.sock.close()


def test_socket_path_too_long_is_explained(env: dict[str, str], home: str) -> None:
    deep = os.path.join(home, "d" * 120)
    proc = subprocess.run([PYTHON, "-m", "taskmuxd", "run"], env={**env, "TASKMUX_HOME": deep},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "shorter directory" in proc.stderr


def test_raw_rpc_after_many_errors_still_serves(daemon: DaemonProcess) -> None:
    junk = b"".join([b"{\n", b"[1,2]\n", b'"x"\n', b"null\n"])
    replies = rpc_lines(daemon.socket, junk, 3)
    assert replies[0]["error"]["code"] == -32700
    assert call(daemon.socket, "daemon.ping") == {"pong": True}
