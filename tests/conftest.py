from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import scratch
from tests.helpers import (
    REPO,
    DaemonProcess,
    ProxyHarness,
    daemon_env,
    kill_processes_of_home,
    kill_task_leftovers,
    read_daemon_pid_kill,
    write_config,
)
from tests.systemd_user_manager import Unavailable, UserManager
from tests.web import ca_context

pytest_plugins = ["tests.update_fixtures"]


@pytest.hookimpl(tryfirst=True)  # before pytest's own temporary-folder set-up reads basetemp
def pytest_configure(config: pytest.Config) -> None:
    """In the controller (or a run without xdist): keep this run's temporary files in RAM where
    the machine allows (``tests/scratch.py``), pytest's ``tmp_path`` folders included.

    Take SIGINT back if the run was started with it ignored (a shell ignores it in the
    background jobs it starts: ``cmd &``): an ignored signal stays ignored across exec, so
    every command the suite starts would ignore the Ctrl-C that tests send it (``start -m``,
    ``logs -f``, ``run``), and wait for an end that never comes.

    Then compile the package's modules once, before any daemon or client starts. With
    PYTHONDONTWRITEBYTECODE set (as in CI), nothing else writes them, and every daemon and
    command the suite starts would compile its modules from source again: about 0.15 s of CPU
    per daemon start. Writing them here is explicit and safe to repeat (each file is replaced
    atomically, so xdist workers doing it at once is harmless)."""
    import compileall

    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        folder = scratch.enter()
        if folder is not None:
            config.stash[SCRATCH] = folder
            if not config.option.basetemp:  # short: tests put Unix sockets in tmp_path
                config.option.basetemp = os.path.join(folder, "p")
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for package in ("taskmuxd", "taskmuxctl"):
        compileall.compile_dir(os.path.join(REPO, package), quiet=1)
    tests = os.path.join(REPO, "tests")
    for name in sorted(os.listdir(tests)):  # the helper modules workers and children import
        if name.endswith(".py") and not name.startswith("test_") and name != "conftest.py":
            compileall.compile_file(os.path.join(tests, name), quiet=1)
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        rewrite_test_modules(config)


