"""Test helpers: waiting on conditions, a real daemon process, raw socket calls."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
BIN = os.path.dirname(sys.executable)


def daemon_env(home: str) -> dict[str, str]:
    """This process's environment for a test daemon (or client) on ``home``."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TASKMUX_", "NOTIFY_SOCKET", "WATCHDOG_", "TMUX"))}
    base["TASKMUX_HOME"] = home
    base["TASKMUX_TEST_HOOKS"] = "1"  # routes.set & co. (taskmuxd/handlers/network.py)
    return base


def safe_settings(home: str) -> dict[str, Any]:
    """Settings that keep a test daemon off ports 443, 80 and 5454 and off /etc/hosts."""
    return {"proxy_https_port": 0, "proxy_http_redirect_port": 0, "host_resolver": "noop",
            "dns_server_port": 0, "hosts_file": os.path.join(home, "hosts")}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def write_config(home: str, text: str = "") -> str:
    """Write ``home``/config.toml: ``text`` plus every safe setting it does not set itself."""
    import tomllib

    own = tomllib.loads(text)
    # First, so that they stay top-level keys whatever tables ``text`` opens.
    lines = [f"{k} = {_toml_value(v)}" for k, v in safe_settings(home).items() if k not in own]
    if text.strip():
        lines.append(text.rstrip("\n"))
    path = os.path.join(home, "config.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def ensure_safe_config(home: str) -> None:
    """Add any safe setting a test's config.toml lost (a last line of defence)."""
    import tomllib

    path = os.path.join(home, "config.toml")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        tomllib.loads(text)
    except FileNotFoundError:
        text = ""
    except tomllib.TOMLDecodeError:
        return  # a test of a broken file: the daemon refuses it anyway
    write_config(home, text)


# The least a wait lasts before it fails the test. A wait's timeout only bounds how long a
# broken test hangs (tests never assert timings); CI runs 4 workers on 2 busy cores, where a
# process start that takes 0.1 s alone can take many seconds. A passing test never waits
# longer for it: the wait ends as soon as its condition holds.
WAIT_FLOOR = 30.0


def wait_until(condition: Callable[[], Any], timeout: float = WAIT_FLOOR, what: str = "condition",
               interval: float = 0.01) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``
    seconds, or WAIT_FLOOR if that is longer."""
    timeout = max(timeout, WAIT_FLOOR)
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def rpc_lines(sock_path: str, payload: bytes, expect: int, timeout: float = 10.0) -> list[Any]:
    """Send raw bytes on a new connection; read ``expect`` response lines."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(payload)
        buf = b""
        while buf.count(b"\n") < expect:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return [json.loads(line) for line in buf.splitlines() if line.strip()]


def call(sock_path: str, method: str, params: dict[str, Any] | None = None,
         timeout: float = 10.0) -> Any:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        msg["params"] = params
    reply = rpc_lines(sock_path, json.dumps(msg).encode() + b"\n", 1, timeout)[0]
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply["result"]


class DaemonProcess:
    """``taskmuxd run`` as a child process on a private TASKMUX_HOME."""

    def __init__(self, home: str, env: dict[str, str], extra_args: list[str] | None = None,
                 nofile: tuple[int, int] | None = None):
        """``nofile``: start it with this (soft, hard) descriptor limit."""
        self.home = home
        self.env = env
        self.socket = os.path.join(home, "ctl.sock")
        ensure_safe_config(home)
        self.log_path = os.path.join(home, "test-daemon.stderr")
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        argv = [PYTHON, "-m", "taskmuxd", "run", *(extra_args or [])]
        if nofile is not None:  # set in a small exec wrapper (no preexec_fn in the child)
            argv = [PYTHON, "-c", "import os, resource, sys; "
                    "resource.setrlimit(resource.RLIMIT_NOFILE, "
                    f"({nofile[0]}, {nofile[1]})); os.execv(sys.executable, "
                    "[sys.executable, *sys.argv[1:]])", *argv[1:]]
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def answering(self) -> bool:
        try:
            return bool(call(self.socket, "daemon.ping", timeout=1.0))
        except (OSError, RuntimeError):
            return False

    def ready(self) -> bool:
        """Every subsystem started (the socket answers from the first phase of the start,
        before that, with ``ready`` false)."""
        try:
            return call(self.socket, "daemon.status", timeout=1.0)["ready"] is True
        except (OSError, RuntimeError):
            return False

    def wait_ready(self, timeout: float = 60.0) -> DaemonProcess:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.output()}")
            return self.ready()

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return self
            time.sleep(0.02)
        raise AssertionError(f"daemon did not answer: {self.output()}")

    def output(self) -> str:
        self._log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Stop the daemon; never raises (cleanup)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def run_cli(args: list[str], env: dict[str, str], cwd: str | None = None,
            timeout: float = 60.0, prog: str = "taskmuxctl",
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([os.path.join(BIN, prog), *args], env=env, cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, input=input)


def run_json(args: list[str], env: dict[str, str], cwd: str | None = None,
             timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    proc = run_cli(["--json", *args], env, cwd=cwd, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got stdout={proc.stdout!r} " \
        f"stderr={proc.stderr!r}"
    return proc.returncode, json.loads(lines[0])


@contextlib.contextmanager
def listening_socket(path: str) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    try:
        yield s
    finally:
        s.close()


def read_daemon_pid_kill(home: str) -> None:
    """Kill a daemon a test started through the CLI (detached) in ``home``; never raises."""
    pid_file = os.path.join(home, "daemon.pid")
    try:
        with open(pid_file) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return
    if b"taskmuxd" not in cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pid_gone(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def read_reply(conn: socket.socket, timeout: float = 30.0) -> Any:
    """The one JSON line a daemon answers on ``conn`` (a request sent by hand), read whole;
    the test fails if the daemon closes the connection first."""
    conn.settimeout(timeout)
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = conn.recv(65536)
        assert chunk, "the daemon closed the connection unanswered"
        reply += chunk
    return json.loads(reply)


def write_whole(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (a new file renamed over it, as editors save):
    a daemon watching it never reads it truncated or half written."""
    with open(path + ".new", "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(path + ".new", path)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def pid_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie nobody reaped counts as exited: this sandbox's
    PID 1 may not reap orphans). A process of several threads killed is a zombie leader
    before its other threads have ended, and its descriptors (a daemon's listening socket)
    close only with the last one: it is gone once no other thread remains."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            if fh.read().rsplit(") ", 1)[1][:1] not in ("Z", "X"):
                return False
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except (FileNotFoundError, ProcessLookupError):  # (ESRCH: it ended between open and read)
        return True


def kill_task_leftovers(home: str) -> None:
    """SIGKILL every process group a runner recorded under ``home`` (cleanup; never raises)."""
    import glob

    for path in glob.glob(os.path.join(home, "projects", "*", "run", "*.json")):
        if path.endswith(".spec.json"):
            continue
        try:
            with open(path) as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            continue
        for key in ("pgid", "runner_pid"):
            pid = rec.get(key)
            if isinstance(pid, int) and pid > 1 and pid != os.getpid():
                with contextlib.suppress(OSError):
                    if key == "pgid":
                        os.killpg(pid, signal.SIGKILL)
                    else:
                        os.kill(pid, signal.SIGKILL)


class ProxyHarness:
    """A running daemon plus the calls proxy tests make: routes, ports, the CA."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.home = daemon.home

    def status(self, section: str) -> dict[str, Any]:
        result: dict[str, Any] = call(self.daemon.socket, "daemon.status")[section]
        return result

    @property
    def https_port(self) -> int:
        port = self.status("proxy")["https_port"]
        assert port, self.status("proxy")
        return int(port)

    @property
    def ca_path(self) -> str:
        return str(call(self.daemon.socket, "ca.info")["cert"])

    def set_routes(self, project: str, *backends: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = call(self.daemon.socket, "routes.set",
                                      {"project": project, "backends": list(backends)})
        return result

    def remove(self, project: str) -> None:
        call(self.daemon.socket, "routes.remove", {"project": project})


def route(task: str, host: str, port: int | None, state: str = "running",
          ready: bool = True) -> dict[str, Any]:
    return {"task": task, "host": host, "port": port, "state": state, "ready": ready}


def kill_processes_of_home(home: str) -> None:
    """SIGKILL any process still running with TASKMUX_HOME=home (an updater or guard that
    outlived its daemon); never raises."""
    marker = f"TASKMUX_HOME={home}\0".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker not in fh.read() + b"\0":
                    continue
        except OSError:
            continue
        with contextlib.suppress(OSError):
            os.kill(int(entry), signal.SIGKILL)
