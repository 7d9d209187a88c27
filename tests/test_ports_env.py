"""$PORT (stable, leftovers, strangers) and the environment a task gets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.helpers import read, run_json, wait_until, write_config
from tests.projects import pid_alive, task, write_project

LISTEN = ("import os, socket, time; s = socket.socket(); "
          "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
          "s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); time.sleep(600)")


def test_port_is_stable_across_restarts_and_daemon_restarts(env: dict[str, str],
                                                           tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), f"""
        name = "ports"
        [tasks.api]
        command = "{sys.executable} -c \\"{LISTEN}\\""
        host = "api"
        [tasks.plain]
        command = "sleep 600"
        [tasks.asks]
        command = "sleep 600"
        port = "auto"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    port = task(env, proj, "api")["port"]
    assert port and task(env, proj, "plain")["port"] is None
    assert task(env, proj, "asks")["port"] not in (None, port)
    wait_until(lambda: _listening(port), what="the api to listen")
    assert run_json(["restart", "api"], env, cwd=proj)[0] == 0
    assert task(env, proj, "api")["port"] == port
    assert run_json(["daemon", "restart"], env)[0] == 0
    assert run_json(["restart", "api"], env, cwd=proj)[0] == 0
    assert task(env, proj, "api")["port"] == port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_leftover_of_the_same_task_is_killed_and_the_port_kept(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    write_config(home, "health_check_interval = 0.5\n")  # the sweep notices a dead runner
    # The listener ignores hang-ups, so it outlives its runner: a leftover of this task.
    proj = write_project(str(tmp_path / "p"), f"""
        name = "leftover"
        [tasks.api]
        command = "trap '' HUP; exec {sys.executable} -c \\"{LISTEN}\\""
        host = "api"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    first = task(env, proj, "api")
    wait_until(lambda: _listening(first["port"]), what="the listener")
    runner = _runner_pid(env, "leftover", "api")
    os.kill(runner, signal.SIGKILL)
    # The daemon sees the task gone, restarts it on the same port after killing the leftover.
    second = wait_until(lambda: (t := task(env, proj, "api"))["state"] == "running"
                        and t["pid"] != first["pid"] and t, 40, "the restart")
    assert second["port"] == first["port"]
    assert not pid_alive(first["pid"])
    _code, out = run_json(["events", "--task", "api"], env, cwd=proj)
    # Found by its run marker and ended before the relaunch.
    assert "leftovers_stopped" in [e["event"] for e in out["events"]]


def _runner_pid(env: dict[str, str], project: str, name: str) -> int:
    path = os.path.join(env["TASKMUX_HOME"], "projects", project, "run", f"{name}.json")
    import json

    with open(path) as fh:
        return int(json.load(fh)["runner_pid"])


def test_a_stranger_on_the_port_gets_the_task_a_new_port(env: dict[str, str],
                                                         tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "stranger"
        [tasks.api]
        command = "sleep 600"
        host = "api"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    port = task(env, proj, "api")["port"]
    assert run_json(["stop", "api"], env, cwd=proj)[0] == 0
    stranger = subprocess.Popen([sys.executable, "-c", LISTEN], env={**env, "PORT": str(port)},
                                start_new_session=True)
    try:
        wait_until(lambda: _listening(port), what="the stranger to listen")
        assert run_json(["start", "api"], env, cwd=proj)[0] == 0
        new_port = task(env, proj, "api")["port"]
        assert new_port != port
        assert stranger.poll() is None, "a process that is not the task's must not be signalled"
        events = run_json(["events", "--task", "api"], env, cwd=proj)[1]["events"]
        moved = [e for e in events if e["event"] == "port_reassigned"]
        assert moved and moved[-1]["details"]["old_port"] == port
    finally:
        stranger.kill()
        stranger.wait()


def test_environment_is_built_not_inherited(env: dict[str, str], tmp_path: str,
                                            home: str) -> None:
    out_file = os.path.join(str(tmp_path), "env.txt")
    proj = write_project(str(tmp_path / "p"), f"""
        name = "envs"
        [tasks.show]
        command = "env > {out_file}.new; mv {out_file}.new {out_file}; sleep 600"
        env_file = ".env"
        env = {{ FROM_TOML = "toml", OVERRIDE = "from-env-table", NUM = 3 }}
        host = "show"
    """)
    with open(os.path.join(proj, ".env"), "w") as fh:
        fh.write("# comment\nFROM_FILE=file\nOVERRIDE=from-file\nQUOTED=\"a b\"\n"
                 "export EXPORTED='x y'\nSHELL_ONLY=file-loses\n"
                 "WIN_PATH=\"C:\\\\tmp\"\nCOMMENTED='q' # a comment\n")
    # The daemon runs with an environment the task must not see...
    from tests.helpers import DaemonProcess

    daemon = DaemonProcess(home, {**env, "DAEMON_ONLY": "1"}).wait_ready()
    try:
        # ... and the shell that starts the project has its own PATH and variables.
        shell_env = {**env, "SHELL_ONLY": "shell", "PATH": f"/opt/mytools/bin:{env['PATH']}"}
        assert run_json(["start"], shell_env, cwd=proj)[0] == 0
        wait_until(lambda: os.path.exists(out_file))
        got = dict(line.split("=", 1) for line in read(out_file).splitlines() if "=" in line)
        assert got["PATH"].startswith("/opt/mytools/bin:")
        assert "DAEMON_ONLY" not in got
        assert got["SHELL_ONLY"] == "file-loses"  # env_file beats the shell's environment
        assert got["FROM_FILE"] == "file" and got["QUOTED"] == "a b" and got["EXPORTED"] == "x y"
        assert got["WIN_PATH"] == "C:\\tmp" and got["COMMENTED"] == "q"  # read as dotenv does
        assert got["FROM_TOML"] == "toml" and got["NUM"] == "3"
        assert got["OVERRIDE"] == "from-env-table"  # env beats env_file
        assert got["PORT"] == str(task(env, proj, "show")["port"])
        assert got["TASKMUX_PROJECT"] == "envs" and got["TASKMUX_TASK"] == "show"
        assert "TMUX" not in got
    finally:
        daemon.stop()


def test_connections_in_time_wait_do_not_make_a_port_busy() -> None:
    """A dev server that closed its connections leaves them in TIME_WAIT on its port; a
    restarted server binds it again (servers set SO_REUSEADDR), so the port is not taken."""
    from taskmuxd.projects import portscan

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server closes first: its side of the connection enters TIME_WAIT
    assert client.recv(1) == b""
    client.close()
    listener.close()
    plain = socket.socket()
    try:
        plain.bind(("127.0.0.1", port))
        time_wait = False
    except OSError:
        time_wait = True  # the condition this test is about holds
    finally:
        plain.close()
    assert time_wait
    assert not portscan.in_use(port)
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", port))
    busy.listen()
    try:
        assert portscan.in_use(port)  # a listener still counts
    finally:
        busy.close()


@pytest.mark.parametrize(("text", "expected"), [
    ('PLAIN=value\n', {"PLAIN": "value"}),
    ('ESCAPED="C:\\\\tmp\\\\new"\n', {"ESCAPED": "C:\\tmp\\new"}),
    ('KEY="-----BEGIN KEY-----\nline two\n-----END KEY-----"\nNEXT=1\n',
     {"KEY": "-----BEGIN KEY-----\nline two\n-----END KEY-----", "NEXT": "1"}),
    ("QUOTED='q' # a comment\n", {"QUOTED": "q"}),
    ("export SPACED = 'a b'  \nBARE\n# only a comment\n", {"SPACED": "a b"}),
    ("LITERAL='${HOME} \\n stays'\nDOUBLE=\"tab\\there\"\n",
     {"LITERAL": "${HOME} \\n stays", "DOUBLE": "tab\there"}),
])
def test_env_file_is_read_as_dotenv_reads_it(text: str, expected: dict[str, str]) -> None:
    from taskmuxd.projects.environment import parse_dotenv

    assert parse_dotenv(text) == expected