def pytest_sessionstart(session: pytest.Session) -> None:
    """In the xdist controller, before the workers start (xdist starts them last): the
    update tests' builds, if the run is likely to use them (see ``start_builds_early``)."""
    config = session.config
    if (not hasattr(config, "workerinput") and config.getoption("numprocesses", None)
            and builds_likely_needed(config)):
        from tests.update_fixtures import start_builds_early

        shared = str(config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
        config.stash[EARLY_BUILDS] = start_builds_early(shared)


# The update tests' release builds (tests/update_fixtures.py), used by these test files.
BUILD_USERS = ("test_demo.py", "test_fleet_update.py", "test_install_sh.py",
               "test_update_e2e.py", "test_update_guard.py", "test_update_refusals.py")
EARLY_BUILDS = pytest.StashKey[subprocess.Popen[bytes]]()
SCRATCH = pytest.StashKey[str]()  # this run's folder in RAM (tests/scratch.py)


def builds_likely_needed(config: pytest.Config) -> bool:
    """Whether a parallel run is likely to use the update tests' builds: a run of the whole
    suite (or of a file that uses them) without ``-k`` and without leaving out slow tests."""
    if config.getoption("keyword", "") or "not slow" in (config.getoption("markexpr", "") or ""):
        return False
    tests = os.path.join(REPO, "tests")
    for arg in config.args or [tests]:
        path = os.path.realpath(os.path.join(str(config.invocation_params.dir),
                                             arg.split("::")[0]))
        if path in (REPO, tests) or os.path.basename(path) in BUILD_USERS:
            return True
    return False


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = config.stash.get(EARLY_BUILDS, None)
    if proc is not None and proc.poll() is None:  # a run cut short: stop the builds
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()
    folder = config.stash.get(SCRATCH, None)
    if folder is not None and not os.environ.get("TASKMUX_TEST_KEEP_TMP"):
        scratch.leave(folder)


def rewrite_test_modules(config: pytest.Config) -> None:
    """Under xdist, rewrite the test modules' asserts once, here in the controller, into
    pytest's own cache (``tests/__pycache__/*-pytest-*.pyc``), before the workers start.
    pytest reads that cache even with PYTHONDONTWRITEBYTECODE set but then never writes it,
    so every worker rewrote every module itself: about 4 s of CPU each, most of a worker's
    collection. The workers still rewrite any module whose cached copy is missing or stale
    (pytest checks the source's size and time). Uses pytest's rewrite helpers; if their shape
    changes, this does nothing and the workers rewrite as before."""
    from pathlib import Path

    try:
        from _pytest.assertion import rewrite

        if config.getoption("assertmode") != "rewrite":
            return
        state = config.stash[rewrite.assertstate_key]
        tests = Path(REPO, "tests")
        paths = [*sorted(tests.glob("test_*.py")), tests / "conftest.py",
                 tests / "update_fixtures.py"]  # update_fixtures: a plugin (rewritten too)
        for path in paths:
            cache = rewrite.get_cache_dir(path)
            pyc = cache / (path.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(path, pyc, state.trace) is not None:
                continue
            source_hash, code = rewrite._rewrite_test(path, config)
            if rewrite.try_makedirs(cache):
                rewrite._write_pyc(state, code, source_hash, pyc)
    except (ImportError, AttributeError, TypeError, KeyError, ValueError, OSError):
        return


SLOW_SECONDS = 10.0  # what a ``slow`` mark without a figure stands for


def slow_seconds(item: pytest.Item) -> float | None:
    """``None`` for a test not marked ``slow``; else the seconds its mark gives
    (``pytest.mark.slow(90)``: about 90 s on 2 idle cores, set-up included), or SLOW_SECONDS."""
    mark = item.get_closest_marker("slow")
    if mark is None:
        return None
    return float(mark.args[0]) if mark.args else SLOW_SECONDS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` run first, longest first, so that the long ones start early
    and the parallel workers do not end waiting on one of them. The README's command hands
    tests out two at a time (``--maxschedchunk 2``), the first two to each worker in turn, so
    the first ``2 * workers`` slow tests are paired, longest with shortest, that no worker
    starts with two of the longest one after the other. The rest keep their order; every
    xdist worker sorts alike (each sees the same worker count)."""
    slow = [(seconds, index, item) for index, item in enumerate(items)
            if (seconds := slow_seconds(item)) is not None]
    slow.sort(key=lambda entry: (-entry[0], entry[1]))
    first = [item for _, _, item in slow]
    workers = int(getattr(config, "workerinput", {}).get("workercount", 0))
    if workers > 1 and config.getoption("maxschedchunk", None) == 2 and len(first) >= 2 * workers:
        longest, next_ones = first[:workers], first[workers:2 * workers]
        paired = [item for pair in zip(longest, reversed(next_ones), strict=True) for item in pair]
        first = paired + first[2 * workers:]
    chosen = {id(item) for item in first}
    items[:] = first + [item for item in items if id(item) not in chosen]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    """With TASKMUX_TEST_CPU_LOG=FILE, append each test's wall time and CPU (this process and
    the children it reaped: user+sys, seconds) to FILE as a JSON line, set-up and tear-down
    included. Off by default; used to find where the suite's time goes."""
    path = os.environ.get("TASKMUX_TEST_CPU_LOG")
    if not path:
        return (yield)

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    wall0, cpu0 = time.monotonic(), cpu()
    try:
        return (yield)
    finally:
        record = {"test": item.nodeid, "wall": time.monotonic() - wall0, "cpu": cpu() - cpu0}
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")


@contextlib.contextmanager
def private_tmux() -> Iterator[str]:
    """A private tmux server name (``tmux -L NAME``); the server is killed afterwards."""
    name = f"tmxtest-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)
        # tmux leaves its socket file behind when the server exits.
        folder = os.path.join(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}")
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))


@contextlib.contextmanager
def private_home() -> Iterator[str]:
    """A private TASKMUX_HOME (see ``home``); whatever ran on it is ended afterwards."""
    path = tempfile.mkdtemp(prefix="tmx-", dir=scratch.base())
    write_config(path)
    try:
        yield path
    finally:
        read_daemon_pid_kill(path)
        kill_task_leftovers(path)
        kill_processes_of_home(path)
        shutil.rmtree(path, ignore_errors=True)


def home_env(home: str, tmux_socket: str) -> dict[str, str]:
    base = daemon_env(home)
    base["TASKMUX_TMUX_SOCKET"] = tmux_socket
    return base


@pytest.fixture
def tmux_socket() -> Iterator[str]:
    """A private tmux server for the test (``tmux -L NAME``), killed afterwards."""
    with private_tmux() as name:
        yield name


@pytest.fixture
def home(tmux_socket: str) -> Iterator[str]:
    """A private, short TASKMUX_HOME (Unix socket paths must stay under 104 bytes).

    Its config.toml keeps test daemons off the machine's shared resources: the proxy on free
    ports with no plain-HTTP redirect, no DNS server, and no hosts file but the test's own
    (see ``helpers.safe_settings``). Tests that write config.toml use ``write_config``,
    which keeps these unless the test sets a key itself. It depends on ``tmux_socket`` so
    that the tmux server is torn down after the daemon is gone (else the daemon would bring
    the project back).
    """
    del tmux_socket
    with private_home() as path:
        yield path


@pytest.fixture
def env(home: str, tmux_socket: str) -> dict[str, str]:
    return home_env(home, tmux_socket)


@pytest.fixture(scope="module")
def module_env() -> Iterator[dict[str, str]]:
    """``env`` shared by a module's tests: one home, tmux server and (once a command starts
    it) daemon for tests that only read, or refuse, and leave the daemon as they found it.
    Saves a daemon start (about 0.4 s of CPU) per test."""
    with private_tmux() as tmux_socket, private_home() as path:
        yield home_env(path, tmux_socket)


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


@pytest.fixture(scope="module")
def manager() -> Iterator[UserManager]:
    """A private systemd user manager for the module's tests (skips where none can run)."""
    base = tempfile.mkdtemp(prefix="tmxsd-", dir="/tmp")
    try:
        mgr = UserManager(base).start()
    except Unavailable as exc:
        pytest.skip(f"cannot run a systemd user manager here: {exc}")
    try:
        yield mgr
    finally:
        mgr.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyHarness]:
    """One daemon for a module of proxy tests; each test uses its own project names."""
    home = tempfile.mkdtemp(prefix="tmx-", dir=scratch.base())
    write_config(home)
    daemon = DaemonProcess(home, daemon_env(home)).wait_ready()
    try:
        yield ProxyHarness(daemon)
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def tls(proxy: ProxyHarness) -> ssl.SSLContext:
    """A client TLS context that trusts the module daemon's CA."""
    return ca_context(proxy.ca_path)
@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start processes that are killed and reaped after the test, whatever happens."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()

