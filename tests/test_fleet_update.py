"""``taskmux fleet update`` end to end: three throwaway users behind a real sshd stand for
three machines, each with taskmux installed in the versioned layout (its own daemon, tmux
server and a running task), following a stand-in for GitHub Releases. Releases are wheels of
this checkout built by the release script (tests/update_fixtures.py) and served by
tests/fakegithub.py; the crashing one is built, signed and published by the release script
itself (``packaging/release.py publish`` against the stand-in's API).

One lab for the whole story, since every installed version costs a pip install: a good
release rolls out in waves; the next one crashes on the canary, the rollout halts, the canary
is back on the good version and the bad one is marked on every machine, so neither an
explicit update nor auto-update takes it anywhere; a machine that goes down mid-rollout
halts it with a clear error and without blaming the release.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from taskmuxctl import fleet
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.update import bootguard
from tests.fakegithub import TOKEN, FakeGitHub, public_key_text
from tests.helpers import BIN, REPO, wait_until, write_config
from tests.sshd import Machine, SshLab, close_masters, ssh_lab
from tests.update_fixtures import (
    BASE,
    CRASHES,
    EPOCH,
    GOOD,
    NEWER,
    RELEASES,
    Builds,
    copy_source,
    environ,
    private_key_text,
)

CTL = os.path.join(BIN, "taskmuxctl")
PROJECT = """name = "{name}"

[tasks.web]
command = "exec sleep 600"
"""

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow(120)]  # five pip installs over ssh


def _walk_chown(path: str, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, gid)
    os.lchown(path, uid, gid)


@pytest.fixture(scope="module")
def shared(builds: Builds) -> Iterator[dict[str, str]]:
    """What every machine may read: the base version's environment (built on the system's
    python3, since the users cannot run this venv's interpreter) and the dependency wheels."""
    from tests.sshd import system_python

    python = system_python()
    if subprocess.run([python, "-c", "import ensurepip, venv"], capture_output=True,
                      timeout=60).returncode != 0:
        pytest.skip(f"{python} has no venv/ensurepip (Debian: python3-venv), which the "
                    "installed layout's versions are built with")
    root = tempfile.mkdtemp(prefix="tmxfleet-", dir="/tmp")
    os.chmod(root, 0o755)
    try:
        wheelhouse = os.path.join(root, "wheelhouse")
        shutil.copytree(os.path.realpath(builds.wheelhouse), wheelhouse)
        from taskmuxctl.core.update.install import create_version
        from taskmuxctl.core.update.layout import AppLayout

        layout = AppLayout(Paths(os.path.join(root, "base-home")))
        layout.ensure()
        # The machines' users cannot write bytecode into this root-owned environment: pip
        # leaves compiling to us (PIP_COMPILE=0), the wheelhouse carries the bytecode of the
        # dependency modules taskmux imports (update_fixtures.add_bytecode), and taskmux's own
        # packages and pip (which the users' updates run) are compiled here: 5.5 -> 3.8 CPU-s
        # against pip compiling every file.
        pip = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheelhouse, "PIP_COMPILE": "0"}
        with environ(pip):
            create_version(layout.paths, layout, BASE, builds.wheels[BASE], python)
        venv = layout.version_dir(BASE)
        [site] = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))
        subprocess.run([python, "-m", "compileall", "-q",
                        *(os.path.join(site, name) for name in ("taskmuxd", "taskmuxctl", "pip"))],
                       check=True, capture_output=True, timeout=300)
        with open(os.path.join(venv, ".taskmux-version"), "w") as fh:
            json.dump({"version": BASE, "sha256": "base"}, fh)
        for folder in (root, os.path.join(root, "base-home"), layout.app,
                       layout.versions_dir):
            os.chmod(folder, 0o755)
        yield {"root": root, "python": python, "wheelhouse": wheelhouse, "base": venv}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def install_base(machine: Machine, shared: dict[str, str], gh: FakeGitHub,
                 key: Ed25519PrivateKey) -> None:
    """The machine's ~/.taskmux: the base version installed as install.sh leaves it."""
    machine.prepare_home()
    app = os.path.join(machine.taskmux_home, "app")
    for sub in ("versions", "tmp"):
        os.makedirs(os.path.join(app, sub), mode=0o700)
    os.symlink(shared["base"], os.path.join(app, "versions", BASE))
    bootguard.set_link(app, "current", BASE)
    shutil.copy(os.path.join(REPO, "taskmuxctl", "core", "update", "bootguard.py"),
                os.path.join(app, "bootguard.py"))
    with open(os.path.join(app, "layout.json"), "w") as fh:
        json.dump({"format": 1, "python": shared["python"]}, fh)
    write_config(machine.taskmux_home, f'release_url = "{gh.channel}"\n'
                 f'trusted_keys = ["{public_key_text(key)}"]\nupdate_probation = 1\n')
    _walk_chown(machine.taskmux_home, machine.user.pw_uid, machine.user.pw_gid)


