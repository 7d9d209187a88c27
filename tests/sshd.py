"""A real OpenSSH server on a loopback port, with throwaway users standing for machines.

``SshLab`` starts the distribution's ``/usr/sbin/sshd -D`` with its own host key, config and
authorized keys in a temporary folder (never port 22, never the machine's sshd config or host
keys), and a client-side ``ssh -F`` config with the test's key and known_hosts. A "machine"
is a throwaway user with its own home, ``~/.taskmux``, daemon and tmux server; it reaches
this checkout's taskmux through a root-owned wrapper on the PATH that sshd sets
(``SetEnv``), run by the system's python3 with this venv's packages (the users cannot read
/root, where the venv's own interpreter lives).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import REPO, pid_gone, read_daemon_pid_kill, wait_until, write_config
from tests.users import throwaway_user

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"  # sshd's compiled-in privilege separation folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def system_python() -> str:
    """A python3 of the same minor version that every user may run."""
    want = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{want}", f"/usr/local/bin/{want}"):
        if os.path.exists(candidate) and os.stat(candidate).st_mode & 0o001:
            return candidate
    pytest.skip(f"no {want} that another user can run (the venv's packages need that one)")


def _readable_by_all(path: str) -> bool:
    while path not in ("/", ""):
        if not os.stat(path).st_mode & 0o005:
            return False
        path = os.path.dirname(path)
    return True


class Machine:
    """A throwaway user standing for a machine, and the taskmux daemon it runs."""

    def __init__(self, lab: SshLab, user: pwd.struct_passwd, with_taskmux: bool | str) -> None:
        self.lab = lab
        self.user = user
        self.with_taskmux = with_taskmux
        self.home = user.pw_dir
        self.taskmux_home = os.path.join(self.home, ".taskmux")
        self.tmux_socket = f"tmxssh-{uuid.uuid4().hex[:8]}"
        self.daemon: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.user.pw_name

    @property
    def installed_bin(self) -> str:
        """Where an installed layout's taskmuxctl is (``app/current/bin``)."""
        return os.path.join(self.taskmux_home, "app", "current", "bin")

    @property
    def url(self) -> str:
        return f"ssh://{self.name}@127.0.0.1:{self.lab.port}"

    def env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name,
                "PATH": self.lab.remote_path, "PYTHONPATH": self.lab.pythonpath,
                "TASKMUX_HOME": self.taskmux_home, "TASKMUX_TMUX_SOCKET": self.tmux_socket,
                "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}

    def as_user(self, argv: list[str], cwd: str | None = None,
                **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, user=self.user.pw_uid, group=self.user.pw_gid,
                              extra_groups=[], env=self.env(), cwd=cwd or self.home,
                              capture_output=True, text=True, timeout=60, **kw)

    def prepare_home(self) -> None:
        """``~/.taskmux`` with the safe settings, owned by the user."""
        os.makedirs(self.taskmux_home, mode=0o700, exist_ok=True)
        write_config(self.taskmux_home)
        for root, dirs, files in os.walk(self.taskmux_home):
            for name in [*dirs, *files, "."]:
                os.lchown(os.path.join(root, name), self.user.pw_uid, self.user.pw_gid)

    def start_daemon(self) -> None:
        self.prepare_home()
        log = open(os.path.join(self.home, "daemon.out"), "ab")  # noqa: SIM115
        with log:
            self.daemon = subprocess.Popen(
                [self.lab.python, "-m", "taskmuxd", "run"], user=self.user.pw_uid,
                group=self.user.pw_gid, extra_groups=[], env=self.env(), cwd=self.home,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sock = os.path.join(self.taskmux_home, "ctl.sock")
        wait_until(lambda: self.answering(sock), 30, f"the daemon of {self.name}")

    def answering(self, sock: str) -> bool:
        assert self.daemon is not None
        if self.daemon.poll() is not None:
            raise AssertionError(f"the daemon of {self.name} exited: {self.daemon_log()}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            try:
                s.connect(sock)
            except OSError:
                return False
            s.sendall(b'{"jsonrpc":"2.0","method":"daemon.ping","id":1}\n')
            return b"pong" in s.recv(65536)

    def daemon_log(self) -> str:
        with contextlib.suppress(OSError), open(os.path.join(self.home, "daemon.out")) as fh:
            return fh.read()[-2000:]
        return ""

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.with_taskmux == "installed":  # its daemon was started over there, detached
            read_daemon_pid_kill(self.taskmux_home)
        if self.daemon is not None or self.with_taskmux == "installed":
            self.as_user(["tmux", "-L", self.tmux_socket, "kill-server"])


class SshLab:
    """sshd on 127.0.0.1:PORT, a client config, and the machines behind it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.port = free_port()
        self.python = system_python()
        site = sysconfig.get_paths()["purelib"]
        if not (_readable_by_all(REPO) and _readable_by_all(site)):
            pytest.skip("this checkout or its venv is not readable by other users")
        self.pythonpath = f"{REPO}:{site}"
        self.bin = os.path.join(root, "bin")
        self.no_taskmux_bin = os.path.join(root, "empty-bin")
        self.future_bin = os.path.join(root, "future-bin")
        self.remote_path = f"{self.bin}:/usr/local/bin:/usr/bin:/bin"
        self.sshd: subprocess.Popen[bytes] | None = None
        self.sshd_log = os.path.join(root, "sshd.log")
        self.machines: list[Machine] = []
        self.extra_env: dict[str, str] = {}  # set for every machine's sessions (SetEnv)

    def keygen(self, name: str) -> str:
        path = os.path.join(self.root, name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path],
                       check=True, capture_output=True, timeout=30)
        return path

    def setup(self, users: list[tuple[pwd.struct_passwd, bool | str]]) -> None:
        os.chmod(self.root, 0o755)
        os.makedirs(self.bin)
        os.makedirs(self.no_taskmux_bin)
        os.makedirs(self.future_bin)
        # This checkout's taskmuxctl, told it speaks the next protocol version: what a
        # machine updated past this client looks like from here.
        future = os.path.join(self.future_bin, "taskmuxctl")
        with open(future, "w") as fh:
            fh.write(f"#!/bin/sh\nexport PYTHONPATH='{self.pythonpath}'\n"
                     f"exec '{self.python}' -c 'import sys, taskmuxctl.commands.remote as r; "
                     "r.PROTOCOL_VERSION += 1; from taskmuxctl.cli import main; "
                     "sys.exit(main())' \"$@\"\n")
        os.chmod(future, 0o755)
        wrapper = os.path.join(self.bin, "taskmuxctl")
        with open(wrapper, "w") as fh:
            fh.write(f"#!/bin/sh\nexport PYTHONPATH='{self.pythonpath}'\n"
                     f"exec '{self.python}' -m taskmuxctl \"$@\"\n")
        os.chmod(wrapper, 0o755)
        self.host_key = self.keygen("host_key")
        self.other_host_key = self.keygen("other_host_key")
        self.client_key = self.keygen("client_key")
        with open(self.client_key + ".pub") as fh:
            pub = fh.read().strip()
        self.authorized = os.path.join(self.root, "authorized_keys")
        with open(self.authorized, "w") as fh:
            fh.write(pub + "\n")
        os.chmod(self.authorized, 0o644)
        for user, with_taskmux in users:
            # useradd leaves the password locked ("!"), and sshd without PAM refuses a locked
            # account even for a key; "*" is no password, not locked.
            subprocess.run(["usermod", "-p", "*", user.pw_name], check=True,
                           capture_output=True, timeout=30)
            self.machines.append(Machine(self, user, with_taskmux))
        lines = [
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {os.path.join(self.root, 'sshd.pid')}", "UsePAM no",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", f"AuthorizedKeysFile {self.authorized}",
            "StrictModes no", "PermitRootLogin no", "X11Forwarding no", "PrintMotd no",
            "LogLevel INFO", "MaxSessions 50", "MaxStartups 50",
            f"AllowUsers {' '.join(m.name for m in self.machines)}",
        ]
        for m in self.machines:
            path = (f"{self.future_bin}:/usr/bin:/bin" if m.with_taskmux == "future" else
                    f"{m.installed_bin}:/usr/bin:/bin" if m.with_taskmux == "installed" else
                    self.remote_path if m.with_taskmux else f"{self.no_taskmux_bin}:/usr/bin:/bin")
            extra = {**self.extra_env, "TASKMUX_TMUX_SOCKET": m.tmux_socket} \
                if m.with_taskmux == "installed" else {}
            words = " ".join(f"{k}={v}" for k, v in extra.items())
            lines += [f"Match User {m.name}", f"  SetEnv PATH={path} {words}".rstrip()]
        self.config = os.path.join(self.root, "sshd_config")
        with open(self.config, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        if not os.path.isdir(PRIVSEP_DIR):
            try:
                os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
            except OSError as exc:
                pytest.skip(f"sshd needs {PRIVSEP_DIR}, which cannot be created: {exc}")
        check = subprocess.run([SSHD, "-t", "-f", self.config], capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            pytest.skip(f"sshd refuses the test config: {check.stderr.strip()}")
        self.known_hosts = self.write_known_hosts("known_hosts", self.host_key)
        self.wrong_known_hosts = self.write_known_hosts("wrong_known_hosts",
                                                        self.other_host_key)
        self.client_config = self.write_client_config("ssh_config", self.known_hosts)
        self.wrong_client_config = self.write_client_config("ssh_config_wrong",
                                                            self.wrong_known_hosts)

    def write_known_hosts(self, name: str, key: str) -> str:
        with open(key + ".pub") as fh:
            kind, blob = fh.read().split()[:2]
        path = os.path.join(self.root, name)
        with open(path, "w") as fh:
            fh.write(f"[127.0.0.1]:{self.port} {kind} {blob}\n")
        return path

    def write_client_config(self, name: str, known_hosts: str) -> str:
        path = os.path.join(self.root, name)
        with open(path, "w") as fh:
            fh.write("Host *\n"
                     f"  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n"
                     f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                     "  StrictHostKeyChecking yes\n  LogLevel ERROR\n")
        return path

    def start(self) -> None:
        log = open(self.sshd_log, "ab")  # noqa: SIM115
        with log:
            self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", self.config],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

        def listening() -> bool:
            assert self.sshd is not None
            if self.sshd.poll() is not None:
                raise AssertionError(f"sshd exited: {self.log()}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                try:
                    s.connect(("127.0.0.1", self.port))
                except OSError:
                    return False
                return s.recv(64).startswith(b"SSH-")

        wait_until(listening, 20, "sshd to listen")

    def log(self) -> str:
        with open(self.sshd_log, errors="replace") as fh:
            return fh.read()

    def logins(self, user: str) -> int:
        return self.log().count(f"Accepted publickey for {user} ")

    def client_env(self, base: dict[str, str], config: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in base.items() if k not in ("SSH_AUTH_SOCK", "XDG_RUNTIME_DIR",
                                                         "TASKMUX_HOST")}
        env["TASKMUX_SSH_COMMAND"] = f"ssh -F {config or self.client_config}"
        return env

    def stop(self) -> None:
        for machine in self.machines:
            machine.stop()
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()


def control_sockets(taskmux_home: str) -> list[str]:
    folder = os.path.join(taskmux_home, "ssh")
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, n) for n in os.listdir(folder) if not n.startswith("stderr-")]


def close_masters(lab: SshLab, taskmux_home: str, machine: Machine, config: str) -> None:
    """``ssh -O exit`` every shared connection the client left; kill by pid what stays."""
    if not control_sockets(taskmux_home):
        return  # no master left (each removes its socket as it exits): nothing to ask ssh
    folder = os.path.join(taskmux_home, "ssh")
    base = ["ssh", "-F", config, "-o", f"ControlPath={folder}/%C", "-p", str(lab.port),
            "-l", machine.name]
    check = subprocess.run([*base, "-O", "check", "127.0.0.1"], capture_output=True,
                           text=True, timeout=15)
    pid = None
    if "pid=" in check.stderr:
        pid = int(check.stderr.split("pid=", 1)[1].split(")", 1)[0])
    subprocess.run([*base, "-O", "exit", "127.0.0.1"], capture_output=True, timeout=15)
    if pid is not None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if pid_gone(pid):  # a zombie counts: PID 1 here may not reap the orphaned master
                break
            time.sleep(0.02)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


@contextlib.contextmanager
def ssh_lab(users: int = 2, without_taskmux: int = 1, idle: int = 0,
            future: int = 0, installed: int = 0,
            extra_env: dict[str, str] | None = None) -> Iterator[SshLab]:
    """sshd with ``users`` machines that have taskmux and a running daemon, ``idle`` that
    have taskmux and no daemon yet, ``without_taskmux`` that have no taskmux, ``future``
    whose taskmux speaks the next protocol version, and ``installed`` whose PATH leads to
    an installed layout in their ``~/.taskmux/app`` that the test puts there (in this order
    in ``lab.machines``). ``extra_env`` is set in the installed machines' ssh sessions."""
    if not os.path.exists(SSHD) or shutil.which("ssh") is None \
            or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH (openssh-server, openssh-client) is not installed")
    if os.geteuid() != 0:
        pytest.skip("sshd and throwaway users need root")
    root = tempfile.mkdtemp(prefix="tmxssh-", dir="/tmp")
    lab = SshLab(root)
    lab.extra_env = dict(extra_env or {})
    try:
        with contextlib.ExitStack() as stack:
            wanted: list[bool | str] = [True] * (users + idle) + [False] * without_taskmux \
                + ["future"] * future + ["installed"] * installed
            accounts = [(stack.enter_context(throwaway_user()), flag) for flag in wanted]
            lab.setup(accounts)
            try:
                lab.start()
                for machine in lab.machines[:users]:
                    machine.start_daemon()
                for machine in lab.machines[users:users + idle]:
                    machine.prepare_home()
                yield lab
            finally:
                lab.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
