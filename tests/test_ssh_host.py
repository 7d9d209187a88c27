"""``taskmux --host ssh://...`` against a real OpenSSH server and throwaway users as machines.

One sshd for the module (see ``tests/sshd.py``): two machines with taskmux and a daemon
each, one with taskmux and no daemon yet, one without taskmux. Each test's client has its
own TASKMUX_HOME, so its own shared ssh connections, closed (``ssh -O exit``) at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.helpers import BIN, wait_until
from tests.sshd import SshLab, close_masters, control_sockets, free_port, ssh_lab

CTL = os.path.join(BIN, "taskmuxctl")
PROJECT = """name = "{name}"

[tasks.web]
command = "echo hello-from-{name}; exec sleep 600"
"""

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lab() -> Iterator[SshLab]:
    with ssh_lab(users=2, without_taskmux=1, idle=1, future=1) as lab:
        for machine in lab.machines[:2]:
            folder = os.path.join(machine.home, "proj")
            os.makedirs(folder)
            with open(os.path.join(folder, "taskmux.toml"), "w") as fh:
                fh.write(PROJECT.format(name=f"proj-{machine.name}"))
            os.chown(folder, machine.user.pw_uid, machine.user.pw_gid)
            started = machine.as_user([os.path.join(lab.bin, "taskmuxctl"), "start"],
                                      cwd=folder)
            assert started.returncode == 0, started.stderr + machine.daemon_log()
        yield lab


class Client:
    """This machine's side: a private TASKMUX_HOME and the lab's ssh config."""

    def __init__(self, lab: SshLab, config: str | None = None) -> None:
        self.lab = lab
        self.config = config or lab.client_config
        self.home = tempfile.mkdtemp(prefix="tmxc-", dir="/tmp")
        base = {k: v for k, v in os.environ.items() if not k.startswith("TASKMUX_")}
        self.env = lab.client_env({**base, "TASKMUX_HOME": self.home,
                                   "TASKMUX_NO_DAEMON_START": "1"}, self.config)

    def run(self, *argv: str, extra: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CTL, *argv], env={**self.env, **(extra or {})},
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def close(self) -> None:
        for machine in self.lab.machines:
            close_masters(self.lab, self.home, machine, self.config)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def client(lab: SshLab) -> Iterator[Client]:
    c = Client(lab)
    try:
        yield c
    finally:
        c.close()


def one_clear_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    print(lines[0])  # shown with -s: the messages people get
    return lines[0]


def test_status_through_host(lab: SshLab, client: Client) -> None:
    machine = lab.machines[0]
    name = f"proj-{machine.name}"
    proc = client.run("--host", machine.url, "-p", name, "status")
    assert proc.returncode == 0, proc.stderr
    assert name in proc.stdout and "web" in proc.stdout and "running" in proc.stdout
    # The same answer as the machine gives itself, with TASKMUX_HOST as the door this time.
    proc = client.run("--json", "-p", name, "status", extra={"TASKMUX_HOST": machine.url})
    there = machine.as_user([os.path.join(lab.bin, "taskmuxctl"), "--json", "-p", name,
                             "status"])
    ours, theirs = json.loads(proc.stdout), json.loads(there.stdout)
    assert ours["project"] == theirs["project"] == name
    assert ([(t["name"], t["state"], t["pid"]) for t in ours["tasks"]]
            == [(t["name"], t["state"], t["pid"]) for t in theirs["tasks"]])
    listed = client.run("--json", "--host", machine.url, "daemon", "list")
    assert [p["name"] for p in json.loads(listed.stdout)["projects"]] == [name]
    # The other machine is another daemon: its project, not this one.
    other = lab.machines[1]
    proc = client.run("--host", other.url, "-p", name, "status")
    assert proc.returncode != 0 and "proj-" in proc.stderr and "Traceback" not in proc.stderr


def test_the_connection_is_shared(lab: SshLab, client: Client) -> None:
    machine = lab.machines[1]
    before = lab.logins(machine.name)
    first = client.run("--host", machine.url, "version")
    assert first.returncode == 0, first.stderr
    assert "taskmuxd" in first.stdout
    sockets = control_sockets(client.home)
    assert len(sockets) == 1
    check = subprocess.run(["ssh", "-F", client.config, "-o",
                            f"ControlPath={os.path.dirname(sockets[0])}/%C",
                            "-p", str(lab.port), "-l", machine.name, "-O", "check",
                            "127.0.0.1"], capture_output=True, text=True, timeout=15)
    assert check.returncode == 0 and "Master running" in check.stderr, check.stderr
    for _ in range(2):
        again = client.run("--host", machine.url, "-p", f"proj-{machine.name}", "status")
        assert again.returncode == 0, again.stderr
    # Three calls, one ssh login: the later calls went through the shared connection.
    wait_until(lambda: lab.logins(machine.name) >= before + 1, 10, "the login in sshd's log")
    assert lab.logins(machine.name) == before + 1
    close_masters(lab, client.home, machine, client.config)
    assert not control_sockets(client.home)


def test_logs_run_on_the_other_machine(lab: SshLab, client: Client) -> None:
    machine = lab.machines[0]
    name = f"proj-{machine.name}"
    proc = client.run("--host", machine.url, "-p", name, "logs", "web")
    assert proc.returncode == 0, proc.stderr
    assert f"hello-from-{name}" in proc.stdout


def test_a_host_that_is_down(lab: SshLab, client: Client) -> None:
    url = f"ssh://nobody@127.0.0.1:{free_port()}"
    started = time.monotonic()
    line = one_clear_line(client.run("--host", url, "-p", "x", "status"))
    assert time.monotonic() - started < 10
    assert "unreachable" in line and "Connection refused" in line and "sshd" in line


def test_a_host_that_never_answers(lab: SshLab, client: Client) -> None:
    """A port that accepts and then says nothing: ConnectTimeout ends it, not the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"ssh://nobody@127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        proc = client.run("--host", url, "-p", "x", "status",
                          extra={"TASKMUX_SSH_CONNECT_TIMEOUT": "2"}, timeout=30)
        elapsed = time.monotonic() - started
    line = one_clear_line(proc)
    assert elapsed < 15
    assert "unreachable" in line and "timed out" in line


