"""``send`` types into a task's pane through the daemon (text, Enter, keys, C-c, a multi-line
bracketed paste); ``attach`` puts a terminal on the project's session at the task's window."""

from __future__ import annotations

import os
import pty
import select
import subprocess
from typing import Any

import pytest

from taskmuxd.projects.panes import plan
from tests.helpers import BIN, read, run_cli, run_json, wait_until
from tests.projects import task, tmux, wait_state, write_project

PROBE = r'''
import os, sys, tty
tty.setraw(0)
os.write(1, b"\x1b[?2004hprobe ready\r\n")  # ask for bracketed paste, as shells do
got = b""
while True:
    data = os.read(0, 4096)
    if not data:
        break
    got += data
    with open(sys.argv[1] + ".tmp", "wb") as fh:
        fh.write(got)
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
'''


@pytest.fixture
def typing_project(env: dict[str, str], tmp_path: Any, daemon: object) -> str:
    folder = write_project(str(tmp_path / "typing"), """
        name = "typing"
        [tasks.shell]
        command = "bash --norc --noprofile -i"
        [tasks.probe]
        command = "python3 -u probe.py received.bin"
        [tasks.idle]
        command = "sleep 100"
        auto_start = false
    """)
    with open(os.path.join(folder, "probe.py"), "w") as fh:
        fh.write(PROBE)
    assert run_json(["start"], env, cwd=folder)[0] == 0
    wait_state(env, folder, "shell", "running")
    wait_state(env, folder, "probe", "running")
    wait_until(lambda: "probe ready" in run_cli(["logs", "probe"], env, cwd=folder).stdout,
               15, "the probe to ask for bracketed paste")
    return folder


def output_lines(env: dict[str, str], folder: str, task: str) -> list[str]:
    lines = run_cli(["logs", task, "-n", "500"], env, cwd=folder).stdout.splitlines()
    return [line.split(" ", 1)[1] if " " in line else "" for line in lines]


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process below ``pid``."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(") ", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if fields[0] not in "ZX":
            procs[int(entry)] = (int(fields[1]), cmd)
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, cmd) in procs.items():
            if ppid == parent:
                found.append((child, cmd))
                todo.append(child)
    return found


