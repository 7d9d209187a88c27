"""``--host ssh://[user@]box[:port]``: the daemon of another machine, through OpenSSH.

The system's ``ssh`` runs ``taskmuxctl dial-stdio`` over there, so the same JSON-RPC lines
go through the ssh channel instead of ``ctl.sock``. ssh does the rest as the user set it up:
``~/.ssh/config``, keys, the agent, jump hosts. taskmux adds a control socket of its own
(``ControlMaster=auto`` with ``ControlPersist``) so that calls in a row share one
connection, ``BatchMode`` so that nothing waits for a password or a host-key question, and a
``ConnectTimeout`` so that a machine that is down fails fast. Whatever goes wrong ends as one
``DaemonUnavailable`` saying what happened and what to do; nothing here raises OSError.

``TASKMUX_SSH_COMMAND`` replaces ``ssh`` (words split as a shell would, like
``GIT_SSH_COMMAND``), e.g. ``ssh -F ~/.ssh/other_config``.
"""

from __future__ import annotations

import os

from taskmuxctl.core.protocol import PROTOCOL_VERSION, Code

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    import subprocess
    from typing import Any

    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.protocol import DaemonUnavailable

SCHEME = "ssh://"
FORM = "ssh://[USER@]HOST[:PORT]"
CONNECT_TIMEOUT = 10  # seconds; TASKMUX_SSH_CONNECT_TIMEOUT changes it
CONTROL_PERSIST = 60  # seconds an idle shared connection stays open
REMOTE_PROGRAM = "taskmuxctl"
# ssh's own exit status for its failures (connection, authentication, host key).
SSH_FAILED = 255
EXIT_NOT_FOUND = 127  # the remote shell found no such program
EXIT_PROTOCOL = 3  # taskmuxctl.commands.remote.EXIT_PROTOCOL


class Target:
    """A parsed ``ssh://`` address."""

    __slots__ = ("host", "port", "text", "user")

    def __init__(self, text: str, host: str, user: str | None, port: int | None) -> None:
        self.text = text
        self.host = host
        self.user = user
        self.port = port

    @property
    def ssh_words(self) -> str:
        """How to reach it with plain ssh, for the hints in messages."""
        port = f"-p {self.port} " if self.port is not None else ""
        user = f"{self.user}@" if self.user is not None else ""
        return f"{port}{user}{self.host}"

    @property
    def known_hosts_name(self) -> str:
        """The host as known_hosts writes it (``[host]:port`` off port 22)."""
        return f"'[{self.host}]:{self.port}'" if self.port not in (None, 22) else self.host

    @property
    def label(self) -> str:
        return self.text[len(SCHEME):] if self.text.startswith(SCHEME) else self.text


def _bad(text: str, why: str) -> Exception:
    from taskmuxctl.core.result import EXIT_USAGE, CommandError

    return CommandError(f"--host {text!r}: {why}; give it as {FORM} (the user and port are "
                        "optional; ~/.ssh/config may name the host)", Code.USAGE,
                        {"host": text}, exit_code=EXIT_USAGE)


