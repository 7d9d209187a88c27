"""The runner: the foreground process of a task's tmux pane. Standard library only.

Run as ``python -I -S runner.py SPEC.json``. It starts the task's command in a new session on
a pty, relays output unchanged to the pane and, ANSI-stripped with a UTC millisecond timestamp
per line, to the task's log (rotated by size); relays typed input and window size; records
pid, process group, start, exit status and exit time in the record file; and tells the daemon
at once over ``ctl.sock``. It decides nothing: it never restarts anything.

It imports as little as it can (``_signal`` rather than ``signal``, no ``pty``, no ``json``)
because one runs per task: its memory is multiplied by the number of tasks.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: no enum import
import _socket
import codecs
import errno
import fcntl
import os
import select
import sys
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from taskmuxctl import jsonio  # after the path set-up above

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RECORD_FORMAT = 1
PARTIAL_FLUSH_SECONDS = 1.0
DRAIN_AFTER_EXIT_SECONDS = 0.5
READ_SIZE = 65536


# -- log: ANSI stripping, time stamps, rotation -----------------------------------------------


class AnsiStripper:
    """Turns terminal output into plain text, incrementally (escape sequences may be split
    across reads). Keeps what a terminal would show on a line: text after a bare carriage
    return replaces the line; backspace erases a character. Blank lines are held back until
    something visible follows: a screen clear (``ESC [ J``, ``ESC c``) drops them, since tools
    such as Vite clear the screen by printing a screenful of newlines first."""

    TEXT, ESC, CSI, STRING, STRING_ESC, CHARSET = range(6)

    def __init__(self) -> None:
        self.state = self.TEXT
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.blank = 0  # newlines held back: each ends an empty line
        self.line_start = True  # nothing visible since the last newline

    def feed(self, data: bytes) -> str:
        text = self._decoder.decode(data)
        if (self.state == self.TEXT and "\x1b" not in text and not _has_controls(text)
                and not self.blank and "\n\n" not in text
                and not (self.line_start and text.startswith("\n"))):
            if text:
                self.line_start = text.endswith("\n")
            return text
        out: list[str] = []
        state = self.state
        for ch in text:
            if state == self.TEXT:
                if ch == "\x1b":
                    state = self.ESC
                elif ch == "\n" and self.line_start:
                    self.blank += 1
                elif ch >= " " or ch in "\n\t\b":
                    if self.blank:
                        out.append("\n" * self.blank)
                        self.blank = 0
                    out.append(ch)
                    self.line_start = ch == "\n"
                elif ch == "\r":
                    if not self.line_start:  # at a line's start it changes nothing
                        out.append(ch)
                elif ch == "\x9b":
                    state = self.CSI
            elif state == self.ESC:
                if ch == "[":
                    state = self.CSI
                elif ch in "]PX^_":
                    state = self.STRING
                elif ch in "()*+-./#%":
                    state = self.CHARSET
                else:
                    if ch == "c":  # a full reset clears the screen
                        self.blank = 0
                    state = self.TEXT
            elif state == self.CSI:
                if "@" <= ch <= "~":
                    if ch == "J":  # erase in display: the blank lines before it are gone
                        self.blank = 0
                    state = self.TEXT
            elif state == self.STRING:
                if ch == "\x07":
                    state = self.TEXT
                elif ch == "\x1b":
                    state = self.STRING_ESC
            elif state == self.STRING_ESC:
                state = self.TEXT if ch == "\\" else self.STRING
            else:  # CHARSET: one designator character follows
                state = self.TEXT
        self.state = state
        return "".join(out)


def _has_controls(text: str) -> bool:
    return "\r" in text or "\b" in text or "\x07" in text or "\x0f" in text or "\x0e" in text


def visible_line(line: str) -> str:
    """What a terminal shows for ``line``: carriage returns overwrite, backspaces erase."""
    if "\r" in line:
        parts = [p for p in line.split("\r") if p]
        line = parts[-1] if parts else ""
    if "\b" in line:
        chars: list[str] = []
        for ch in line:
            if ch == "\b":
                if chars:
                    chars.pop()
            else:
                chars.append(ch)
        line = "".join(chars)
    return line


class LogWriter:
    """Appends time-stamped plain lines to ``path``, rotating at ``max_size`` bytes and keeping
    ``max_files`` rotated files (``path.1`` is the newest)."""

    def __init__(self, path: str, max_size: int, max_files: int) -> None:
        self.path = path
        self.max_size = max(max_size, 1024)
        self.max_files = max(max_files, 1)
        self.stripper = AnsiStripper()
        self.partial = ""
        self.partial_since = 0.0
        self._stamp_second = -1
        self._stamp_prefix = ""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size

    def stamp(self, now: float) -> str:
        sec = int(now)
        if sec != self._stamp_second:
            self._stamp_second = sec
            self._stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._stamp_prefix}.{int((now - sec) * 1000):03d}Z"

    def feed(self, data: bytes, now: float) -> None:
        text = self.stripper.feed(data)
        if not text:
            return
        if not self.partial:
            self.partial_since = now
        text = self.partial + text
        lines = text.split("\n")
        self.partial = lines.pop()
        if lines:
            stamp = self.stamp(now)
            self.write_lines([f"{stamp} {visible_line(x).rstrip()}\n" for x in lines])
            if self.partial:
                self.partial_since = now

    def flush_partial(self, now: float, force: bool = False) -> None:
        """Write an unfinished line that has waited long enough (a prompt, a progress bar)."""
        if self.partial and (force or now - self.partial_since >= PARTIAL_FLUSH_SECONDS):
            line = visible_line(self.partial).rstrip()
            self.partial = ""
            if line:
                self.write(f"{self.stamp(now)} {line}\n")

    def note(self, message: str) -> None:
        self.flush_partial(time.time(), force=True)
        self.write(f"{self.stamp(time.time())} [taskmux] {message}\n")

    def write(self, text: str) -> None:
        self.write_lines([text])

    def write_lines(self, lines: list[str]) -> None:
        """Append whole lines, rotating between lines so no file passes ``max_size``."""
        chunk: list[bytes] = []
        chunk_size = 0
        for line in lines:
            data = line.encode("utf-8", "replace")
            if self.size + chunk_size + len(data) > self.max_size and (self.size or chunk):
                if chunk:
                    _write_all(self.fd, b"".join(chunk))
                    self.size += chunk_size
                    chunk, chunk_size = [], 0
                self.rotate()
            chunk.append(data)
            chunk_size += len(data)
        if chunk:
            _write_all(self.fd, b"".join(chunk))
            self.size += chunk_size

    def rotate(self) -> None:
        os.close(self.fd)
        for i in range(self.max_files - 1, 0, -1):
            src = f"{self.path}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")
        stale = f"{self.path}.{self.max_files + 1}"
        if os.path.exists(stale):
            os.unlink(stale)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                          0o600)
        self.size = 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


# -- records and telling the daemon ------------------------------------------------------------


def write_record(path: str, record: dict[str, object]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, (jsonio.dumps(record) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def tell_daemon(sock_path: str, method: str, params: dict[str, object]) -> None:
    """A JSON-RPC notification on ctl.sock; when the daemon is away, the record file speaks."""
    msg = {"jsonrpc": "2.0", "method": method, "params": params}
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)
        sock.connect(sock_path)
        sock.sendall((jsonio.dumps(msg) + "\n").encode())
    except OSError:
        pass
    finally:
        sock.close()


def join_cgroup(path: object) -> str | None:
    """Move this runner into the task's cgroup (a delegated subtree only: the daemon passes a
    path only then), so that everything the task forks is born inside. None on failure."""
    if not path:
        return None
    try:
        fd = os.open(os.path.join(str(path), "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError:
        return None
    return str(path)


# -- the pty relay -------------------------------------------------------------------------


class Runner:
    def __init__(self, spec: dict[str, object]) -> None:
        self.spec = spec
        self.record_path = str(spec["record"])
        self.socket_path = str(spec["socket"])
        self.log = LogWriter(str(spec["log"]), int(str(spec["log_max_size"])),
                             int(str(spec["log_max_files"])))
        self.record: dict[str, object] = {
            "format": RECORD_FORMAT, "project": spec["project"], "task": spec["task"],
            "run_id": spec["run_id"], "runner_pid": os.getpid(), "status": "starting",
        }
        self.pid = 0
        self.master = -1
        self.tty_attrs: list[Any] | None = None
        self.wake_r, self.wake_w = os.pipe()
        self.pending_signals: list[int] = []

    def notify(self, method: str) -> None:
        tell_daemon(self.socket_path, method, {
            "project": self.spec["project"], "task": self.spec["task"],
            "run_id": self.spec["run_id"], "record": self.record})

    def spawn(self) -> None:
        shell = str(self.spec["shell"])
        argv = [shell, "-c", str(self.spec["command"])]
        env = {str(k): str(v) for k, v in self.spec["env"].items()}  # type: ignore[attr-defined]
        if self.spec.get("marker"):
            env["TASKMUX_RUN"] = str(self.spec["marker"])
        cwd = str(self.spec["cwd"])
        pid, master = os.forkpty()
        if pid == 0:  # the task's side: a new session whose controlling terminal is the pty
            try:
                os.chdir(cwd)
                os.execve(shell, argv, env)
            except OSError as exc:
                os.write(2, f"taskmux: cannot run {argv!r} in {cwd}: {exc}\r\n".encode())
            os._exit(127)
        self.pid, self.master = pid, master
        self.record.update(pid=pid, pgid=pid, started_at=time.time(), status="running")
        write_record(self.record_path, self.record)
        self.log.note(f"started (pid {pid}): {self.spec['command']}")
        self.notify("runner.started")

    def setup_signals(self) -> None:
        for sig in (_signal.SIGWINCH, _signal.SIGCHLD, _signal.SIGTERM, _signal.SIGHUP,
                    _signal.SIGINT, _signal.SIGQUIT):
            _signal.signal(sig, self._on_signal)
        os.set_blocking(self.wake_w, False)
        _signal.set_wakeup_fd(self.wake_w)

    def setup_terminal(self) -> None:
        """Put the pane's terminal in raw mode: keys (C-c included) go to the task's pty."""
        if os.isatty(0):
            self.tty_attrs = termios.tcgetattr(0)
            raw = termios.tcgetattr(0)
            raw[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP
                        | termios.IXON)
            raw[2] = (raw[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
            raw[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
            raw[6][termios.VMIN] = 1
            raw[6][termios.VTIME] = 0
            termios.tcsetattr(0, termios.TCSADRAIN, raw)
            self.copy_window_size()

    def restore_terminal(self) -> None:
        if self.tty_attrs is not None:
            try:
                termios.tcsetattr(0, termios.TCSAFLUSH, self.tty_attrs)
            except termios.error:
                pass

    def copy_window_size(self) -> None:
        try:
            size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending_signals.append(signum)

    def handle_signals(self) -> None:
        while self.pending_signals:
            sig = self.pending_signals.pop(0)
            if sig == _signal.SIGWINCH:
                self.copy_window_size()
            elif sig != _signal.SIGCHLD and self.pid:
                # The pane is going away (tmux kill-window / kill-server) or someone signalled
                # the runner: pass it on to the task's process group, like a terminal hang-up.
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    pass

    def relay(self) -> int:
        """Relay until the task exits; return its wait status."""
        stdin_open = True
        status: int | None = None
        drain_deadline = 0.0
        while True:
            readers = [self.master, self.wake_r] + ([0] if stdin_open else [])
            now = time.time()
            if status is None:
                timeout = PARTIAL_FLUSH_SECONDS if self.log.partial else None
            else:
                timeout = max(drain_deadline - time.monotonic(), 0.0)
            try:
                ready, _, _ = select.select(readers, [], [], timeout)
            except InterruptedError:
                ready = []
            now = time.time()
            if self.wake_r in ready:
                try:
                    os.read(self.wake_r, 512)
                except BlockingIOError:
                    pass
            self.handle_signals()
            if self.master in ready:
                try:
                    data = os.read(self.master, READ_SIZE)
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if not data:  # every holder of the pty's other side is gone
                    break
                _write_all(1, data)
                self.log.feed(data, now)
                if status is not None:
                    drain_deadline = time.monotonic() + DRAIN_AFTER_EXIT_SECONDS
            if 0 in ready:
                try:
                    data = os.read(0, READ_SIZE)
                except OSError:
                    data = b""
                if data:
                    _write_all(self.master, data)
                else:
                    stdin_open = False
            if status is None:
                status = self._reap()
                if status is not None:
                    drain_deadline = time.monotonic() + DRAIN_AFTER_EXIT_SECONDS
            elif time.monotonic() >= drain_deadline:
                break  # the task is gone; something it left behind still holds the pty
            self.log.flush_partial(now)
        if status is None:
            _, status = os.waitpid(self.pid, 0)
        return status

    def _reap(self) -> int | None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        return status if pid else None

    def finish(self, status: int) -> int:
        code: int | None = None
        sig: int | None = None
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            what = f"killed by signal {sig}"
        else:
            code = os.waitstatus_to_exitcode(status)
            what = f"exited with code {code}"
        self.log.note(what)
        self.record.update(status="exited", exit_code=code, exit_signal=sig,
                           exited_at=time.time())
        write_record(self.record_path, self.record)
        os.close(self.master)
        self.notify("runner.exited")
        return code if code is not None else 128 + (sig or 0)

    def run(self) -> int:
        self.record["cgroup"] = join_cgroup(self.spec.get("cgroup"))
        self.setup_signals()
        try:
            self.spawn()
            self.setup_terminal()
            status = self.relay()
            return self.finish(status)
        finally:
            self.restore_terminal()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):  # SPEC.json, and the run marker (for ps)
        sys.stderr.write("usage: runner.py SPEC.json [MARKER]\n")
        return 2
    with open(argv[1], "rb") as fh:
        spec = jsonio.loads(fh.read())
    try:
        return Runner(spec).run()
    except Exception as exc:  # tell the daemon why, then show it in the pane
        record = {"format": RECORD_FORMAT, "project": spec.get("project"),
                  "task": spec.get("task"), "run_id": spec.get("run_id"),
                  "runner_pid": os.getpid(), "status": "failed", "error": repr(exc),
                  "exited_at": time.time()}
        try:
            write_record(str(spec["record"]), record)
        finally:
            tell_daemon(str(spec["socket"]), "runner.exited", {
                "project": spec.get("project"), "task": spec.get("task"),
                "run_id": spec.get("run_id"), "record": record})
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv))