def run_as(machine: Machine, argv: list[str], cwd: str | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A command as the machine's user, with its installed taskmuxctl first on the PATH (and
    the environment its ssh sessions get)."""
    env = {"HOME": machine.home, "USER": machine.name, "LOGNAME": machine.name,
           "PATH": f"{machine.installed_bin}:/usr/bin:/bin", "LANG": "C.UTF-8",
           "TASKMUX_HOME": machine.taskmux_home, "TASKMUX_TMUX_SOCKET": machine.tmux_socket,
           **machine.lab.extra_env}
    return subprocess.run(argv, user=machine.user.pw_uid, group=machine.user.pw_gid,
                          extra_groups=[], env=env, cwd=cwd or machine.home,
                          capture_output=True, text=True, timeout=timeout)


def ctl_as(machine: Machine, *argv: str, cwd: str | None = None) -> tuple[int, dict[str, Any]]:
    proc = run_as(machine, [os.path.join(machine.installed_bin, "taskmuxctl"), "--json",
                            *argv], cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, proc.stderr
    return proc.returncode, json.loads(lines[-1])


class Forwarder:
    """A TCP port forwarded to sshd; ``stop`` closes it and every connection through it,
    as a machine that goes down would."""

    def __init__(self, to_port: int) -> None:
        self.to_port = to_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Forwarder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.to_port), timeout=10)
            upstream.settimeout(None)
            with self.lock:
                if self.stopped:
                    conn.close()
                    upstream.close()
                    return
                self.socks += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            socks, self.socks = self.socks, []
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.listener.close()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.thread.join(10)


class Story:
    def __init__(self, lab: SshLab, gh: FakeGitHub, key: Ed25519PrivateKey,
                 builds: Builds) -> None:
        self.lab = lab
        self.gh = gh
        self.key = key
        self.builds = builds
        self.machines = lab.machines
        self.home = tempfile.mkdtemp(prefix="tmxc-", dir="/tmp")
        base = {k: v for k, v in os.environ.items() if not k.startswith("TASKMUX_")}
        self.env = lab.client_env({**base, "TASKMUX_HOME": self.home,
                                   "TASKMUX_NO_DAEMON_START": "1",
                                   "TASKMUX_SSH_CONNECT_TIMEOUT": "5"})
        fleet.save(Paths(self.home), [fleet.Host(m.name, m.url, ["lab"])
                                      for m in self.machines])

    def trust_port(self, port: int) -> None:
        """The lab's host key is known on ``port`` too (a forwarder to sshd)."""
        with open(self.lab.known_hosts) as fh:
            line = fh.readline()
        with open(self.lab.known_hosts, "a") as fh:
            fh.write(line.replace(f"]:{self.lab.port} ", f"]:{port} ", 1))

    def publish(self, version: str, latest: bool = True) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def now(manifest: dict[str, Any]) -> None:
            manifest["created"] = stamp

        self.gh.publish(version, self.builds.wheels[version], self.key, edit=now,
                        latest=latest)

    def publish_with_script(self, version: str) -> None:
        """Build, sign and publish ``version`` the way a maintainer does: the release script's
        ``publish``, against the stand-in's API (the manifest's ``created`` is now)."""
        import sys

        with tempfile.TemporaryDirectory(prefix="tmxrel-") as tmp:
            src = copy_source(os.path.join(tmp, "src"), version, RELEASES[version])
            proc = subprocess.run(
                [sys.executable, os.path.join(src, "packaging", "release.py"), "publish",
                 "--source", src, "--out", os.path.join(tmp, "out"), "--repo",
                 "taskmux/taskmux", "--api-url", self.gh.api, "--download-base",
                 f"{self.gh.site}/download", "--channel-url", self.gh.channel,
                 "--no-build-isolation"],
                env={**os.environ, "GITHUB_TOKEN": TOKEN, "GITHUB_SHA": "",
                     "SOURCE_DATE_EPOCH": EPOCH,
                     "TASKMUX_SIGNING_KEY": private_key_text(self.key)},
                capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert self.gh.latest == f"v{version}"

    def fleet_update(self, *argv: str, timeout: float = 400) -> tuple[int, dict[str, Any],
                                                                       float]:
        started = time.monotonic()
        proc = subprocess.run([CTL, "--json", "fleet", "update", "--soak", "0.3",
                               "--settle", "60", "--timeout", "300", *argv], env=self.env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        took = time.monotonic() - started
        assert "Traceback" not in proc.stderr, proc.stderr
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        assert len(lines) == 1, proc.stdout + proc.stderr
        print(f"fleet update {' '.join(argv)}: {took:.1f}s")
        return proc.returncode, json.loads(lines[0]), took

    def current(self, machine: Machine) -> str | None:
        return bootguard.link_version(os.path.join(machine.taskmux_home, "app"), "current")

    def answers_as(self, machine: Machine) -> str | None:
        code, out = ctl_as(machine, "version")
        return out.get("daemon_version") if code == 0 else None

    def close(self) -> None:
        for machine in self.machines:
            close_masters(self.lab, self.home, machine, self.lab.client_config)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def story(builds: Builds, shared: dict[str, str]) -> Iterator[Story]:
    pip = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": shared["wheelhouse"],
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_COMPILE": "0"}  # as Builds.pip_env
    key = Ed25519PrivateKey.generate()
    with FakeGitHub() as gh, ssh_lab(users=0, without_taskmux=0, installed=3,
                                     extra_env=pip) as lab:
        for machine in lab.machines:
            install_base(machine, shared, gh, key)
        for machine in lab.machines:
            proc = run_as(machine, [os.path.join(machine.installed_bin, "taskmuxctl"),
                                    "daemon", "start"])
            assert proc.returncode == 0, proc.stderr
            folder = os.path.join(machine.home, "proj")
            os.makedirs(folder)
            with open(os.path.join(folder, "taskmux.toml"), "w") as fh:
                fh.write(PROJECT.format(name=f"proj-{machine.name}"))
            _walk_chown(folder, machine.user.pw_uid, machine.user.pw_gid)
            code, out = ctl_as(machine, "start", cwd=folder)
            assert code == 0, out
        s = Story(lab, gh, key, builds)
        try:
            yield s
        finally:
            s.close()


def task_pids(machine: Machine) -> dict[str, Any]:
    code, out = ctl_as(machine, "status", "-p", f"proj-{machine.name}")
    assert code == 0, out
    return {t["name"]: (t["state"], t.get("pid")) for t in out["tasks"]}


def test_staged_rollout_halts_on_a_crashing_release(story: Story) -> None:
    m1, m2, m3 = story.machines
    for m in story.machines:
        wait_until(lambda m=m: task_pids(m)["web"][0] == "running", 30, "the task to run")
    pids = {m.name: task_pids(m) for m in story.machines}
    story.publish(BASE, latest=False)
    story.publish(GOOD)

    # A good release: the canary alone, then a wave of two.
    code, out, took = story.fleet_update("--canary", "1", "--wave", "2")
    assert code == 0, out
    assert out["completed"] is True and out["version"] == GOOD and out["halted"] is None
    by = {e["name"]: e for e in out["hosts"]}
    assert [by[m.name]["phase"] for m in story.machines] == ["canary", "wave 1", "wave 1"]
    for m in story.machines:
        e = by[m.name]
        assert (e["from"], e["to"], e["outcome"]) == (BASE, GOOD, "updated"), e
        assert story.current(m) == GOOD and story.answers_as(m) == GOOD
        assert task_pids(m) == pids[m.name]  # the task never noticed
    print(f"3-machine rollout (canary 1, wave 2, soak 0.3s): {took:.1f}s; per machine: "
          + ", ".join(f"{by[m.name]['phase']} {by[m.name]['seconds']:.1f}s"
                      for m in story.machines))

    # The next release crashes on start: the canary's own update rolls it back, the rollout
    # halts there and marks it bad everywhere; the others never see it.
    story.publish_with_script(CRASHES)
    code, out, took = story.fleet_update("--canary", "1", "--wave", "2")
    assert code == 1, out
    assert out["completed"] is False and out["version"] == CRASHES
    assert out["halted"]["host"] == m1.name and out["halted"]["release_blamed"] is True
    assert "rolled back" in out["halted"]["reason"], out["halted"]
    by = {e["name"]: e for e in out["hosts"]}
    assert (by[m1.name]["phase"], by[m1.name]["outcome"]) == ("canary", "failed")
    assert by[m2.name]["outcome"] == by[m3.name]["outcome"] == "not_started"
    assert out["marked_bad"] == [m.name for m in story.machines]
    print(f"halted rollout: {took:.1f}s")
    assert story.current(m1) == GOOD and story.answers_as(m1) == GOOD
    for m in story.machines:
        app = os.path.join(m.taskmux_home, "app")
        assert CRASHES in bootguard.bad_versions(app), m.name
        assert task_pids(m) == pids[m.name]
    for m in (m2, m3):
        assert story.current(m) == GOOD
        assert CRASHES not in os.listdir(os.path.join(m.taskmux_home, "app", "versions"))
        # Not by an update there, nor by auto-update (the CLI's rules and the daemon's own).
        code, said = ctl_as(m, "update")
        assert code == 1 and "marked bad" in said["error"], said
        code, said = ctl_as(m, "update", "--auto")
        assert code == 0 and said["action"] == "none" and "marked bad" in said["reason"]
        sock = os.path.join(m.taskmux_home, "ctl.sock")
        proc = run_as(m, ["python3", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX);"
                          f"s.connect({sock!r}); s.sendall(b'{{\"jsonrpc\":\"2.0\",\"id\":1,"
                          "\"method\":\"update.check\"}\\n'); sys.stdout.write(s.makefile()"
                          ".readline())"])
        checked = json.loads(proc.stdout)["result"]
        assert checked["offered"] == CRASHES and checked["available"] is False, checked
    # Rolling the same version out again is refused before anything moves.
    code, out, _ = story.fleet_update()
    assert code == 1 and "marked bad on" in out["halted"]["reason"]
    assert {e["outcome"] for e in out["hosts"]} == {"refused"}

    # A machine that goes down mid-rollout (its ssh port through a forwarder that stops,
    # cutting the shared connection too, once the canary has switched) halts the rollout
    # at its turn with ssh's clear error; nothing hangs and the release is not blamed.
    with Forwarder(story.lab.port) as fwd:
        story.trust_port(fwd.port)
        url = f"ssh://{m3.name}@127.0.0.1:{fwd.port}"
        fleet.save(Paths(story.home), [fleet.Host(m1.name, m1.url, ["lab"]),
                                       fleet.Host(m3.name, url, ["lab"]),
                                       fleet.Host(m2.name, m2.url, ["lab"])])
        story.publish(NEWER)
        started = time.monotonic()
        proc = subprocess.Popen([CTL, "--json", "fleet", "update", "--soak", "0.3", "--settle",
                                 "60", "--timeout", "300", "--wave", "1"], env=story.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: story.current(m1) == NEWER or proc.poll() is not None, 300,
                       "the canary to switch")
            fwd.stop()
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    took = time.monotonic() - started
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    out = json.loads(stdout)
    assert out["halted"]["host"] == m3.name, out
    assert f"{m3.name}@127.0.0.1:{fwd.port} is unreachable" in out["halted"]["reason"]
    assert "check that the machine is up" in out["halted"]["reason"], out["halted"]
    assert out["halted"]["release_blamed"] is False and out["marked_bad"] == []
    by = {e["name"]: e["outcome"] for e in out["hosts"]}
    assert by == {m1.name: "updated", m3.name: "failed", m2.name: "not_started"}
    assert story.current(m1) == NEWER and story.answers_as(m1) == NEWER
    assert story.current(m2) == story.current(m3) == GOOD
    for m in story.machines:
        assert NEWER not in bootguard.bad_versions(os.path.join(m.taskmux_home, "app"))
    print(f"rollout halted by a machine that is down: {took:.1f}s")
