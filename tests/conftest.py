from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import DaemonProcess, kill_task_leftovers, read_daemon_pid_kill

pytest_plugins = ["tests.update_fixtures"]


@pytest.fixture
def home(tmux_socket: str) -> Iterator[str]:
    """A private, short TASKMUX_HOME (Unix socket paths must stay under 104 bytes)."""
    del tmux_socket  # set up first so that it is torn down after the daemon is gone
    path = tempfile.mkdtemp(prefix="tmx-", dir="/tmp")
    try:
        yield path
    finally:
        read_daemon_pid_kill(path)
        kill_task_leftovers(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmux_socket() -> Iterator[str]:
    """A private tmux server for the test (``tmux -L NAME``), killed afterwards."""
    name = f"tmxtest-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def env(home: str, tmux_socket: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TASKMUX_", "NOTIFY_SOCKET", "WATCHDOG_", "TMUX"))}
    base["TASKMUX_HOME"] = home
    base["TASKMUX_TMUX_SOCKET"] = tmux_socket
    return base


@pytest.fixture
def start_daemon(home: str, env: dict[str, str]) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(extra_env: dict[str, str] | None = None, wait: bool = True) -> DaemonProcess:
        daemon = DaemonProcess(home, {**env, **(extra_env or {})})
        started.append(daemon)
        return daemon.wait_ready() if wait else daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def daemon(start_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    return start_daemon()


