"""install.sh, as users run it (`curl -fsSL .../install.sh | sh`), against a stand-in for
GitHub Releases holding a release made by the release script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from taskmuxctl.core.update import bootguard
from tests.fakegithub import FakeGitHub, public_key_text
from tests.helpers import read_daemon_pid_kill
from tests.update_fixtures import (
    EPOCH,
    GOOD,
    NEWER,
    Builds,
    copy_source,
    private_key_text,
)

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow(35)]  # minutes of pip on busy cores


def make_release(gh: FakeGitHub, builds: Builds, key: Ed25519PrivateKey, version: str,
                 tmp: str) -> None:
    """Build ``version`` with packaging/release.py and put its four files on ``gh``."""
    src = copy_source(os.path.join(tmp, f"src-{version}"), version)
    out = os.path.join(tmp, f"out-{version}")
    proc = subprocess.run(
        [sys.executable, os.path.join(src, "packaging", "release.py"), "build", "--source", src,
         "--out", out, "--download-base", f"{gh.site}/download", "--channel-url", gh.channel,
         "--no-build-isolation"],
        env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH,
             "TASKMUX_SIGNING_KEY": private_key_text(key)},
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    files = json.loads(proc.stdout)["files"]
    assets = {}
    for path in files.values():
        with open(path, "rb") as fh:
            assets[os.path.basename(path)] = fh.read()
    gh.add_release(f"v{version}", assets)


@pytest.fixture
def user_home(tmp_path: Any) -> str:
    return str(tmp_path / "user")


def install(gh: FakeGitHub, builds: Builds, key: Ed25519PrivateKey, user_home: str,
            state: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": user_home, "TASKMUX_HOME": state,
           "TASKMUX_TRUSTED_KEYS": public_key_text(key), "TASKMUX_INSTALL_SERVICE": "no",
           **builds.pip_env(), **(extra or {})}
    return subprocess.run(["sh", "-c", f"curl -fsSL {gh.site}/latest/download/install.sh | sh"],
                          env=env, capture_output=True, text=True, timeout=280)


@pytest.mark.slow(90)
def test_install_converge_repair_and_update(github: FakeGitHub, builds: Builds,
                                           signing_key: Ed25519PrivateKey, user_home: str,
                                           home: str, tmp_path: Any) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    os.makedirs(user_home)
    make_release(github, builds, signing_key, GOOD, str(tmp_path))
    app = os.path.join(home, "app")
    bin_dir = os.path.join(user_home, ".local", "bin")
    try:
        proc = install(github, builds, signing_key, user_home, home)
        assert proc.returncode == 0, proc.stderr
        assert bootguard.link_version(app, "current") == GOOD
        assert f"taskmux {GOOD} is installed" in proc.stderr
        assert "install the service later with: taskmuxctl daemon install" in proc.stderr
        assert "add " + bin_dir + " to your PATH" in proc.stderr
        assert sorted(os.listdir(os.path.join(app, "versions"))) == [GOOD]
        assert not [n for n in os.listdir(app) if n.startswith(".install")]  # no bootstrap left
        for name in ("taskmuxctl", "taskmux"):
            shim = os.path.join(bin_dir, name)
            out = subprocess.run([shim, "--json", "version"], capture_output=True, text=True,
                                 env={"PATH": os.environ["PATH"], "HOME": user_home})
            assert json.loads(out.stdout)["version"] == GOOD, out.stderr
        ctl = os.path.join(bin_dir, "taskmuxctl")
        env = {"PATH": os.environ["PATH"], "HOME": user_home}
        started = subprocess.run([ctl, "--json", "daemon", "start"], capture_output=True,
                                 text=True, env=env, timeout=60)
        assert started.returncode == 0, started.stdout + started.stderr
        with open(f"/proc/{json.loads(started.stdout)['pid']}/cmdline", "rb") as fh:
            assert f"/versions/{GOOD}/bin/taskmuxd".encode() in fh.read()

        # Re-running changes nothing...
        again = install(github, builds, signing_key, user_home, home)
        assert again.returncode == 0, again.stderr
        assert "is installed; checking for a newer release" in again.stderr
        assert sorted(os.listdir(os.path.join(app, "versions"))) == [GOOD]
        # ...and puts back what went missing.
        os.unlink(os.path.join(app, "bootguard.py"))
        os.unlink(os.path.join(bin_dir, "taskmux"))
        repaired = install(github, builds, signing_key, user_home, home)
        assert repaired.returncode == 0, repaired.stderr
        assert os.path.exists(os.path.join(app, "bootguard.py"))
        assert os.path.exists(os.path.join(bin_dir, "taskmux"))
        # A newer release: re-running updates (and restarts the daemon onto it).
        make_release(github, builds, signing_key, NEWER, str(tmp_path))
        newer = install(github, builds, signing_key, user_home, home,
                        {"TASKMUX_AUTO_UPDATE": "1"})
        assert newer.returncode == 0, newer.stderr
        assert bootguard.link_version(app, "current") == NEWER
        status = subprocess.run([ctl, "--json", "daemon", "status"], capture_output=True,
                                text=True, env=env, timeout=30)
        assert json.loads(status.stdout)["version"] == NEWER
        with open(os.path.join(home, "config.toml")) as fh:
            config = fh.read()
        assert "auto_update = true" in config and github.channel in config
    finally:
        read_daemon_pid_kill(home)


def test_install_refuses_a_release_that_does_not_verify(github: FakeGitHub, builds: Builds,
                                                        signing_key: Ed25519PrivateKey,
                                                        user_home: str, home: str,
                                                        tmp_path: Any) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    os.makedirs(user_home)
    make_release(github, builds, Ed25519PrivateKey.generate(), GOOD, str(tmp_path))
    proc = install(github, builds, signing_key, user_home, home)
    assert proc.returncode == 1
    assert "not signed by a trusted key" in proc.stderr
    assert "the release did not verify; nothing was installed" in proc.stderr
    assert bootguard.link_version(os.path.join(home, "app"), "current") is None
    assert not os.path.exists(os.path.join(user_home, ".local", "bin", "taskmuxctl"))
