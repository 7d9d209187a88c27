"""The daemon process: single instance, stale sockets, signals, reload, sd_notify."""

from __future__ import annotations

import asyncio
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
    # 3 s: time enough for the status polls below to see it in flight on a busy machine.
    s = _slow_call(daemon.socket, 3.0)
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
        self.sock.settimeout(60)  # a daemon's start, READY included, on a busy machine
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
        while len(pings) < 10:
            msg = listener.next()
            if msg == "WATCHDOG=1":
                pings.append(listener.messages[-1][0])
        gaps = sorted(b - a for a, b in itertools.pairwise(pings))
        # The median: one late wake-up on a busy machine makes one long gap, which moves a
        # mean, not the interval the daemon keeps.
        assert 0.05 < gaps[len(gaps) // 2] < 0.2, gaps  # half of WATCHDOG_USEC = 0.1 s
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
    listener.until("READY=1")
    listener.sock.settimeout(0.5)  # five watchdog periods of silence
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


class SlowSubsystem:
    """Starts only when released; records whether systemd had heard READY by then."""

    name = "slow"

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.release = asyncio.Event()
        self.ready_seen_before_start_returned: bool | None = None

    async def start(self) -> None:
        await self.release.wait()
        try:
            self.listener.recv(4096, socket.MSG_DONTWAIT)
            self.ready_seen_before_start_returned = True
        except BlockingIOError:
            self.ready_seen_before_start_returned = False

    async def stop(self) -> None:
        pass

    def status(self) -> dict[str, object]:
        return {"summary": "slow but fine"}

    def settings_changed(self, old: object, new: object) -> None:
        pass


def test_ready_waits_for_every_subsystem_and_children_do_not_inherit_the_socket(
        home: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.settings import Settings
    from taskmuxd.notify import Notifier

    with warnings.catch_warnings():  # jsonrpcserver uses a deprecated importlib.resources call
        warnings.simplefilter("ignore", DeprecationWarning)
        from taskmuxd.daemon import Daemon

    path = os.path.join(home, "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier()
    # The daemon keeps the channel; tmux and tasks it starts do not inherit it.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ
    assert notifier.watchdog_interval == 30.0
    daemon = Daemon(Paths(home), Settings(), notifier)
    slow = SlowSubsystem(listener)
    daemon.subsystems.append(slow)

    async def scenario() -> int:
        run = asyncio.create_task(daemon.run())
        await asyncio.to_thread(wait_until, lambda: os.path.exists(daemon.paths.socket),
                                10.0, "the control socket")
        # The socket serves, but a subsystem is still starting: no READY yet.
        with pytest.raises(BlockingIOError):
            listener.recv(4096, socket.MSG_DONTWAIT)
        slow.release.set()
        ready = await asyncio.to_thread(listener.recv, 4096)
        assert b"READY=1" in ready.split(b"\n")
        daemon.request_shutdown()
        return await run

    try:
        assert asyncio.run(scenario()) == 0
    finally:
        notifier.close()
        listener.close()
    assert slow.ready_seen_before_start_returned is False


LOG_SCRIPT = """
import logging, os, sys
from taskmuxd import logs
mode = sys.argv[1]
if mode == "rotate":
    path = sys.argv[2]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 2)  # as a detached daemon's stderr is its log
    logs.MAX_BYTES = 300
    logs.configure("info", path)
    for i in range(20):
        logging.getLogger("taskmuxd").info("line %d of a rotating log", i)
    os.write(2, b"TRACEBACK-AFTER-ROTATION\\n")
else:
    logs.configure("info")
    logging.getLogger("taskmuxd").warning("hello journal")
"""


def test_journal_format_only_when_stderr_is_the_journal(tmp_path: str,
                                                        env: dict[str, str]) -> None:
    out = os.path.join(str(tmp_path), "stderr")
    other = os.path.join(str(tmp_path), "other")
    open(other, "w").close()
    for target, expect_journal in ((out, True), (other, False)):
        with open(out, "w") as fh:
            st = os.stat(target)
            subprocess.run([PYTHON, "-c", LOG_SCRIPT, "journal"], stderr=fh, timeout=30,
                           env={**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
                           check=True)
        with open(out) as fh:
            line = fh.read()
        # journald reads the priority prefix and adds its own time stamp.
        assert line.startswith("<4>taskmuxd: hello journal") is expect_journal, line
        assert (" WARNING taskmuxd: hello journal" in line) is not expect_journal, line


def test_detached_stderr_follows_the_log_rotation(tmp_path: str, env: dict[str, str]) -> None:
    log = os.path.join(str(tmp_path), "daemon.log")
    subprocess.run([PYTHON, "-c", LOG_SCRIPT, "rotate", log], env=env, timeout=30,
                   check=True)
    assert os.path.exists(log + ".1")
    with open(log) as fh:
        assert "TRACEBACK-AFTER-ROTATION" in fh.read()
    with open(log + ".1") as fh:
        assert "TRACEBACK-AFTER-ROTATION" not in fh.read()