def test_a_wrong_host_key(lab: SshLab) -> None:
    wrong = Client(lab, lab.wrong_client_config)
    try:
        started = time.monotonic()
        line = one_clear_line(wrong.run("--host", lab.machines[0].url, "-p", "x", "status"))
        assert time.monotonic() - started < 10
        assert "host key" in line and f"ssh-keygen -R '[127.0.0.1]:{lab.port}'" in line
    finally:
        wrong.close()


def test_a_host_without_taskmux(lab: SshLab, client: Client) -> None:
    bare = lab.machines[3]
    line = one_clear_line(client.run("--host", bare.url, "-p", "x", "status"))
    assert f"{bare.name}@127.0.0.1:{lab.port} has no `taskmuxctl`" in line
    assert "install taskmux there" in line
    # Run whole over ssh, the same.
    line = one_clear_line(client.run("--host", bare.url, "-p", "x", "logs"))
    assert "has no `taskmuxctl`" in line


def test_a_host_speaking_another_protocol(lab: SshLab, client: Client) -> None:
    future = lab.machines[4]
    line = one_clear_line(client.run("--host", future.url, "-p", "x", "status"))
    assert f"{future.name}@127.0.0.1:{lab.port}: protocol mismatch" in line
    assert "speaks 2" in line and "protocol 1" in line and "update the older" in line


def test_commands_of_this_machine_say_so(lab: SshLab, client: Client) -> None:
    url = lab.machines[0].url
    for argv in (["daemon", "install"], ["update"], ["init"]):
        proc = client.run("--host", url, *argv)
        assert proc.returncode == 2, proc.stderr
        line = one_clear_line(proc)
        assert "does not take --host" in line and f"ssh -p {lab.port}" in line


def test_the_daemon_over_there_starts_when_asked(lab: SshLab, client: Client) -> None:
    """No daemon on the machine: --no-daemon-start says so; without it the remote
    dial-stdio starts one (detached: the ssh session still ends), and `daemon stop` (run
    whole over ssh) stops it."""
    machine = lab.machines[2]
    line = one_clear_line(client.run("--host", machine.url, "--no-daemon-start", "version"))
    assert f"{machine.name}@127.0.0.1:{lab.port}: the daemon is not running" in line
    pid_file = os.path.join(machine.taskmux_home, "daemon.pid")
    env = {k: v for k, v in client.env.items() if k != "TASKMUX_NO_DAEMON_START"}
    started = time.monotonic()
    proc = subprocess.run([CTL, "--host", machine.url, "version"], env=env,
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    try:
        assert proc.returncode == 0, proc.stderr
        assert "taskmuxd" in proc.stdout
        assert time.monotonic() - started < 30
        with open(pid_file) as fh:
            pid = int(fh.read().split()[0])
        assert os.stat(f"/proc/{pid}").st_uid == machine.user.pw_uid
        stop = client.run("--host", machine.url, "daemon", "stop")
        assert stop.returncode == 0, stop.stderr
        assert f"pid {pid}" in stop.stdout
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 15, "the daemon to exit")
    finally:
        with contextlib.suppress(OSError, ValueError), open(pid_file) as fh:
            os.kill(int(fh.read().split()[0]), signal.SIGKILL)
        machine.as_user(["tmux", "kill-server"])


