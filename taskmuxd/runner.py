"""The runner: the foreground process of a task's tmux pane. Standard library only.

Run as ``python -I -S runner.py SPEC.json [MARKER]`` (the marker only names the run in the
process's command line). It starts the task's command in a new session on a pty, with
``TASKMUX_RUN=<marker>`` in its environment; relays output unchanged to the pane and,
ANSI-stripped with a UTC millisecond timestamp per line, to the task's log (rotated by size);
relays typed input and window size; records the task's identity (pid, start ticks, boot id),
exit status and exit time in the record file; and tells the daemon at once over ``ctl.sock``.
It decides nothing: it never restarts anything on its own. It carries out two kinds of the
daemon's decisions: a restart decided ahead (``rungrant``: when the daemon launched the run,
it granted the next one for an exit its policy restarts at once; the runner claims the grant,
records the new run write-ahead and starts it, reporting both runs in one message), and,
after a run that ended by itself with no grant, the daemon's order to run the task again in
the same pane (``runrelaunch``), which it waits for briefly. A restart that waits a backoff
may be granted then, with the hold order (a delayed grant, ``rungrant``): the runner holds
for the wait (a signal, the pane closing or another order ends the hold early), then claims
the grant and starts the run as for a grant given at the launch; a grant the daemon took
back meanwhile is not there to claim, and the runner waits briefly for its order instead.
The spec and the record are read and written only through ``runrecord``.

It owns the task's whole tree: as child subreaper (Linux) it inherits the orphans of the
tree and reaps them, and it finds the task's processes by their marker even when they left
its process group (among the processes born since the run began, ``pidwindow``; when the
daemon ends the run, a stop, it leaves that look to the daemon, which makes it once for every
run it ends together: ``projects.strangers``). However the run ends (the first process
exits, the pane closes, the pane cannot be written to, the runner is signalled), it stops
what remains of the tree with the task's own ladder (SIGINT, SIGTERM, SIGKILL,
``stop_grace_period`` apart) and only then records the exit: the task's real status, and
whether the tree ended clean.

It imports as little as it can (``_signal`` rather than ``signal``, ``posix`` rather than
``os`` (``runpath``), no ``pty``, no ``json``; ``rungrant`` and ``runwarm`` only once a run
ends) because one runs per task: its memory and its start-up CPU are multiplied by the number
of tasks (tests/test_runner_imports.py holds its start-up to a list of modules).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: no enum import
import _socket
import codecs
import errno
import posix as os  # not os: see runpath
import select
import sys
import termios
import time

sys.path.insert(0, __file__.rsplit("/", 2)[0])  # run as a script: its path is absolute
from taskmuxctl.core import jsonio  # after the path set-up above
from taskmuxd import pidwindow, proctree, reportwire, runpath, runrecord, runrelaunch
from taskmuxd.runending import listed as ending_listed
from taskmuxd.runready import RunReadiness
from taskmuxd.runrecord import RunRecord, RunSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

PARTIAL_FLUSH_SECONDS = 1.0
DRAIN_AFTER_EXIT_SECONDS = 0.5
DRAIN_LIMIT_SECONDS = 5.0
REAP_WAIT_SECONDS = 1.0  # for the first process's status once its tree is stopped
READ_SIZE = 65536
DEFAULT_GRACE = 10.0  # seconds per step of the stop ladder when the spec names none
ENDING_SIGNALS = (_signal.SIGHUP, _signal.SIGINT, _signal.SIGTERM, _signal.SIGQUIT)
SIGNAL_NAMES = {_signal.SIGHUP: "SIGHUP", _signal.SIGINT: "SIGINT", _signal.SIGTERM: "SIGTERM",
                _signal.SIGQUIT: "SIGQUIT", _signal.SIGKILL: "SIGKILL"}
ROUTES = {"exit": "its first process ended", "hangup": "the pane closed",
          "pane_write_failed": "the pane could not be written to"}


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
        self.on_line: Callable[[str], None] | None = None  # each line of the task's output
        runpath.makedirs(runpath.dirname(path))
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
            shown = [visible_line(x).rstrip() for x in lines]
            self.write_lines([f"{stamp} {x}\n" for x in shown])
            if self.on_line is not None:
                for x in shown:
                    self.on_line(x)
            if self.partial:
                self.partial_since = now

    def flush_partial(self, now: float, force: bool = False) -> None:
        """Write an unfinished line that has waited long enough (a prompt, a progress bar)."""
        if self.partial and (force or now - self.partial_since >= PARTIAL_FLUSH_SECONDS):
            line = visible_line(self.partial).rstrip()
            self.partial = ""
            if line:
                self.write(f"{self.stamp(now)} {line}\n")
                if self.on_line is not None:
                    self.on_line(line)

    def note(self, message: str) -> None:
        self.flush_partial(time.time(), force=True)
        self.write(f"{self.stamp(time.time())} [taskmux] {message}\n")

    def write(self, text: str) -> None:
        self.write_lines([text])

    dropped = 0  # lines lost to a full disk since the last line written
    dropped_reason = ""

    def write_lines(self, lines: list[str]) -> None:
        """Append whole lines, rotating between lines so no file passes ``max_size``.

        A full disk does not stop the task: lines that cannot be written are dropped and
        counted (a line cut short is taken back), and the first write that works again
        starts with a note saying how many were lost."""
        note = 0
        if self.dropped:
            lines = [f"{self.stamp(time.time())} [taskmux] {self.dropped} log line(s) were "
                     f"dropped: {self.dropped_reason}\n", *lines]
            note = 1
        chunk: list[bytes] = []
        chunk_size = 0
        written = 0
        try:
            for line in lines:
                data = line.encode("utf-8", "replace")
                if self.size + chunk_size + len(data) > self.max_size and (self.size or chunk):
                    if chunk:
                        _write_all(self.fd, b"".join(chunk))
                        self.size += chunk_size
                        written += len(chunk)
                        chunk, chunk_size = [], 0
                    self.rotate()
                chunk.append(data)
                chunk_size += len(data)
            if chunk:
                _write_all(self.fd, b"".join(chunk))
                self.size += chunk_size
                written += len(chunk)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            try:  # take back a partial line (never extend); reopen if a rotation was cut short
                if os.fstat(self.fd).st_size > self.size:
                    os.ftruncate(self.fd, self.size)
            except OSError:
                try:
                    self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                      | os.O_CLOEXEC, 0o600)
                    self.size = os.fstat(self.fd).st_size
                except OSError:
                    pass
            lost = len(lines) - written
            if note and not written:
                self.dropped += lost - note
            else:
                self.dropped = lost
            self.dropped_reason = exc.strerror or "no space left on device"
            return
        self.dropped = 0

    def rotate(self) -> None:
        os.close(self.fd)
        for i in range(self.max_files - 1, 0, -1):
            src = f"{self.path}.{i}"
            if runpath.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")
        stale = f"{self.path}.{self.max_files + 1}"
        if runpath.exists(stale):
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


IN_PLACE_MAX = 4096  # bytes of a record rewritten in place at most: one page
IN_PLACE_ROOM = 2048  # bytes a record file is padded to when it is replaced whole (in place)


def write_record(path: str, record: RunRecord, then: Callable[[], bool | None] | None = None,
                 sync: bool = True, in_place: bool = False) -> None:
    """Put ``record`` at ``path``, then run ``then`` (telling the daemon), then fsync it (with
    ``sync``) unless ``then`` says the daemon heard it (returns True).

    The daemon is told once the file says what the message says: a daemon killed from then
    on finds it there, and a later run's record can never be overwritten by this one. The
    record is replaced whole (a new file renamed into place) or, with ``in_place`` (the
    daemon checks sealed records: ``runrecord.sealed``), rewritten over the same file when
    there is one and the record fits in a page: no inode allocated or freed and no change to
    the ``run/`` folder, where the runners a stop ends would otherwise queue on its lock. A
    ``pwrite`` of one page is whole or not at all when the runner is killed (the kernel checks
    for a fatal signal between pages); a reader that catches it half written finds the seal
    broken and reads again.

    The fsync comes after the message, off the way from a task's exit to its restart: it
    matters only if the machine loses power within those milliseconds, when the run is over
    anyway and a torn record reads as none. A daemon that heard the report writes what it
    decided of it durably itself (the task's state, fsynced by its writer), so the fsync is
    left to it: a hundred runners a stop ends do not each force a journal commit; a report
    that did not reach it leaves the record the only voice, fsynced."""
    data = runrecord.sealed(record) + b"\n"
    fd = _rewrite(path, data) if in_place else None
    if fd is None:
        if in_place:  # room for the records to come, rewritten over it without growing
            data = _padded(data, min(IN_PLACE_MAX, max(IN_PLACE_ROOM, len(data) + 512)))
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            _discard(tmp)  # a full disk: the record in place stays, no temporary file behind
            raise
    try:
        heard = then() if then is not None else None
        if sync and heard is not True:
            os.fsync(fd)
    finally:
        os.close(fd)


def _padded(data: bytes, size: int) -> bytes:
    """``data`` (ending in a newline) padded with spaces to ``size`` bytes."""
    return data[:-1] + b" " * (size - len(data)) + b"\n" if len(data) < size else data


def _rewrite(path: str, data: bytes) -> int | None:
    """Write ``data`` over the record file at ``path`` in one ``pwrite``, padded with spaces
    to the file's length (never truncated, never grown: a full disk cannot cut it short);
    its descriptor, or None where it cannot be (no file yet, not a regular one, too small,
    more than a page): then it is replaced whole."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000 or not len(data) <= st.st_size <= IN_PLACE_MAX:
            os.close(fd)
            return None
        data = _padded(data, st.st_size)
        if os.pwrite(fd, data, 0) == len(data):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def stage_record(path: str, record: RunRecord) -> str:
    """Write ``record`` beside ``path`` (the temporary file ``write_record`` uses), to be
    put in place later by one rename; the temporary file's path."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, runrecord.sealed(record) + b"\n")
    except BaseException:
        _discard(tmp)
        raise
    finally:
        os.close(fd)
    return tmp


def _discard(tmp: str) -> None:
    """Remove the temporary file of a record write that failed (a full disk: the file was
    made, its bytes were not written), as ``atomic_write`` does."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


def tell_daemon(sock_path: str, method: str, params: dict[str, object]) -> bool:
    """A JSON-RPC notification through the report door (``reportwire``), else on ctl.sock;
    when the daemon is away, the record file speaks.
    Whether it was delivered."""
    msg = {"jsonrpc": "2.0", "method": method, "params": params}
    payload = (jsonio.dumps(msg) + "\n").encode()
    if reportwire.send(reportwire.door_of(sock_path), payload):  # no RPC stream at the daemon
        return True
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)
        sock.connect(sock_path)
        sock.sendall(payload)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def join_cgroup(path: object) -> str | None:
    """Move this runner into the task's cgroup (a delegated subtree only: the daemon passes a
    path only then), so that everything the task forks is born inside. None on failure."""
    if not path:
        return None
    try:
        fd = os.open(runpath.join(str(path), "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError:
        return None
    return str(path)


# -- the pty relay and the task's tree ---------------------------------------------------------


def default_marker(spec: RunSpec) -> str:
    """A marker when the daemon gave none: the state folder's inode stands in for the home id,
    so that two homes running the same project never take each other's processes."""
    try:
        home = format(os.stat(runpath.dirname(spec.socket)).st_ino, "x")
    except OSError:
        home = ""
    return f"?{home}:{spec.project}:{spec.task}:{spec.run_id}"


def signal_name(sig: int) -> str:
    return SIGNAL_NAMES.get(sig, str(sig))


def route_text(ended_by: str | None) -> str:
    if ended_by and ended_by.startswith("signal:"):
        return f"the runner got {ended_by[7:]}"
    return ROUTES.get(ended_by or "", str(ended_by))


class NextRun:
    """A run made ready before it begins: what ``Runner.begin`` sets up, and for a run
    granted with a wait, made during the wait (``Runner.ready_granted``), its environment
    (its NOTIFY_SOCKET bound) and its write-ahead record staged beside the record's file."""

    def __init__(self, spec: RunSpec, marker: str, log: LogWriter, record: RunRecord,
                 readiness: RunReadiness) -> None:
        self.spec, self.marker, self.log, self.record = spec, marker, log, record
        self.readiness = readiness
        self.env: dict[str, str] | None = None
        self.staged: str | None = None  # the record's temporary file, written, not renamed

    def discard(self) -> None:
        """Not taken up: undo what was made (the log's descriptor, the socket, the file)."""
        os.close(self.log.fd)
        self.readiness.close()
        if self.staged is not None:
            try:
                os.unlink(self.staged)
            except OSError:
                pass


def default_signals() -> None:
    """In a task's child before its exec: every signal at its default, none blocked, as a
    supervisor starts a service. Python ignores SIGPIPE and SIGXFSZ, and tmux (3.3) starts
    its panes with SIGTTIN and SIGTTOU ignored; an exec would keep them all ignored."""
    for sig in _signal.valid_signals():
        if _signal.getsignal(sig) == _signal.SIG_IGN:
            _signal.signal(sig, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())


class Runner:
    def __init__(self, spec: RunSpec, marker: str | None = None) -> None:
        self.tty_attrs: list[Any] | None = None
        self.wake_r, self.wake_w = os.pipe()
        self.pending_signals: list[int] = []
        self.pane_ok = True  # output still goes to the pane
        self.stdin_open = True
        self.listener: _socket.socket | None = None  # for relaunch orders (``runrelaunch``)
        self.listen_path, self.listen_inode = "", 0
        self.cgroup: str | None = None
        self.subreaper = False
        self.begin(spec, marker)

    def ready(self, spec: RunSpec, marker: str | None = None) -> NextRun:
        """A run made ready to begin, the current one left as it is."""
        marker = spec.marker or marker or default_marker(spec)
        log = LogWriter(spec.log, spec.log_max_size, spec.log_max_files)
        record = RunRecord(
            project=spec.project, task=spec.task, run_id=spec.run_id, runner_pid=os.getpid(),
            runner_start=proctree.start_ticks(os.getpid()), boot_id=proctree.boot_id(),
            marker=marker, subreaper=self.subreaper, status="starting", cgroup=self.cgroup)
        return NextRun(spec, marker, log, record, RunReadiness(spec, record, log.note))

    def begin(self, spec: RunSpec, marker: str | None = None,
              made: NextRun | None = None) -> None:
        """Take up a run: the first, one the daemon ordered in place, or one ``made`` ready
        ahead."""
        made = made or self.ready(spec, marker)
        self.spec = spec = made.spec
        self.record_path = spec.record
        self.socket_path = spec.socket
        self.marker = made.marker
        self.grace = max(spec.stop_grace_period, 0.0)
        old_log: LogWriter | None = getattr(self, "log", None)
        if old_log is not None:
            os.close(old_log.fd)
            self.forget_typed()
        self.log, self.record, self.env = made.log, made.record, made.env
        self.pid = 0
        self.master = -1
        self.main_status: int | None = None  # the wait status of the task's first process
        self.main_ended: float | None = None  # when it was reaped (wall clock): the exit
        self.marker_looked = False  # whether this run's end looked for its marker yet
        self.daemon_ends = False  # the daemon said it ends this run (``spec.ending``)
        self.born: pidwindow.Mark | None = None  # just before the task was forked
        self.strangers: list[proctree.ProcId] = []  # marked ones that look found outside
        self.ended_by: str | None = None  # the first route by which this run began to end
        self.master_open = False
        self.last_output = 0.0  # monotonic time of the task's last output
        self.readiness = made.readiness
        self.log.on_line = self.readiness.on_line

    told = False  # whether the last report reached the daemon

    def notify(self, method: str) -> bool:
        """Report the run to the daemon; whether it heard (``told``)."""
        self.told = tell_daemon(self.socket_path, method, {
            "project": self.spec.project, "task": self.spec.task,
            "run_id": self.spec.run_id, "record": runrecord.to_json(self.record)})
        return self.told

    @staticmethod
    def run_env(spec: RunSpec, marker: str, readiness: RunReadiness) -> dict[str, str]:
        """The run's environment, its NOTIFY_SOCKET bound."""
        env = dict(spec.env)
        env[proctree.MARKER_VAR] = marker  # inherited by all it starts: found by marker
        readiness.open(env)
        return env

    env: dict[str, str] | None = None  # the run's environment, when made ready ahead

    def spawn(self) -> None:
        shell = self.spec.shell
        argv = [shell, "-c", self.spec.command]
        env, self.env = self.env, None
        if env is None:
            env = self.run_env(self.spec, self.marker, self.readiness)
        else:  # made ready during a hold: the run begins now
            self.readiness.begins(time.monotonic())
        cwd = self.spec.cwd
        self.born = pidwindow.mark()  # strangers of this run can only be born after it
        pid, master = os.forkpty()
        if pid == 0:  # the task's side: a new session whose controlling terminal is the pty
            try:
                default_signals()
                os.chdir(cwd)
                os.execve(shell, argv, env)
            except OSError as exc:
                os.write(2, f"taskmux: cannot run {argv!r} in {cwd}: {exc}\r\n".encode())
            os._exit(127)
        self.pid, self.master, self.master_open = pid, master, True
        rec = self.record
        rec.pid, rec.pgid, rec.pid_start = pid, pid, proctree.start_ticks(pid)
        rec.started_at, rec.status = time.time(), "running"
        # Not fsynced: a daemon killed (kill -9, an update) reads it from the page cache, which
        # outlives any process; only a power loss could lose it, and that ends this run too
        # (its successor finds the run gone by the boot id; a torn record reads as none).
        write_record(self.record_path, self.record, lambda: self.notify("runner.started"),
                     sync=False, in_place=self.spec.record_in_place)
        self.log.note(f"started (pid {pid}): {self.spec.command}")

    def setup_signals(self) -> None:
        for sig in (_signal.SIGWINCH, _signal.SIGCHLD, *ENDING_SIGNALS):
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
        if self.tty_attrs is not None and self.pane_ok:
            try:
                termios.tcsetattr(0, termios.TCSAFLUSH, self.tty_attrs)
            except (termios.error, OSError):
                pass

    def copy_window_size(self) -> None:
        try:  # termios's own calls (Python 3.11): no ``fcntl`` to load for two ioctls
            termios.tcsetwinsize(self.master, termios.tcgetwinsize(0))
        except (termios.error, OSError):
            pass

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending_signals.append(signum)

    def end(self, route: str) -> None:
        """Note why this run ends; the first route wins."""
        if self.ended_by is None:
            self.ended_by = route

    def handle_signals(self) -> None:
        while self.pending_signals:
            sig = self.pending_signals.pop(0)
            if sig == _signal.SIGWINCH:
                self.copy_window_size()
            elif sig == _signal.SIGHUP:  # the pane is gone (tmux kill-window / kill-server)
                self.pane_ok = False
                self.end("hangup")
            elif sig != _signal.SIGCHLD:  # SIGCHLD only wakes the loop, which reaps
                self.end(f"signal:{signal_name(sig)}")

    def reap(self) -> None:
        """Collect every child that ended: the task's first process, and orphans of its tree
        that came to the runner as their subreaper."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.main_status, self.main_ended = status, time.time()

    def pump(self, timeout: float | None) -> None:
        """One turn of the relay: wait up to ``timeout`` for output, input or a signal."""
        readers = [self.wake_r]
        watching = self.ended_by is None  # readiness and the watchdog, while the run lasts
        notify_fd = self.readiness.fileno() if watching else None
        if notify_fd is not None:
            readers.append(notify_fd)
        if watching:
            wake = self.readiness.timeout(time.monotonic())
            if wake is not None:
                timeout = wake if timeout is None else min(timeout, wake)
        if self.master_open:
            readers.append(self.master)
        if self.stdin_open and self.pane_ok:
            readers.append(0)
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
            self.relay_output(now)
        if 0 in ready:
            self.relay_input()
        self.log.flush_partial(now)
        if watching:
            if notify_fd is not None and notify_fd in ready:
                self.readiness.readable()
            if self.readiness.tick(time.monotonic()):
                self.report()
        self.reap()

    def report(self) -> None:
        """Readiness, the watchdog or the status changed: record it, tell the daemon. A record
        that cannot be written (a full disk) does not stop the task: the daemon still hears."""
        try:
            write_record(self.record_path, self.record, in_place=self.spec.record_in_place)
        except OSError as exc:
            self.log.note(f"cannot write the run's record: {exc.strerror or exc}")
        self.notify("runner.notify")

    def pump_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.pump(left)

    def relay_output(self, now: float) -> None:
        try:
            data = os.read(self.master, READ_SIZE)
        except OSError:  # EIO: every holder of the pty's other side is gone
            data = b""
        if not data:
            self.master_open = False
            return
        self.last_output = time.monotonic()
        if self.pane_ok:
            try:
                _write_all(1, data)
            except OSError as exc:  # EIO, EPIPE, ENXIO: the pane is gone; the log goes on
                self.pane_ok = False
                self.end("pane_write_failed")
                self.log.note("output no longer goes to the pane: "
                              + errno.errorcode.get(exc.errno or 0, str(exc)))
        self.log.feed(data, now)

    def relay_input(self) -> None:
        try:
            data = os.read(0, READ_SIZE)
        except OSError:
            data = b""
        if not data:
            self.stdin_open = False
        elif self.master_open:
            try:
                _write_all(self.master, data)
            except OSError:
                pass

    def tree_ids(self) -> list[proctree.ProcId]:
        """The task's processes now: every descendant of the runner (a child that cleared its
        environment cannot leave the subreaper's tree), the members of its cgroup, and those
        carrying its marker.

        The tree is walked down from the runner (``proctree.tree``), at a cost that grows
        with the task, not with the machine. The marker needs a read of every process's
        environment, so it is looked for only where it may find what the walk cannot:
        processes outside the runner's tree that carry the run's marker. While the runner is
        the tree's subreaper nothing of the tree can leave it, so the only such processes
        are those started outside it on the task's behalf (by a program the task asked);
        they are looked for once when the run ends, and again at each step only when that
        first look found some, and only among the processes born since the run began
        (``pidwindow``). Where the runner is not the subreaper (no ``prctl``),
        orphans go to init: then every step looks for the marker, as for the walk where the
        kernel lists no children (``descendants`` scans every process)."""
        me = os.getpid()
        walked = proctree.tree(me)
        ids = set(walked if walked is not None else proctree.descendants(me))
        ids.update(self.group_members())
        if self.daemon_ends and self.subreaper and walked is not None:
            return list(ids)  # the daemon looks for this run's strangers (see finish)
        if not self.subreaper or walked is None or not self.marker_looked or self.strangers:
            self.marker_looked = True
            marked = proctree.find_marked(self.marker, exact=True, since=self.born)
            self.strangers = [p for p in marked if p not in ids]
            ids.update(marked)
        return list(ids)

    def group_members(self) -> list[proctree.ProcId]:
        """The members of the task's cgroup (where one was delegated), the runner aside."""
        group = self.record.cgroup
        if not group:
            return []
        try:
            with open(runpath.join(str(group), "cgroup.procs"), "rb") as fh:
                pids = [int(x) for x in fh.read().split()]
        except (OSError, ValueError):
            return []
        me = os.getpid()
        return [p for p in map(proctree.procid, pids) if p is not None and p.pid != me]

    def stop_tree(self, wait: Callable[[float], None]) -> bool:
        """Stop whatever remains of the task with its own ladder; whether nothing remains."""
        def step(sig: int, count: int) -> None:
            if count:
                self.log.note(f"{route_text(self.ended_by)}: sent {signal_name(sig)} to "
                              f"{count} of the task's processes")

        if not proctree.AVAILABLE:
            return self.stop_group(wait)
        return proctree.stop_ladder(self.tree_ids, self.grace, step, wait)

    def stop_group(self, wait: Callable[[float], None]) -> bool:
        """Without /proc: the ladder to the task's process group, which is provably the task's
        while its first process is not yet reaped. Whether anything else remains is unknown."""
        for sig, limit in ((_signal.SIGINT, self.grace), (_signal.SIGTERM, self.grace),
                           (_signal.SIGKILL, proctree.KILL_WAIT)):
            if self.main_status is not None:
                break
            try:
                os.killpg(self.pid, sig)
            except OSError:
                break
            deadline = time.monotonic() + limit
            while self.main_status is None and time.monotonic() < deadline:
                wait(proctree.POLL)
        return False

    def drain(self) -> None:
        """Relay what the task's last processes left in the pty, until it is closed or quiet
        (or ``DRAIN_LIMIT_SECONDS`` passed: something outside the task may hold it)."""
        start = time.monotonic()
        while self.master_open:
            now = time.monotonic()
            left = min(max(self.last_output, start) + DRAIN_AFTER_EXIT_SECONDS,
                       start + DRAIN_LIMIT_SECONDS) - now
            if left <= 0:
                break
            self.pump(left)

    def finish(self, clean: bool) -> int:
        status = self.main_status
        code: int | None = None
        sig: int | None = None
        if status is None:
            what = "could not be stopped"
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            what = f"killed by signal {sig}"
        else:
            code = os.waitstatus_to_exitcode(status)
            what = f"exited with code {code}"
        if self.ended_by != "exit":
            what += f" ({route_text(self.ended_by)})"
        if not clean:
            what += "; some of its processes may remain"
        self.log.note(what)
        rec = self.record
        rec.status, rec.exit_code, rec.exit_signal = "exited", code, sig
        # The exit is when the first process ended (a hold's wait counts from it, covering
        # the stop of the rest of the tree); when it could not be stopped, now.
        rec.exited_at = self.main_ended if status is not None else time.time()
        rec.tree_clean, rec.ended_by = clean, self.ended_by
        rec.unscanned = self.daemon_ends and self.subreaper
        self.clean = clean
        self.granted = self.claim_grant(code, sig)
        if self.granted is not None:  # run N+1 now, on the daemon's grant: one report
            os.close(self.master)
            self.readiness.close()
            return code if code is not None else 128 + (sig or 0)
        if self.offers_relaunch():  # the daemon may order the next run here (``runrelaunch``)
            self.record.relaunch = self.spec.relaunch_socket
        write_record(self.record_path, self.record, lambda: self.notify("runner.exited"),
                     in_place=self.spec.record_in_place)
        os.close(self.master)
        self.readiness.close()
        return code if code is not None else 128 + (sig or 0)

    def run(self) -> int:
        self.cgroup = self.record.cgroup = join_cgroup(self.spec.cgroup)
        self.setup_signals()
        self.subreaper = self.record.subreaper = proctree.set_child_subreaper()
        self.listen()
        first = True
        try:
            while True:
                code = self.run_once(first)
                first = False
                if self.granted is not None:
                    self.begin_granted(self.granted)
                elif not self.relaunch():
                    return code
        finally:
            self.restore_terminal()
            if self.listener is not None:
                runrelaunch.unbind(self.listener, self.listen_path, self.listen_inode)

    def run_once(self, first: bool) -> int:
        """One run of the task, from its start to its recorded and reported exit."""
        self.spawn()
        if first:
            self.setup_terminal()
        else:
            self.copy_window_size()
        while self.ended_by is None:
            self.pump(PARTIAL_FLUSH_SECONDS if self.log.partial else None)
            if self.main_status is not None:
                self.end("exit")
        # The daemon ends this run (a stop): it looks for the strangers of every run it
        # ends at once, in one pass, rather than each runner (``projects.strangers``).
        self.daemon_ends = ending_listed(self.spec.ending, self.spec.task, self.spec.run_id)
        clean = self.stop_tree(self.pump_for)
        deadline = time.monotonic() + REAP_WAIT_SECONDS
        while self.main_status is None and time.monotonic() < deadline:
            self.pump(proctree.POLL)  # ended, perhaps not yet reaped
        self.drain()
        return self.finish(clean)

    # -- relaunch in place (``runrelaunch``): the daemon decides, the runner obeys ---------

    def listen(self) -> None:
        if self.spec.relaunch_socket:
            bound = runrelaunch.bind(self.spec.relaunch_socket)
            if bound is not None:
                self.listener, self.listen_inode = bound
                self.listen_path = self.spec.relaunch_socket

    clean = False  # whether the last run's whole tree is known to be gone

    def offers_relaunch(self) -> bool:
        """Whether to offer the daemon a relaunch in place: the run ended by itself, all of
        it is gone, and the pane is still there."""
        return (self.listener is not None and self.ended_by == "exit" and self.pane_ok
                and self.clean)

    granted: RunSpec | None = None  # the next run, granted ahead by the daemon (rungrant)

    def claim_grant(self, code: int | None, sig: int | None) -> RunSpec | None:
        """The next run's spec when the daemon granted it ahead (see ``rungrant``) and this
        run ended as the grant says: by itself, its whole tree gone, the pane there."""
        if not (self.spec.grant and self.ended_by == "exit" and self.pane_ok and self.clean) \
                or self.daemon_ends:
            return None
        from taskmuxd import rungrant  # only for a grant: not on the runner's start or stop

        return self.granted_spec(rungrant.claim(self.spec.grant, self.spec.run_id + 1, code, sig))

    def granted_spec(self, marker: str | None) -> RunSpec | None:
        """The spec of the run a claimed grant names: this run's, the next run id."""
        if marker is None:
            return None
        data = runrecord.to_json(self.spec)
        data.update(run_id=self.spec.run_id + 1, marker=marker)
        return runrecord.spec_from_json(data)

    def forget_typed(self) -> None:
        """Keys typed into the pane while no run was there (a warm wait, a hold) are not the
        next run's input, as they are not a fresh pane's when tmux respawns it."""
        if self.stdin_open and self.pane_ok:
            try:
                termios.tcflush(0, termios.TCIFLUSH)
            except (termios.error, OSError):
                pass

    def begin_granted(self, spec: RunSpec, made: NextRun | None = None) -> None:
        """Take up the granted run (``made`` ready during a hold, its record staged): record
        it, with how the last one ended, before forking (a daemon killed from here on finds
        it), so that it is started exactly once."""
        ended, self.granted = self.record, None
        staged = made.staged if made is not None else None
        self.begin(spec, made=made)
        # In place before the fork, not fsynced: the next write (the run started) replaces
        # it within milliseconds and is fsynced (a machine that loses power ends both runs).
        if staged is not None:
            os.replace(staged, self.record_path)
            return
        rec = self.record
        rec.after_run, rec.after_code, rec.after_signal = \
            ended.run_id, ended.exit_code, ended.exit_signal
        rec.after_at = ended.exited_at
        write_record(self.record_path, rec, sync=False, in_place=self.spec.record_in_place)

    held: NextRun | None = None  # the run granted with a wait, made ready during the hold
    slack = False  # whether the timer slack is the hold's (1 ns), not the inherited one

    def ready_granted(self) -> None:
        """During a hold with a delayed grant: make the granted run ready (its spec, log,
        record, environment, its write-ahead record staged), so that its claim at the hold's
        end is followed by the rename and the fork alone. Nothing of it is in place before
        the claim; the grant is only read (``rungrant.peek``), not claimed."""
        from taskmuxd import rungrant  # not on the runner's start-up

        spec = self.granted_spec(rungrant.peek(rungrant.beside(self.listen_path),
                                               self.spec.run_id + 1))
        if spec is None:
            return
        try:
            made = self.ready(spec)
        except OSError:
            return  # made at the claim, as without a hold
        self.held = made
        ended, rec = self.record, made.record
        rec.after_run, rec.after_code, rec.after_signal = \
            ended.run_id, ended.exit_code, ended.exit_signal
        rec.after_at = ended.exited_at
        made.env = self.run_env(spec, made.marker, made.readiness)
        try:
            made.staged = stage_record(spec.record, rec)
        except OSError:
            self.drop_held()

    def take_held(self, marker: str | None) -> NextRun | None:
        """The run made ready during the hold, if it is the one claimed (its ``marker``,
        which names the run); else it is undone."""
        made, self.held = self.held, None
        if made is not None and marker is not None and made.marker == marker:
            return made
        if made is not None:
            made.discard()
        return None

    def drop_held(self) -> None:
        made, self.held = self.held, None
        if made is not None:
            made.discard()

    def relaunch(self) -> bool:
        """Wait for the daemon's order (see ``runrelaunch``); whether a new run was taken up.
        """
        if not (self.offers_relaunch() and self.told) or self.listener is None:
            return False  # a daemon that did not hear the exit report would never answer
        ended = False

        def woken() -> bool:
            nonlocal ended
            try:
                os.read(self.wake_r, 512)
            except BlockingIOError:
                pass
            # The pane closing, or a signal (the daemon's SIGTERM: "finish"), ends the wait.
            ending = any(sig in ENDING_SIGNALS for sig in self.pending_signals)
            self.handle_signals()
            ended = ending or not self.pane_ok
            return ended

        try:
            got = self.hold(woken, lambda: ended)
        finally:
            self.drop_held()  # made ready for a claim that did not come
            if self.slack:  # before any fork: a run inherits the usual slack
                proctree.timer_slack(0)
                self.slack = False
        if got is None or isinstance(got, bool):
            return bool(got)
        order, conn = got
        spec = self.relaunch_spec(order)
        if spec is None:
            runrelaunch.answer(conn, False)
            return False
        if not runrelaunch.answer(conn, True):
            return False  # the daemon did not hear yes: it launches the usual way
        self.begin(spec)
        return True

    def hold(self, woken: Callable[[], bool], ended: Callable[[], bool]
             ) -> bool | tuple[dict[str, object], _socket.socket] | None:
        """Wait for the daemon's orders, holding as told; True once the run granted with a
        wait has begun, else the order that ends the wait (to obey or refuse), or None."""
        from taskmuxd import rungrant, runwarm  # not on the runner's start-up

        assert self.listener is not None
        until, delayed = time.monotonic() + runrelaunch.WAIT_SECONDS, False
        while True:
            got = runrelaunch.wait_order(self.listener, until - time.monotonic(), self.wake_r,
                                         woken)
            if got is None and delayed and not ended() and self.pane_ok:
                # The hold with a delayed grant is over: claim it (``rungrant``).
                marker = rungrant.claim(rungrant.beside(self.listen_path),
                                        self.spec.run_id + 1, self.record.exit_code,
                                        self.record.exit_signal)
                made = self.take_held(marker)
                spec = made.spec if made is not None else self.granted_spec(marker)
                if spec is not None:
                    self.begin_granted(spec, made)
                    return True
                # Taken back: an order comes.
                until, delayed = time.monotonic() + runrelaunch.WAIT_SECONDS, False
                continue
            if got is None:
                return None
            order, conn = got
            self.drop_held()  # any order ends a hold; a new one with a grant makes it again
            end = runrelaunch.hold_until(order, time.monotonic())
            delayed = end is not None and rungrant.held(order)
            if end is None and (warm := runwarm.warm_seconds(order)) is not None:
                runwarm.show(self.pane_ok, self.spec.task, warm)  # stopped: stays, idle
                end = time.monotonic() + warm
            if end is None:
                return order, conn
            until = end  # the daemon's restart comes later: wait until then instead
            runrelaunch.answer(conn, True)
            if delayed:
                self.ready_granted()
                self.slack = proctree.timer_slack(1)  # its end on time (``timeout_for``)

    def relaunch_spec(self, order: dict[str, object]) -> RunSpec | None:
        """The spec an order names, when it is one to obey: the same task, a later run."""
        from taskmuxd import runwarm  # not on the runner's start-up

        path = order.get("spec")
        if order.get("finish") or not isinstance(path, str):
            return None
        inline = order.get("spec_json")  # the spec itself, when it fits in the order
        try:
            spec = runrecord.spec_from_json(inline) if isinstance(inline, dict) \
                else runrecord.read_spec(path)
        except (OSError, ValueError) as exc:  # FormatError included: refused, and said why
            self.log.note(f"relaunch refused: {exc}")
            return None
        if spec.project != self.spec.project or spec.task != self.spec.task \
                or spec.run_id != order.get("run") or spec.run_id <= self.spec.run_id \
                or not runwarm.same_runner(self.spec, spec):
            return None
        return spec

    def stop_after_failure(self) -> bool:
        """The runner itself failed: still stop the task's tree before saying so."""
        if not self.pid:
            return True

        def wait(seconds: float) -> None:
            time.sleep(seconds)
            self.reap()

        try:
            return self.stop_tree(wait)
        except Exception:
            return False


def main(argv: list[str]) -> int:
    # argv[2], the run's marker, names the run in this process's command line.
    if len(argv) not in (2, 3):
        sys.stderr.write("usage: runner.py SPEC.json [MARKER]\n")
        return 2
    spec = runrecord.read_spec(argv[1])
    runner = None
    try:
        runner = Runner(spec, argv[2] if len(argv) == 3 else None)
        return runner.run()
    except Exception as exc:  # stop the task, tell the daemon why, then show it in the pane
        record = RunRecord(project=spec.project, task=spec.task, run_id=spec.run_id,
                           runner_pid=os.getpid())
        if runner is not None:
            record = runner.record
            record.tree_clean = runner.stop_after_failure()
            record.ended_by = "runner_error"
            if runner.main_status is not None:  # the task's own status, when known
                status = runner.main_status
                signalled = os.WIFSIGNALED(status)
                record.exit_code = None if signalled else os.waitstatus_to_exitcode(status)
                record.exit_signal = os.WTERMSIG(status) if signalled else None
        record.status, record.error, record.exited_at = "failed", repr(exc), time.time()
        record.relaunch = None
        try:
            write_record(spec.record, record, in_place=spec.record_in_place)
        finally:
            tell_daemon(spec.socket, "runner.exited", {
                "project": spec.project, "task": spec.task, "run_id": spec.run_id,
                "record": runrecord.to_json(record)})
        raise


def exit_now(code: int) -> None:
    """End the runner with ``code`` without the interpreter's teardown (freeing every module
    and object: about 2 ms of CPU, paid by each of a hundred runners a stop ends). Nothing
    is lost: the runner writes through descriptors, has no ``atexit`` work, and its record
    and log are complete (and the record fsynced) before ``main`` returns."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_now(main(sys.argv))
