"""Fixtures for the self-update tests: releases built from this checkout, an installed layout.

Built once per test run and shared by the xdist workers (under a lock in pytest's shared
temporary folder):

- wheels of this checkout with bumped versions, some deliberately broken (``RELEASES``);
- a wheelhouse of every dependency, so installing a version runs ``pip install --no-index
  --find-links`` instead of resolving against an index (the updater honours pip's own
  ``PIP_*`` environment, so the tests set ``PIP_NO_INDEX``/``PIP_FIND_LINKS`` and nothing in
  the product changes);
- the base version's virtual environment. Each test links it in as
  ``app/versions/1.0.0`` (a version directory may be a symlink: pruning unlinks it), so a
  test pays only for the versions its update installs.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from taskmuxctl.core.update import bootguard
from tests.fakegithub import FakeGitHub, public_key_text
from tests.helpers import REPO, read, read_daemon_pid_kill, wait_until

BASE = "1.0.0"
GOOD = "1.1.0"
BROKEN_PREFLIGHT = "1.1.1"  # a module raises on import: the preflight refuses it
NO_IMPORT = "1.2.0"  # `taskmuxd run` imports a module the release does not ship
CRASHES = "1.3.0"  # `taskmuxd run` exits before READY
NEWER = "1.4.0"
DIES = "1.5.0"  # answers, then dies two seconds after READY
READY_ANCHOR = r"^ +bootmark\.ready\(self\.paths, __version__\)\n"
RUN_ANCHOR = r"^def run\(.*\) -> int:\n"  # a regular expression: the signature may change
RELEASES: dict[str, list[tuple[str, str, str]]] = {
    BASE: [], GOOD: [], NEWER: [],
    BROKEN_PREFLIGHT: [("taskmuxd/broken_on_purpose.py", "", "raise ImportError('broken')\n")],
    NO_IMPORT: [("taskmuxd/cli.py", RUN_ANCHOR, "    import taskmuxd.not_shipped  # noqa\n")],
    CRASHES: [("taskmuxd/cli.py", RUN_ANCHOR,
               "    raise SystemExit('taskmuxd: this release crashes on start')\n")],
    DIES: [("taskmuxd/daemon.py", READY_ANCHOR,
            "        __import__('threading').Timer(2.0, __import__('os')._exit, (70,)).start()\n")],
}
EPOCH = "1700000000"
PROBATION = 1  # seconds (config.toml): keeps direct-mode updates quick
PIP_ENV = ("PIP_NO_INDEX", "PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
EDITABLE_BUILD_REQUIRES = ["editables~=0.3"]  # what hatchling asks for to build editable


def load_release_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "taskmux_release_script", os.path.join(REPO, "packaging", "release.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_source(dest: str, version: str,
                patches: list[tuple[str, str, str]] | None = None) -> str:
    """This checkout's package sources with ``version`` (and ``patches``) applied."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache")
    for folder in ("taskmuxd", "taskmuxctl", "packaging", "systemd", "launchd"):
        shutil.copytree(os.path.join(REPO, folder), os.path.join(dest, folder), ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), dest)
    init = os.path.join(dest, "taskmuxctl", "__init__.py")
    with open(init, "w") as fh:
        fh.write(f'__version__ = "{version}"\n')
    for rel_path, anchor, text in patches or []:
        path = os.path.join(dest, rel_path)
        if not anchor:
            with open(path, "w") as fh:
                fh.write(text)
            continue
        with open(path) as fh:
            content = fh.read()
        found = re.search(anchor, content, re.MULTILINE)
        assert found, f"{anchor!r} not in {rel_path}"
        with open(path, "w") as fh:
            fh.write(content[:found.end()] + text + content[found.end():])
    return dest


@dataclass
class Builds:
    root: str
    wheels: dict[str, str]
    wheelhouse: str
    base_venv: str
    python: str

    def pip_env(self) -> dict[str, str]:
        """pip's own settings for the installs a test runs: no index, this run's wheels, and
        no byte-compiling of every installed file (``PIP_COMPILE=0`` is pip's ``--no-compile``;
        ``PIP_NO_COMPILE`` would read the value backwards). pip compiling all of textual, rich
        and pygments cost more CPU than the rest of an install; the few modules a version's
        programs import are compiled when first imported instead (see ``installed_env``)."""
        return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": self.wheelhouse,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_COMPILE": "0"}


