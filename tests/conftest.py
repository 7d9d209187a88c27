from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import DaemonProcess, read_daemon_pid_kill

pytest_plugins = ["tests.update_fixtures"]


@pytest.fixture
def home() -> Iterator[str]:
    """A private, short TASKMUX_HOME (Unix socket paths must stay under 104 bytes)."""
    path = tempfile.mkdtemp(prefix="tmx-", dir="/tmp")
    try:
        yield path
    finally:
        read_daemon_pid_kill(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(home: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TASKMUX_", "NOTIFY_SOCKET", "WATCHDOG_", "TMUX"))}
    base["TASKMUX_HOME"] = home
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


