"""The client's start-up stays light: heavy modules are never imported on its hot paths."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import BIN, DaemonProcess

FORBIDDEN = ("asyncio", "ssl", "pydantic", "libtmux", "jsonrpcserver", "tomlkit",
             "cryptography", "argcomplete", "typing", "json", "tempfile", "dotenv", "difflib")
FORBIDDEN_ON_HELP = ("asyncio", "ssl", "pydantic", "libtmux", "jsonrpcserver", "tomlkit",
                     "cryptography", "argcomplete", "dotenv", "difflib")


def imported_modules(argv: list[str], env: dict[str, str]) -> set[str]:
    proc = subprocess.run([os.path.join(BIN, "taskmuxctl"), *argv],
                          env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
                          capture_output=True, text=True, timeout=30)
    mods = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip())
    assert mods, proc.stderr
    return mods


def top_level(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


@pytest.mark.parametrize("running", [False, True])
def test_status_imports_nothing_heavy(env: dict[str, str], running: bool,
                                      start_daemon: object) -> None:
    if running:
        daemon: DaemonProcess = start_daemon()  # type: ignore[operator]
        assert daemon.answering()
    mods = top_level(imported_modules(["--json", "daemon", "status"], env))
    assert "taskmuxctl" in mods
    bad = sorted(mods & set(FORBIDDEN))
    assert not bad, f"taskmuxctl --json daemon status imported {bad}"


def test_status_of_an_installed_service_imports_nothing_heavy(
        env: dict[str, str], home: str, tmp_path: str) -> None:
    """With a service installed, status also asks the manager (via posix_spawn, not
    subprocess, which would bring locale and more)."""
    from tests.service_fakes import make_fake_manager

    fake = make_fake_manager(str(tmp_path), env)
    unit = os.path.join(fake.root, "taskmuxd@.service")
    open(unit, "w").close()
    record = {"format": 1, "manager": "systemd", "scope": "system",
              "unit": "taskmuxd@root.service", "unit_file": unit, "user": "root", "uid": 0,
              "domain": "system"}
    with open(os.path.join(home, "service.json"), "w") as fh:
        json.dump(record, fh)
    proc = subprocess.run([os.path.join(BIN, "taskmuxctl"), "--json", "daemon", "status"],
                          env=fake.env, capture_output=True, text=True, timeout=30)
    assert '"service":{"manager":"systemd"' in proc.stdout, proc.stdout + proc.stderr
    mods = top_level(imported_modules(["--json", "daemon", "status"], fake.env))
    bad = sorted(mods & {*FORBIDDEN, "subprocess", "locale", "selectors", "threading"})
    assert not bad, f"taskmuxctl --json daemon status (service installed) imported {bad}"


def test_help_imports_nothing_heavy(env: dict[str, str]) -> None:
    mods = top_level(imported_modules(["--help"], env))
    assert "argparse" in mods
    bad = sorted(mods & set(FORBIDDEN_ON_HELP))
    assert not bad, f"taskmuxctl --help imported {bad}"


def test_the_project_option_before_the_command_stays_on_the_fast_path(
        env: dict[str, str]) -> None:
    mods = top_level(imported_modules(["-p", "shop", "--json", "--no-daemon-start", "status"],
                                      env))
    assert "argparse" not in mods and "difflib" not in mods
    bad = sorted(mods & set(FORBIDDEN))
    assert not bad, f"taskmuxctl -p shop status imported {bad}"