def test_attach_goes_through_a_terminal(lab: SshLab, client: Client) -> None:
    """`attach` over ssh -t: the task's pane shows in this terminal, as a client of the
    machine's tmux server; when that client is detached, attach ends with 0."""
    machine = lab.machines[0]
    name = f"proj-{machine.name}"
    master, slave = os.openpty()
    proc = subprocess.Popen([CTL, "--host", machine.url, "-p", name, "attach", "web"],
                            env={**client.env, "TERM": "xterm"}, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    try:
        os.close(slave)
        slave = -1
        seen = b""
        deadline = time.monotonic() + 30
        while f"hello-from-{name}".encode() not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        assert f"hello-from-{name}".encode() in seen, seen[-2000:]
        # The client over there is a real tmux client of the machine's server: detach it
        # there (a key sent now could arrive before tmux reads keys).
        clients = machine.as_user(["tmux", "-L", machine.tmux_socket, "list-clients", "-F",
                                   "#{?client_control_mode,,#{client_tty}}"]).stdout.split()
        assert len(clients) == 1, clients
        machine.as_user(["tmux", "-L", machine.tmux_socket, "detach-client", "-t",
                         clients[0]])
        code = proc.wait(timeout=30)
        assert code == 0, seen[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if slave >= 0:
            os.close(slave)
        os.close(master)


def test_fleet_status_across_machines(lab: SshLab, client: Client) -> None:
    """Two machines up, one without a daemon, one without taskmux, one down and one that
    never answers: one table, each line in time, exit 1; the group of the good ones: 0."""
    up, other, idle, bare = lab.machines[:4]
    for m in (up, other):
        assert client.run("fleet", "add", m.name, m.url, "-g", "up").returncode == 0
    client.run("fleet", "add", "idle", idle.url)
    client.run("fleet", "add", "bare", bare.url)
    client.run("fleet", "add", "down", f"ssh://nobody@127.0.0.1:{free_port()}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        client.run("fleet", "add", "silent", f"ssh://nobody@127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        # 8 s: the machines that are up answer well within it on a busy machine too.
        proc = client.run("--json", "fleet", "status", "--deadline", "8")
        elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert elapsed < 20  # parallel: one deadline, not one per machine
    out = json.loads(proc.stdout)
    by = {e["name"]: e for e in out["hosts"]}
    assert [e["name"] for e in out["hosts"]] == [up.name, other.name, "idle", "bare", "down",
                                                   "silent"]
    for m in (up, other):
        e = by[m.name]
        assert e["ok"] and e["reachable"] and e["daemon_version"]
        assert (e["projects"], e["tasks_up"], e["tasks_total"], e["unhealthy"]) == (1, 1, 1, [])
    assert not by["idle"]["ok"] and by["idle"]["reachable"]
    assert "the daemon is not running" in by["idle"]["error"]
    assert not by["bare"]["ok"] and "has no `taskmuxctl`" in by["bare"]["error"]
    assert not by["down"]["reachable"] and "unreachable" in by["down"]["error"]
    assert not by["silent"]["reachable"] and by["silent"]["reason"] in ("deadline", "unreachable")
    assert out["all_ok"] is False
    table = client.run("fleet", "status", "-g", "up")
    assert table.returncode == 0, table.stdout + table.stderr
    assert up.name in table.stdout and "1/1" in table.stdout and "idle" not in table.stdout


def test_start_through_host_keeps_this_machines_environment_here(lab: SshLab,
                                                                  client: Client) -> None:
    """A local `start` hands the daemon the caller's environment for the tasks; through
    --host that would be this machine's (secrets included), so none is sent."""
    machine = lab.machines[0]
    name = f"proj-{machine.name}"
    proc = client.run("--host", machine.url, "-p", name, "start",
                      extra={"P18_LOCAL_SECRET": "do-not-ship"})
    assert proc.returncode == 0, proc.stderr
    found = []
    for root, _dirs, files in os.walk(machine.taskmux_home):
        for f in files:
            if f == "env.json":
                with open(os.path.join(root, f)) as fh:
                    found.append(json.load(fh))
    assert found, "the machine's own start saved an environment"
    assert all("P18_LOCAL_SECRET" not in env for env in found)
    assert all(env.get("HOME") == machine.home for env in found)


def test_fleet_stop_and_start_a_group(lab: SshLab, client: Client) -> None:
    up, other = lab.machines[:2]
    for m in (up, other):
        assert client.run("fleet", "add", m.name, m.url, "-g", "pair").returncode == 0

    def tasks_up() -> list[int]:
        out = json.loads(client.run("--json", "fleet", "status", "-g", "pair").stdout)
        return [e["tasks_up"] for e in out["hosts"]]

    assert tasks_up() == [1, 1]
    stop = client.run("--json", "fleet", "stop", "-g", "pair", "web")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    entries = json.loads(stop.stdout)["hosts"]
    assert [list(e["results"]) for e in entries] == [[f"proj-{up.name}"],
                                                     [f"proj-{other.name}"]]
    assert tasks_up() == [0, 0]
    # A project only one machine has: that one does it, the other says why; exit 1.
    one = client.run("--json", "fleet", "start", "-g", "pair", "-p", f"proj-{up.name}")
    assert one.returncode == 1
    by = {e["name"]: e for e in json.loads(one.stdout)["hosts"]}
    assert by[up.name]["ok"] and not by[other.name]["ok"]
    assert f"proj-{up.name}" in by[other.name]["error"]
    assert tasks_up() == [1, 0]
    start = client.run("fleet", "start", "-g", "pair")
    assert start.returncode == 0, start.stdout + start.stderr
    assert f"{other.name}: start" in start.stdout
    assert tasks_up() == [1, 1]


def test_fleet_logs_and_events(lab: SshLab, client: Client) -> None:
    up, other, _idle, bare = lab.machines[:4]
    for m in (up, other):
        assert client.run("fleet", "add", m.name, m.url, "-g", "pair").returncode == 0
    name = f"proj-{up.name}"
    proc = client.run("fleet", "logs", "-p", name, "web", "-g", "hello", "--group", "pair")
    assert proc.returncode == 0, proc.stderr
    assert f"{up.name} | " in proc.stdout and f"hello-from-{name}" in proc.stdout
    # That machine has no such project: nothing of it but the logs command's own word.
    assert f"{other.name} | (no log lines yet)" in proc.stdout
    assert "hello" not in "".join(ln for ln in proc.stdout.splitlines()
                                  if ln.startswith(f"{other.name} |"))
    # A machine that fails: its one line on stderr, the others' output still shown; exit 1.
    assert client.run("fleet", "add", "bare", bare.url, "-g", "pair").returncode == 0
    proc = client.run("fleet", "logs", "-p", name, "web", "--group", "pair")
    assert proc.returncode == 1
    assert f"hello-from-{name}" in proc.stdout
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("! bare: ")
    assert "has no `taskmuxctl`" in errors[0] and "Traceback" not in proc.stderr
    client.run("fleet", "remove", "bare")
    proc = client.run("--json", "fleet", "events", "-n", "3", "-g", "pair")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *lines, summary = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines and {line["host"] for line in lines} == {up.name, other.name}
    assert summary["all_ok"] is True
    assert [h["name"] for h in summary["hosts"]] == [up.name, other.name]
    missing = client.run("fleet", "logs", "web")
    assert missing.returncode == 2 and "-p NAME" in missing.stderr


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_fleet_events_follow_ends_on_ctrl_c(lab: SshLab, client: Client) -> None:
    """`fleet events -f` follows every machine until Ctrl-C, then ends with 130 and leaves
    none of its ssh clients behind."""
    up, other = lab.machines[:2]
    for m in (up, other):
        client.run("fleet", "add", m.name, m.url, "-g", "pair")
    with subprocess.Popen([CTL, "fleet", "events", "-f", "-g", "pair", "-n", "1"],
                          env=client.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True) as proc:
        try:
            assert proc.stdout is not None
            seen: set[str] = set()
            while len(seen) < 2:
                line = proc.stdout.readline().decode()
                assert line, "the follow ended by itself"
                seen.add(line.split(" | ", 1)[0])
            assert seen == {up.name, other.name}
            ssh_clients = wait_until(lambda: len(children(proc.pid)) == 2
                                     and children(proc.pid), 10, "two ssh clients")
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            assert proc.wait(timeout=15) == 130
            assert not [p for p in ssh_clients if alive(p)]
        finally:
            if proc.poll() is None:
                proc.kill()