def _build_all(root: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    script = load_release_script()
    wheels = os.path.join(root, "wheels")
    os.makedirs(wheels, exist_ok=True)
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH

    def build(version: str) -> str:
        src = copy_source(os.path.join(root, "src", version), version, RELEASES[version])
        return str(script.build_wheel(src, wheels, isolation=False))

    # Each build is a pip process of its own, mostly waiting on the one before it in turn;
    # the other workers wait for these builds, so run them side by side.
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        others = [pool.submit(build, v) for v in RELEASES if v != BASE]
        base_wheel = build(BASE)
        wheelhouse = dependency_wheelhouse(base_wheel)
        for future in others:
            future.result()
    finally:
        pool.shutdown(wait=True)
        del os.environ["SOURCE_DATE_EPOCH"]
    os.symlink(wheelhouse, os.path.join(root, "wheelhouse"))
    # The base version is built the way an update builds a version (the product's own code).
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.update.install import create_version
    from taskmuxctl.core.update.layout import AppLayout

    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    layout = AppLayout(Paths(os.path.join(root, "base-home")))
    layout.ensure()
    # Not byte-compiled as pip installs it (8.6 -> 3.1 CPU-s): the tests' programs write the
    # bytecode of what they import on first use, into this shared environment (installed_env).
    with environ({"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheelhouse, "PIP_COMPILE": "0"}):
        create_version(layout.paths, layout, BASE, base_wheel, python)
    with open(os.path.join(base_venv_path(root), ".taskmux-version"), "w") as fh:
        json.dump({"version": BASE, "sha256": "base"}, fh)


@contextlib.contextmanager
def environ(changes: dict[str, str], drop: tuple[str, ...] = ()) -> Iterator[None]:
    """``os.environ`` with ``changes`` made and ``drop`` removed, restored afterwards (the
    product's install code passes this process's environment on to pip and the preflight)."""
    saved = {k: os.environ.get(k) for k in (*changes, *drop)}
    os.environ.update(changes)
    for k in drop:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def preinstalled(builds: Builds, version: str) -> str:
    """``version`` installed once per test run exactly as an update installs it (the product's
    create_version and preflight, then marked complete with its wheel's sha256), built by the
    first test that asks (the others wait on a lock). For the tests whose subject is not the
    install itself: linked into a test's layout (``Installed.preinstall``), the update finds it
    complete with the published package's sha256 and reuses it (``update_reusing``), then
    switches, restarts and judges the new daemon as always. An install costs ~5 CPU-s (pip,
    then the preflight compiling every module it imports); the tests that are about the
    install itself (download, verification, pip, preflight, pruning) still install."""
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.update.install import create_version, preflight
    from taskmuxctl.core.update.layout import AppLayout
    from taskmuxctl.core.update.release import file_sha256

    root = os.path.join(builds.root, "preinstalled")
    os.makedirs(root, exist_ok=True)
    layout = AppLayout(Paths(os.path.join(root, version)))
    with open(os.path.join(root, f"{version}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not layout.is_complete(version):
            layout.ensure()
            # As the updater runs for the tests: pip from the wheelhouse, and the preflight
            # writing bytecode (installed_env), which every test's daemon then reuses.
            with environ(builds.pip_env(), drop=("PYTHONDONTWRITEBYTECODE",)):
                create_version(layout.paths, layout, version, builds.wheels[version],
                               builds.python)
                preflight(layout.paths, layout, version)
            layout.mark_complete(version, file_sha256(builds.wheels[version]))
    return layout.version_dir(version)


def base_venv_path(root: str) -> str:
    return os.path.join(root, "base-home", "app", "versions", BASE)  # venvs do not move


WHEELHOUSE_FORMAT = "bytecode-3"  # in the cache key: a change here builds a new wheelhouse
# What an installed version's programs import beyond what `taskmuxd version` (the preflight)
# does: the daemon's file watcher, the config editing of `taskmuxctl config set`.
ALSO_IMPORTED = ("watchdog.observers", "tomlkit")


def dependency_wheelhouse(wheel: str) -> str:
    """Wheels of every dependency, resolved once and kept between runs (keyed by the
    dependency list, the build backend, the interpreter and ``WHEELHOUSE_FORMAT``), so a test
    run does not ask an index again. The build backend's wheels are there too (the demo's
    ``pip install -e .`` builds the checkout in an isolated environment that installs them).

    The dependency wheels carry the bytecode of the modules taskmux's programs import
    (``add_bytecode``), so that the preflight and the first start of each version the tests
    install do not compile textual, rich, pydantic... from source every time (~0.9 CPU-s a
    preflight). taskmux's own wheels are left exactly as the release script builds them."""
    import hashlib
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)
    deps = project["project"]["dependencies"]
    backend = [*project["build-system"]["requires"], *EDITABLE_BUILD_REQUIRES]
    key = hashlib.sha256(json.dumps([deps, backend, sys.version, WHEELHOUSE_FORMAT])
                         .encode()).hexdigest()[:16]
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "taskmux-tests", f"wheelhouse-{key}")
    if os.path.exists(os.path.join(cache, ".complete")):
        return cache
    tmp = f"{cache}.{os.getpid()}.tmp"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", tmp, wheel, *backend],
                   check=True, capture_output=True, timeout=600)
    for name in os.listdir(tmp):
        if name.startswith("taskmux-"):
            os.unlink(os.path.join(tmp, name))
    imported = imported_files(wheel, tmp)
    for name in os.listdir(tmp):
        if name.endswith(".whl"):
            add_bytecode(os.path.join(tmp, name), imported)
    open(os.path.join(tmp, ".complete"), "w").close()
    shutil.rmtree(cache, ignore_errors=True)
    os.rename(tmp, cache)
    return cache


def imported_files(wheel: str, wheelhouse: str) -> set[str]:
    """The files (paths inside site-packages) that the preflight's ``taskmuxd version`` and
    ``ALSO_IMPORTED`` load, found once by installing ``wheel`` into a throwaway environment.
    Only a hint: a module left out is compiled when imported, as before."""
    import tempfile

    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    with tempfile.TemporaryDirectory(prefix="tmx-wheelhouse-") as tmp:
        venv = os.path.join(tmp, "venv")
        subprocess.run([python, "-m", "venv", "--without-pip", venv], check=True,
                       capture_output=True, timeout=120)
        env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheelhouse,
               "PIP_COMPILE": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        subprocess.run([sys.executable, "-m", "pip", "--python", os.path.join(venv, "bin",
                        "python"), "install", "-q", wheel], check=True, capture_output=True,
                       env=env, timeout=600)
        # The preflight's own command, then the rest, writing bytecode as they import: the
        # files they compiled are the ones wanted.
        run_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        run_env.update(TASKMUX_HOME=os.path.join(tmp, "home"), TASKMUX_NO_DAEMON_START="1")
        bin_dir = os.path.join(venv, "bin")
        for argv in ([os.path.join(bin_dir, "taskmuxd"), "version"],
                     [os.path.join(bin_dir, "python"), "-c",
                      "".join(f"import {name}\n" for name in ALSO_IMPORTED)]):
            subprocess.run(argv, check=True, capture_output=True, timeout=120, env=run_env)
        [site] = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))
        found = set()
        for pyc in glob.glob(os.path.join(site, "**", "__pycache__", "*.pyc"), recursive=True):
            folder = os.path.dirname(os.path.dirname(pyc))
            source = os.path.join(folder, os.path.basename(pyc).split(".")[0] + ".py")
            found.add(os.path.relpath(source, site))
        return found


