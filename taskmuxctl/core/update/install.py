"""Installing one version: its virtual environment, the package, and the preflight.

A version lives in ``app/versions/{version}``, a virtual environment built from the base
interpreter. The environment is created without pip (``ensurepip`` alone costs seconds); the
pip running this code installs the package into it with ``--python``, together with pip itself
from the interpreter's bundled wheel, so the new version can install the one after it. Where
that is not possible the environment is created the ordinary way, with ``ensurepip``.
Dependencies come from the package index as pip is configured (``PIP_INDEX_URL``,
``PIP_FIND_LINKS``... are honoured).

The preflight runs the new version's own ``taskmuxd version`` (which imports every module of
both packages) and ``taskmuxctl version`` with a timeout; both must report exactly the version
being installed.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.update.layout import AppLayout

PIP_TIMEOUT = 900.0
PREFLIGHT_TIMEOUT = 60.0
# Variables that would let an outer environment leak into a version's interpreter.
SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV",
            "PYTHONSAFEPATH")


class InstallFailed(Exception):
    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.output = output


def clean_env(paths: Paths, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env["TASKMUX_HOME"] = paths.home
    env.update(extra or {})
    return env


def base_python(layout: AppLayout) -> str:
    """The interpreter versions are built from: the recorded one, else the one under the
    running environment."""
    recorded = layout.python()
    if recorded:
        return recorded
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base) if os.path.exists(base) else sys.executable


def run(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None,
        what: str = "") -> str:
    """Run a command in its own process group; kill the group on timeout. Returns output."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise InstallFailed(f"{what or argv[0]} did not finish within {timeout:g}s",
                            out.decode(errors="replace")) from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise InstallFailed(f"{what or argv[0]} failed (exit status {proc.returncode})", text)
    return text


def _pip_supports_python_option() -> bool:
    try:
        import pip
    except ImportError:
        return False
    try:
        major, minor = (int(p) for p in pip.__version__.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (22, 3)


def _bundled_pip_wheel(python: str) -> str | None:
    """The pip wheel the interpreter ships (ensurepip's, or Debian's), if any."""
    out = run([python, "-c", "import ensurepip, os; print(os.path.dirname(ensurepip.__file__))"],
              30, what="finding ensurepip")
    for folder in (os.path.join(out.strip(), "_bundled"), "/usr/share/python-wheels"):
        wheels = sorted(glob.glob(os.path.join(folder, "pip-*.whl")))
        if wheels:
            return wheels[-1]
    return None


def create_version(paths: Paths, layout: AppLayout, version: str, package: str,
                   python: str, timeout: float = PIP_TIMEOUT) -> None:
    """Build ``versions/{version}`` holding ``package`` (a wheel file). Raises InstallFailed
    and leaves nothing behind."""
    target = layout.version_dir(version)
    layout.remove_version(version)
    env = clean_env(paths, {"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    try:
        venv_python = os.path.join(target, "bin", "python")
        pip_cmd: list[str]
        try:
            bundled = _bundled_pip_wheel(python) if _pip_supports_python_option() else None
        except InstallFailed:
            bundled = None
        if bundled:
            run([python, "-m", "venv", "--without-pip", target], 120, env, "python -m venv")
            pip_cmd = [sys.executable, "-m", "pip", "--python", venv_python, "install", bundled]
        else:
            run([python, "-m", "venv", target], 300, env, "python -m venv")
            pip_cmd = [venv_python, "-m", "pip", "install"]
        run([*pip_cmd, "--no-warn-script-location", package], timeout, env,
            f"pip install {os.path.basename(package)}")
    except BaseException:
        layout.remove_version(version)
        raise


def preflight(paths: Paths, layout: AppLayout, version: str,
              timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """The new version's own programs must load every module and report ``version``."""
    env = clean_env(paths, {"TASKMUX_NO_DAEMON_START": "1"})
    daemon = layout.bin(version, "taskmuxd")
    out = run([daemon, "version"], timeout, env, f"{version}'s `taskmuxd version`")
    reported = out.strip().splitlines()[-1:] if out.strip() else []
    if reported != [version]:
        raise InstallFailed(f"{version}'s `taskmuxd version` reported {out.strip()!r}, not "
                            f"{version!r}", out)
    client = layout.bin(version, "taskmuxctl")
    out = run([client, "--json", "--no-daemon-start", "version"], timeout, env,
              f"{version}'s `taskmuxctl version`")
    try:
        reported_client = json.loads(out.strip().splitlines()[-1])["version"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise InstallFailed(f"{version}'s `taskmuxctl version` printed no version", out) from None
    if reported_client != version:
        raise InstallFailed(f"{version}'s `taskmuxctl version` reported {reported_client!r}, "
                            f"not {version!r}", out)


def guard_source(layout: AppLayout, version: str) -> str | None:
    """The boot-guard file shipped inside ``version``."""
    pattern = os.path.join(layout.version_dir(version), "lib", "python*", "site-packages",
                           "taskmuxctl", "core", "update", "bootguard.py")
    found = sorted(glob.glob(pattern))
    return found[-1] if found else None


def install_guard(layout: AppLayout, version: str) -> None:
    """Put ``version``'s boot-guard at ``app/bootguard.py`` (atomically)."""
    from taskmuxctl.core.fsutil import atomic_write

    source = guard_source(layout, version)
    if source is None:
        raise InstallFailed(f"{version} ships no boot-guard (taskmuxctl/core/update/bootguard.py)")
    with open(source, "rb") as fh:
        atomic_write(layout.guard_script, fh.read(), mode=0o644)