def received(folder: str) -> bytes:
    try:
        with open(os.path.join(folder, "received.bin"), "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return b""


def test_text_enter_and_control_c_reach_the_task(env: dict[str, str],
                                                  typing_project: str) -> None:
    folder = typing_project
    shell_pid = task(env, folder, "shell")["pid"]
    code, out = run_json(["send", "shell", "echo", "hello-$((40+2))"], env, cwd=folder)
    assert code == 0 and out["enter"] is True and out["paste"] is False
    assert out["bytes"] == len("echo hello-$((40+2))")
    wait_until(lambda: "hello-42" in output_lines(env, folder, "shell"), 10,
               "the shell to run the typed command")

    # C-c interrupts the command the shell runs; the shell (the task) carries on.
    run_json(["send", "shell", "sleep 300"], env, cwd=folder)
    sleeper = wait_until(lambda: next((p for p, cmd in descendants(shell_pid)
                                       if cmd == "sleep 300"), None), 10, "sleep to run")
    code, out = run_json(["send", "shell", "--keys", "C-c"], env, cwd=folder)
    assert code == 0 and out["keys"] == ["C-c"] and out["enter"] is False
    wait_until(lambda: not os.path.exists(f"/proc/{sleeper}") or
               all(p != sleeper for p, _ in descendants(shell_pid)), 10, "C-c to stop sleep")
    shell = wait_state(env, folder, "shell", "running")
    assert shell["pid"] == shell_pid and shell["restarts"] == 0

    # --no-enter types without submitting; a key name submits it.
    run_json(["send", "shell", "--no-enter", "echo", "after-$((1+1))"], env, cwd=folder)
    typed = wait_until(lambda: [line for line in output_lines(env, folder, "shell")
                                if line.endswith("echo after-$((1+1))")], 10,
                       "the typed line to show (the runner logs a waiting line after 1 s)")
    assert typed and "after-2" not in output_lines(env, folder, "shell")
    run_json(["send", "shell", "--keys", "Enter"], env, cwd=folder)
    wait_until(lambda: "after-2" in output_lines(env, folder, "shell"), 10, "Enter")


def test_multi_line_text_arrives_as_one_bracketed_paste(env: dict[str, str],
                                                        typing_project: str) -> None:
    folder = typing_project
    code, out = run_json(["send", "probe", "x = 1\nprint(x)\n  done"], env, cwd=folder)
    assert code == 0 and out["paste"] is True
    expected = b"\x1b[200~x = 1\rprint(x)\r  done\x1b[201~\r"
    wait_until(lambda: received(folder) == expected, 10, f"{expected!r} (got "
               f"{received(folder)!r})")
    run_json(["send", "probe", "--no-enter", "plain"], env, cwd=folder)
    wait_until(lambda: received(folder) == expected + b"plain", 10, "plain typing")
    # No buffer is left behind in the daemon's tmux server.
    assert "taskmux-send" not in tmux(env["TASKMUX_TMUX_SOCKET"], "list-buffers")


def test_send_refuses_what_cannot_be_typed(env: dict[str, str], typing_project: str) -> None:
    folder = typing_project
    code, out = run_json(["send", "idle", "hi"], env, cwd=folder)
    assert code == 1 and out["code"] == 113 and out["kind"] == "task_not_running"
    assert "taskmux start idle" in out["error"]
    code, out = run_json(["send", "ghost", "hi"], env, cwd=folder)
    assert code == 1 and out["code"] == 111
    proc = run_cli(["send", "shell"], env, cwd=folder)
    assert proc.returncode == 2 and "--keys" in proc.stderr


def test_long_single_line_text_goes_through_a_buffer_unbracketed() -> None:
    commands, stdin = plan("%1", "x" * 5000, True, ["C-c"], "buf")
    assert stdin == b"x" * 5000
    assert commands == [["load-buffer", "-b", "buf", "-"],
                        ["paste-buffer", "-d", "-b", "buf", "-t", "%1"],
                        ["send-keys", "-t", "%1", "Enter"], ["send-keys", "-t", "%1", "C-c"]]
    commands, stdin = plan("%1", "-literal", False, [], "buf")
    assert stdin is None and commands == [["send-keys", "-t", "%1", "-l", "--", "-literal"]]


def test_attach_puts_a_terminal_on_the_tasks_window(env: dict[str, str],
                                                    typing_project: str) -> None:
    folder = typing_project
    sock = env["TASKMUX_TMUX_SOCKET"]
    window = task(env, folder, "shell")["window"]
    master, slave = pty.openpty()
    proc = subprocess.Popen([f"{BIN}/taskmux", "attach", "shell"], cwd=folder,
                            env={**env, "TERM": "xterm-256color"}, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        def attached() -> str:
            select.select([master], [], [], 0.05) and os.read(master, 65536)
            # The daemon's own control-mode client is not a terminal on the session.
            return tmux(sock, "list-clients", "-F",
                        "#{?client_control_mode,,#{client_session} #{window_id}}").strip()

        assert wait_until(attached, 15, "a client on the session") == f"typing {window}"
        tmux(sock, "detach-client", "-s", "=typing")
        assert proc.wait(10) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_attach_explains_what_it_cannot_do(env: dict[str, str], typing_project: str) -> None:
    folder = typing_project
    code, out = run_json(["attach", "idle"], env, cwd=folder)
    assert code == 1 and out["code"] == 113 and "taskmux start idle" in out["error"]
    proc = run_cli(["attach", "shell"], {**env, "TMUX": "/tmp/elsewhere/default,1,0"},
                   cwd=folder)
    assert proc.returncode == 1 and "env -u TMUX" in proc.stderr
    assert "another tmux server" in proc.stderr
    assert read(os.path.join(folder, "taskmux.toml"))  # nothing else was touched
