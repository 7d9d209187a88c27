from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import DaemonProcess, daemon_env, read_daemon_pid_kill, write_config


@pytest.fixture
def home() -> Iterator[str]:
    """A private, short TASKMUX_HOME (Unix socket paths must stay under 104 bytes).

    Its config.toml keeps test daemons off the machine's shared resources: the proxy on free
    ports with no plain-HTTP redirect, no DNS server, and no hosts file but the test's own
    (see ``helpers.safe_settings``). Tests that write config.toml use ``write_config``,
    which keeps these unless the test sets a key itself.
    """
    path = tempfile.mkdtemp(prefix="tmx-", dir="/tmp")
    write_config(path)
    try:
        yield path
    finally:
        read_daemon_pid_kill(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(home: str) -> dict[str, str]:
    return daemon_env(home)


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