def add_bytecode(wheel: str, files: set[str]) -> int:
    """Rewrite ``wheel`` in place with ``__pycache__/*.{cache_tag}.pyc`` for those of its
    modules named in ``files``, compiled as unchecked-hash pycs (valid whatever the installed
    sources' times: Python does not look at the source), each listed in RECORD with its hash
    and size as the wheel format asks. Returns how many it added."""
    import base64
    import hashlib
    import py_compile
    import tempfile
    import zipfile

    tag = sys.implementation.cache_tag
    added: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as zin, tempfile.TemporaryDirectory() as tmp:
        names = set(zin.namelist())
        [record] = [n for n in names if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
        for name in sorted(names & files):
            folder, base = os.path.split(name)
            pyc = os.path.join(folder, "__pycache__", f"{base[:-3]}.{tag}.pyc")
            if pyc in names:
                continue
            source = os.path.join(tmp, "source.py")
            with open(source, "wb") as fh:
                fh.write(zin.read(name))
            try:
                py_compile.compile(source, os.path.join(tmp, "out.pyc"), dfile=name,
                                   doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            except py_compile.PyCompileError:
                continue
            with open(os.path.join(tmp, "out.pyc"), "rb") as fh:
                added[pyc] = fh.read()
        if not added:
            return 0
        lines = zin.read(record).decode().splitlines()
        for pyc, data in added.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            lines.append(f"{pyc},sha256={digest.decode()},{len(data)}")
        out = wheel + ".new"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                if info.filename != record:
                    zout.writestr(info, zin.read(info))
            for pyc, data in added.items():
                zout.writestr(pyc, data)
            zout.writestr(record, "\n".join(lines) + "\n")
    os.replace(out, wheel)
    return len(added)


def ensure_builds(shared: str) -> str:
    """Build everything once into ``shared``/update-builds (under a lock: the first caller
    builds, the others wait for it); returns that folder."""
    root = os.path.join(shared, "update-builds")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(shared, "update-builds.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = os.path.join(root, "done")
        if not os.path.exists(done):
            _build_all(root)
            open(done, "w").close()
    return root


def start_builds_early(shared: str) -> subprocess.Popen[bytes]:
    """``ensure_builds`` in a process of its own, started by the xdist controller before the
    workers: the slow tests the workers take first wait on these builds."""
    return subprocess.Popen([sys.executable, "-m", "tests.update_fixtures", shared], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    # This run's folder, which every xdist worker's own folder is inside.
    base = tmp_path_factory.getbasetemp()
    shared = str(base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)
    root = ensure_builds(shared)
    wheels = {v: os.path.join(root, "wheels", f"taskmux-{v}-py3-none-any.whl") for v in RELEASES}
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    return Builds(root, wheels, os.path.join(root, "wheelhouse"),
                  base_venv_path(root), python)


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_text(key: Ed25519PrivateKey) -> str:
    import base64

    return base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw,
                                              NoEncryption())).decode()


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as gh:
        yield gh


@dataclass
class Installed:
    """A TASKMUX_HOME with the base version installed in the versioned layout."""

    home: str
    env: dict[str, str]
    gh: FakeGitHub
    key: Ed25519PrivateKey
    builds: Builds
    services: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def app(self) -> str:
        return os.path.join(self.home, "app")

    def current(self) -> str | None:
        return bootguard.link_version(self.app, "current")

    def previous(self) -> str | None:
        return bootguard.link_version(self.app, "previous")

    def versions(self) -> list[str]:
        return sorted(os.listdir(os.path.join(self.app, "versions")))

    def snapshot(self) -> dict[str, Any]:
        """Everything an update must leave alone when it refuses."""
        state = os.path.join(self.app, "update.json")
        return {"current": self.current(), "previous": self.previous(),
                "versions": self.versions(),
                "state": read(state) if os.path.exists(state) else None,
                "record": bootguard.load_record(self.app),
                "tmp": sorted(os.listdir(os.path.join(self.app, "tmp")))}

    def ctl(self, *args: str, timeout: float = 180, env: dict[str, str] | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the installed current taskmuxctl."""
        return subprocess.run([os.path.join(self.app, "current", "bin", "taskmuxctl"), *args],
                              env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)

    def ctl_json_in(self, cwd: str, *args: str) -> tuple[int, dict[str, Any]]:
        return self.ctl_json(*args, cwd=cwd)

    def ctl_json(self, *args: str, timeout: float = 180,
                 cwd: str | None = None) -> tuple[int, dict[str, Any]]:
        proc = self.ctl("--json", *args, timeout=timeout, cwd=cwd)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"stdout={proc.stdout!r} stderr={proc.stderr!r}"
        return proc.returncode, json.loads(lines[0])

    def preinstall(self, version: str) -> None:
        """Link the run's shared install of ``version`` (``preinstalled``) into this layout,
        complete and marked with its package's sha256: the next update to ``version`` reuses
        it (the path an update back to a version still installed takes) instead of
        installing it."""
        os.symlink(preinstalled(self.builds, version),
                   os.path.join(self.app, "versions", version))

    def publish(self, version: str, **kw: Any) -> dict[str, Any]:
        return self.gh.publish(version, self.builds.wheels[version], self.key, **kw)

    def daemon_version(self) -> str | None:
        from taskmuxctl.core.paths import Paths
        from taskmuxctl.core.update.restart import daemon_version

        return daemon_version(Paths(self.home), timeout=1.0)

    def daemon_pid(self) -> int | None:
        from taskmuxctl.core.fsutil import read_pid

        return read_pid(os.path.join(self.home, "daemon.pid"))

    def start_service(self, *guard_args: str) -> str:
        """Run the daemon under the fake service manager, through the boot-guard; returns
        the file where the manager records each start."""
        record = os.path.join(self.home, "service-starts")
        guard = [self.builds.python, os.path.join(self.app, "bootguard.py"), "--home",
                 self.home, *guard_args, "run"]
        log = open(os.path.join(self.home, "service.log"), "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "fake_service.py"),
                                 "--record", record, "--", *guard], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.services.append(proc)
        return record

    def stop_services(self) -> None:
        for proc in self.services:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)

    def service_log(self) -> str:
        path = os.path.join(self.home, "service.log")
        return read(path) if os.path.exists(path) else ""


def installed_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for the programs of installed versions: without the suite's pip settings, and
    writing bytecode (as on a user's machine), so that a version installed without compiling
    compiles each module once, on its first import, rather than on every start (CI sets
    PYTHONDONTWRITEBYTECODE for the suite's own processes)."""
    return {k: v for k, v in env.items() if k not in (*PIP_ENV, "PYTHONDONTWRITEBYTECODE")}


def make_installed(home: str, env: dict[str, str], gh: FakeGitHub, key: Ed25519PrivateKey,
                   builds: Builds) -> Installed:
    app = os.path.join(home, "app")
    for sub in ("versions", "tmp"):
        os.makedirs(os.path.join(app, sub), mode=0o700)
    os.symlink(builds.base_venv, os.path.join(app, "versions", BASE))
    bootguard.set_link(app, "current", BASE)
    shutil.copy(os.path.join(REPO, "taskmuxctl", "core", "update", "bootguard.py"),
                os.path.join(app, "bootguard.py"))
    with open(os.path.join(app, "layout.json"), "w") as fh:
        json.dump({"format": 1, "python": builds.python}, fh)
    with open(os.path.join(home, "config.toml"), "w") as fh:
        fh.write(f'release_url = "{gh.channel}"\ntrusted_keys = ["{public_key_text(key)}"]\n'
                 f"update_probation = {PROBATION}\n")
    full_env = installed_env(env)
    full_env.update(builds.pip_env())
    return Installed(home, full_env, gh, key, builds)


@pytest.fixture
def installed(home: str, env: dict[str, str], github: FakeGitHub,
              signing_key: Ed25519PrivateKey, builds: Builds) -> Iterator[Installed]:
    inst = make_installed(home, env, github, signing_key, builds)
    try:
        yield inst
    finally:
        inst.stop_services()
        read_daemon_pid_kill(home)


def wait_version(inst: Installed, version: str, timeout: float = 60.0) -> None:
    wait_until(lambda: inst.daemon_version() == version, timeout,
               f"the daemon to answer as {version}")


StartService = Callable[..., str]


if __name__ == "__main__":  # start_builds_early
    ensure_builds(sys.argv[1])
