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


def test_check_of_a_valid_file_imports_no_pydantic(env: dict[str, str], tmp_path: str) -> None:
    """A plainly valid taskmux.toml is checked without pydantic (``taskmuxctl.quickconfig``);
    a file with a problem goes to the models, which write the message."""
    path = os.path.join(str(tmp_path), "taskmux.toml")
    with open(path, "w") as fh:
        fh.write('name = "shop"\n[tasks.db]\ncommand = "sleep 100"\ntype = "oneshot"\n'
                 '[tasks.web]\ncommand = "serve"\nhost = "@"\n'
                 'depends_on = { db = { condition = "completed_successfully" } }\n')
    mods = imported_modules(["check", "-c", path], env)
    assert "taskmuxctl.quickconfig" in mods
    bad = sorted(top_level(mods) & {"pydantic", "pydantic_core", "tomlkit", "logging"}
                 | mods & {"importlib.metadata"})
    assert not bad, f"taskmuxctl check (a valid file) imported {bad}"
    with open(path, "a") as fh:
        fh.write("log_max_files = 0\n")
    assert "pydantic" in top_level(imported_modules(["check", "-c", path], env))


def test_no_pydantic_plugin_search_in_the_client(env: dict[str, str], tmp_path: str) -> None:
    """Validating with pydantic (a file with a problem), the client does not look for pydantic
    plugins (importlib.metadata and the entry points of every distribution)."""
    path = os.path.join(str(tmp_path), "taskmux.toml")
    with open(path, "w") as fh:
        fh.write('[tasks.web]\ncommand = "serve"\nlog_max_files = 0\n')
    mods = imported_modules(["check", "-c", path], env)
    assert "pydantic" in top_level(mods)
    assert "importlib.metadata" not in mods
    mods = imported_modules(["check", "-c", path],
                            {**env, "PYDANTIC_DISABLE_PLUGINS": "some-plugin"})
    assert "importlib.metadata" in mods  # the user's own setting: pydantic decides