def parse_target(text: str) -> Target:
    """``ssh://[user@]host[:port]`` (an IPv6 address in brackets); a usage error otherwise."""
    if not text.startswith(SCHEME):
        raise _bad(text, "only ssh:// addresses are supported")
    rest = text[len(SCHEME):].rstrip("/")
    if "/" in rest or "?" in rest or "#" in rest:
        raise _bad(text, "an ssh address has no path")
    user: str | None = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not user:
            raise _bad(text, "the user before @ is empty")
    port: int | None = None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise _bad(text, "an unclosed [ in the address")
        host, tail = rest[1:end], rest[end + 1:]
        if tail and not tail.startswith(":"):
            raise _bad(text, "unexpected text after ]")
        port_text = tail[1:] if tail else None
    else:
        host, _, port_text = rest.partition(":")
        port_text = port_text or None
        if rest.endswith(":"):
            raise _bad(text, "the port after : is empty")
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise _bad(text, f"the port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise _bad(text, "the host name is missing or malformed")
    return Target(text, host, user, port)


def control_dir(paths: Paths) -> str:
    """Where the shared connections' sockets live: private, and short enough for AF_UNIX."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = (os.path.join(runtime, "taskmux-ssh") if runtime and os.path.isdir(runtime)
              else os.path.join(paths.home, "ssh"))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


def connect_timeout() -> int:
    text = os.environ.get("TASKMUX_SSH_CONNECT_TIMEOUT", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else CONNECT_TIMEOUT


def ssh_base(paths: Paths, target: Target, tty: bool = False) -> list[str]:
    """The ``ssh`` words up to the host (the remote command comes after)."""
    custom = os.environ.get("TASKMUX_SSH_COMMAND", "").strip()
    if custom:
        import shlex

        words = shlex.split(custom)
    else:
        words = ["ssh"]
    words += [
        "-t" if tty else "-T",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={connect_timeout()}",
        "-o", "ControlMaster=auto",
        "-o", f"ControlPath={os.path.join(control_dir(paths), '%C')}",
        "-o", f"ControlPersist={CONTROL_PERSIST}",
    ]
    if target.port is not None:
        words += ["-p", str(target.port)]
    if target.user is not None:
        words += ["-l", target.user]
    return [*words, "--", target.host]


def _stderr_file(paths: Paths) -> int:
    """An unnamed file for ssh's stderr. Not a pipe: the shared connection ssh leaves
    running keeps its copy open, and a pipe would then never end."""
    folder = control_dir(paths)
    path = os.path.join(folder, f"stderr-{os.getpid()}-{os.urandom(6).hex()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_TRUNC, 0o600)
    os.unlink(path)
    return fd


def _prepare(paths: Paths, target: Target) -> int:
    """The control folder and ssh's stderr file; a folder that cannot be made is said."""
    try:
        return _stderr_file(paths)
    except OSError as exc:
        from taskmuxctl.core.protocol import DaemonUnavailable

        raise DaemonUnavailable(
            Code.DAEMON_UNREACHABLE, "no_ssh",
            f"cannot prepare ssh for --host {target.label}: {exc.strerror} "
            f"({exc.filename}); make that folder writable, or set TASKMUX_HOME or "
            "XDG_RUNTIME_DIR to one that is") from None


def _read_stderr(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _read_bounded(fd: int, limit: int, tail: bool) -> str:
    """At most ``limit`` bytes of the file: its start, or its end (``tail``)."""
    size = os.fstat(fd).st_size
    os.lseek(fd, max(0, size - limit) if tail else 0, os.SEEK_SET)
    chunks, left = [], limit
    while left > 0 and (chunk := os.read(fd, min(65536, left))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def explain(target: Target, returncode: int, stderr: str) -> DaemonUnavailable:
    """The one error for a failed ssh transport: what went wrong and what to do."""
    from taskmuxctl.core.protocol import DaemonUnavailable

    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()
             and not ln.startswith("Warning: Permanently added")]
    said = lines[-1] if lines else ""
    low = stderr.lower()
    host = target.label
    data_reason = "ssh_failed"
    if "host key verification failed" in low or "remote host identification has changed" in low:
        data_reason = "host_key"
        msg = (f"{host}: ssh could not verify the host key (unknown, or not the one on record "
               "in known_hosts); check the machine's key, then add it with `ssh "
               f"{target.ssh_words}` once, or if it was reinstalled remove the old one with "
               f"`ssh-keygen -R {target.known_hosts_name}`")
    elif "permission denied" in low and returncode == SSH_FAILED:
        data_reason = "auth"
        msg = (f"{host}: ssh could not log in ({said}); load a key the machine accepts into "
               "your agent or name it in ~/.ssh/config (taskmux never asks for a password)")
    elif returncode == SSH_FAILED and any(word in low for word in (
            "connection refused", "timed out", "no route to host", "could not resolve",
            "name or service not known", "network is unreachable", "connection closed",
            "connection reset", "temporary failure in name resolution")):
        data_reason = "unreachable"
        msg = (f"{host} is unreachable ({said}); check that the machine is up, that sshd "
               "listens there, and the host name and port")
    elif returncode == EXIT_NOT_FOUND or "command not found" in low or (
            "not found" in low and REMOTE_PROGRAM in low):
        data_reason = "no_taskmux"
        msg = (f"{host} has no `{REMOTE_PROGRAM}` on the PATH of a non-interactive ssh "
               "session; install taskmux there, or put it on the PATH that ssh's non-login "
               "shell gets (where the shell's rc or sshd's SetEnv set it)")
    elif "dial-stdio" in low and ("unknown command" in low or "invalid choice" in low):
        data_reason = "too_old"
        msg = (f"{host} runs a taskmux too old to be driven with --host (no `dial-stdio`); "
               f"update it there with `ssh {target.ssh_words} taskmux update`")
    elif returncode == EXIT_PROTOCOL and "protocol" in low:
        data_reason = "protocol"
        msg = f"{host}: {said.split('error: ', 1)[-1]}"
    elif returncode == SSH_FAILED:
        msg = (f"{host}: ssh failed ({said or 'no message'}); try `ssh {target.ssh_words}` to see "
               "why")
    else:
        text = said.split("error: ", 1)[-1] if said else f"exit status {returncode}"
        return DaemonUnavailable(Code.DAEMON_UNREACHABLE, "remote",
                                 f"{host}: {text}")
    return DaemonUnavailable(Code.DAEMON_UNREACHABLE, data_reason, msg)


class Channel:
    """``ssh HOST taskmuxctl dial-stdio``, with a socket's ``sendall``/``recv``/``close``."""

    def __init__(self, paths: Paths, target: Target, timeout: float,
                 no_daemon_start: bool = False) -> None:
        import subprocess

        self.target = target
        self.timeout = timeout
        # The first answer may wait for ssh to connect; give that its own allowance.
        self._first = True
        self._connect_timeout = connect_timeout()
        remote = [REMOTE_PROGRAM, "dial-stdio", "--protocol", str(PROTOCOL_VERSION)]
        if no_daemon_start:
            remote.insert(1, "--no-daemon-start")
        self._err = _prepare(paths, target)
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [*ssh_base(paths, target), *remote], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._err)
        except OSError as exc:
            os.close(self._err)
            from taskmuxctl.core.protocol import DaemonUnavailable

            raise DaemonUnavailable(
                Code.DAEMON_UNREACHABLE, "no_ssh",
                f"cannot run ssh for --host {target.label} ({exc.strerror}); install the "
                "OpenSSH client, or set TASKMUX_SSH_COMMAND") from None
        self._out = self.proc.stdout.fileno()  # type: ignore[union-attr]

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def _failure(self) -> Exception:
        """Why the channel ended: wait (briefly) for ssh, then read what it said."""
        import subprocess

        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return explain(self.target, code, _read_stderr(self._err))

    def sendall(self, data: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            stdin.flush()
        except (BrokenPipeError, ConnectionResetError, ValueError):
            raise self._failure() from None

    def recv(self, size: int) -> bytes:
        import select

        wait = max(self.timeout, self._connect_timeout + 5) if self._first else self.timeout
        self._first = False
        ready, _, _ = select.select([self._out], [], [], wait)
        if not ready:
            from taskmuxctl.core.protocol import DaemonUnavailable

            raise DaemonUnavailable(
                Code.DAEMON_TIMEOUT, "timeout",
                f"{self.target.label} did not answer within {wait:g}s; check the "
                f"machine with `ssh {self.target.ssh_words} taskmux daemon status`")
        data = os.read(self._out, size)
        if data:
            return data
        err = self._failure()
        if self.proc.returncode == 0:
            return b""
        raise err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        import subprocess

        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        # ssh ends its stdout as it exits: wait for that on the descriptor (woken at once)
        # rather than in subprocess's polling wait.
        import select

        deadline = 5.0
        try:
            while select.select([self._out], [], [], deadline)[0] and os.read(self._out, 65536):
                deadline = 1.0  # the rest of an answer nobody asked for: drain it
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._err >= 0:
            os.close(self._err)
            self._err = -1


def run(paths: Paths, target: Target, words: list[str], tty: bool = False) -> int:
    """Run ``taskmuxctl WORDS`` over there with this terminal's stdin/stdout; ssh's own
    failures become the one clear error, the remote command's stderr passes through."""
    import shlex
    import subprocess
    import sys

    remote = " ".join(shlex.quote(w) for w in [REMOTE_PROGRAM, *words])
    err = _prepare(paths, target)
    try:
        try:
            code = subprocess.call([*ssh_base(paths, target, tty=tty), remote], stderr=err)
        except OSError as exc:
            from taskmuxctl.core.protocol import DaemonUnavailable

            raise DaemonUnavailable(
                Code.DAEMON_UNREACHABLE, "no_ssh",
                f"cannot run ssh for --host {target.label} ({exc.strerror}); install the "
                "OpenSSH client, or set TASKMUX_SSH_COMMAND") from None
        said = _read_stderr(err)
    finally:
        os.close(err)
    if code in (SSH_FAILED, EXIT_NOT_FOUND):
        raise explain(target, code, said)
    sys.stderr.write(said)
    return code


def capture(paths: Paths, target: Target, words: list[str], timeout: float,
            limit: int = 1 << 20) -> tuple[int, str, str]:
    """Run ``taskmuxctl WORDS`` over there without a terminal and collect what it says:
    (exit status, stdout, stderr), each output cut at ``limit`` bytes. ssh is killed at
    ``timeout`` seconds (DaemonUnavailable, reason ``timeout``); ssh's own failures raise
    the one clear error. Both outputs go to unnamed files, not pipes (see ``_stderr_file``)."""
    import shlex
    import subprocess

    from taskmuxctl.core.protocol import DaemonUnavailable

    remote = " ".join(shlex.quote(w) for w in [REMOTE_PROGRAM, *words])
    err = _prepare(paths, target)
    out = -1
    try:
        out = _stderr_file(paths)
        try:
            proc = subprocess.Popen([*ssh_base(paths, target), remote],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        except OSError as exc:
            raise DaemonUnavailable(
                Code.DAEMON_UNREACHABLE, "no_ssh",
                f"cannot run ssh for --host {target.label} ({exc.strerror}); install the "
                "OpenSSH client, or set TASKMUX_SSH_COMMAND") from None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise DaemonUnavailable(
                Code.DAEMON_TIMEOUT, "timeout",
                f"{target.label}: `taskmuxctl {' '.join(words)}` did not finish within "
                f"{timeout:g}s; see `ssh {target.ssh_words} taskmux daemon status`") from None
        said = _read_bounded(err, limit, tail=True)
        stdout = _read_bounded(out, limit, tail=False)
    finally:
        os.close(err)
        if out >= 0:
            os.close(out)
    if code in (SSH_FAILED, EXIT_NOT_FOUND):
        raise explain(target, code, said)
    return code, stdout, said


def stop_shared(paths: Paths, target: Target) -> Any:
    """``ssh -O exit``: close the shared connection to ``target`` (if one is open)."""
    import subprocess

    return subprocess.run([*ssh_base(paths, target)[:-2], "-O", "exit", "--", target.host],
                          capture_output=True, text=True, timeout=15)



def fan_out(paths: Paths, named: list[tuple[str, Target]], words: list[str],
            as_json: bool) -> tuple[int, list[str]]:
    """Run ``taskmuxctl WORDS`` on every machine at once and print their output lines as
    they come, each marked with the machine's name (``--json``: a ``"host"`` key added to
    each object). Returns (machines that failed, their one-line errors)."""
    import selectors
    import shlex
    import subprocess
    import sys

    from taskmuxctl.core import jsonio

    remote = " ".join(shlex.quote(w) for w in [REMOTE_PROGRAM, *words])
    sel = selectors.DefaultSelector()
    running: list[tuple[str, Target, Any, int]] = []
    errors: list[str] = []
    try:
        for name, target in named:
            err = _prepare(paths, target)
            proc = subprocess.Popen([*ssh_base(paths, target), remote],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err)
            running.append((name, target, proc, err))
            sel.register(proc.stdout, selectors.EVENT_READ, (name, proc))  # type: ignore[arg-type]
        open_count = len(running)
        while open_count:
            for key, _ in sel.select():
                name, proc = key.data
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    sel.unregister(key.fileobj)
                    open_count -= 1
                    continue
                text = line.decode("utf-8", "replace").rstrip("\n")
                if as_json:
                    try:
                        obj = jsonio.loads(text)
                    except jsonio.JSONError:
                        obj = None
                    if not isinstance(obj, dict):
                        obj = {"line": text}
                    sys.stdout.write(jsonio.dumps({"host": name, **obj}) + "\n")
                else:
                    sys.stdout.write(f"{name} | {text}\n")
                sys.stdout.flush()
        for name, target, proc, err in running:
            code = proc.wait()
            if code != 0:
                said = _read_stderr(err)
                message = (explain(target, code, said).message if code in (
                    SSH_FAILED, EXIT_NOT_FOUND, EXIT_PROTOCOL) or not said.strip()
                    else f"{target.label}: {said.strip().splitlines()[-1].split('error: ', 1)[-1]}")
                errors.append(f"{name}: {message}")
    finally:
        for _, _, proc, err in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            os.close(err)
        sel.close()
    return len(errors), errors
