"""``env`` prints exports a real shell evaluates to exactly the values; ``open`` hands the URL
to $BROWSER, or prints it when there is no browser."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from taskmuxctl.commands.urls import render_env, var_name
from tests.helpers import read, run_cli, run_json, wait_until
from tests.projects import status, write_project

NASTY = {
    "A_QUOTE": "it's",
    "A_DQUOTE": 'say "hi"',
    "A_SUBST": "$(touch pwned) `touch pwned` ${HOME}",
    "A_BACKSLASH": "back\\slash\\'",
    "A_NEWLINE": "one\ntwo",
    "A_GLOB": "* ? [a]",
    "A_UNICODE": "caf\u00e9 \u2713",
}


def evaluate(shell: str, script: str, names: list[str], cwd: str) -> list[str]:
    """Run ``script`` in ``shell`` and read back each variable's value."""
    # fish expands "$X" like POSIX shells do for one value; quoted, both keep it whole.
    show = " ".join(f'"${n}"' for n in names)
    body = f"{script}\nprintf '%s\\0' {show}"
    proc = subprocess.run([shell, "-c", body], capture_output=True, cwd=cwd, timeout=30,
                          env={"PATH": os.environ["PATH"], "HOME": cwd})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_exports_survive_a_real_shell_unchanged(shell: str, tmp_path: Any) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    script = render_env(NASTY, shell)
    values = evaluate(shell, script, list(NASTY), str(tmp_path))
    assert values == list(NASTY.values())
    assert not os.path.exists(os.path.join(str(tmp_path), "pwned"))


def test_variable_names() -> None:
    assert var_name("web") == "TASKMUX_URL_WEB"
    assert var_name("my-api-2") == "TASKMUX_URL_MY_API_2"


@pytest.fixture
def urls_project(tmp_path: Any) -> str:
    return write_project(str(tmp_path / "shop"), """
        name = "shop"
        [tasks.my-web]
        command = "sleep 100"
        host = "my-web"
        [tasks.api]
        command = "sleep 100"
        host = "api"
        [tasks.worker]
        command = "sleep 100"
    """)


def test_env_output_evaluated_by_bash(env: dict[str, str], urls_project: str,
                                      daemon: object) -> None:
    proc = run_cli(["env", "--shell", "bash"], env, cwd=urls_project)
    assert proc.returncode == 0, proc.stderr
    names = ["TASKMUX_PROJECT", "TASKMUX_URL_MY_WEB", "TASKMUX_URL_API"]
    values = evaluate("bash", proc.stdout, names, urls_project)
    urls = {t["name"]: t["url"] for t in status(env, urls_project)["tasks"]}
    assert values == ["shop", urls["my-web"], urls["api"]]
    assert urls["api"].startswith("https://api.shop.localhost")
    assert "WORKER" not in proc.stdout
    code, out = run_json(["env"], env, cwd=urls_project)
    assert code == 0 and out["vars"] == dict(zip(names, values, strict=True))
    fish = run_cli(["env"], {**env, "SHELL": "/usr/bin/fish"}, cwd=urls_project).stdout
    assert fish.startswith("set -gx TASKMUX_PROJECT 'shop'\n")


def test_open_hands_the_url_to_the_browser(env: dict[str, str], urls_project: str,
                                           daemon: object, tmp_path: Any) -> None:
    assert run_json(["daemon", "register"], env, cwd=urls_project)[0] == 0
    seen = os.path.join(str(tmp_path), "browser-saw")
    browser = os.path.join(str(tmp_path), "fake-browser")
    with open(browser, "w") as fh:
        fh.write(f'#!/bin/sh\nprintf "%s" "$*" > {seen}\n')
    os.chmod(browser, 0o755)
    plain = {k: v for k, v in env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    code, out = run_json(["open", "my-web"], {**plain, "BROWSER": f"missing-one:{browser}"},
                         cwd=urls_project)
    assert code == 0 and out["opened"] is True
    urls = {t["name"]: t["url"] for t in status(env, urls_project)["tasks"]}
    assert out["url"] == urls["my-web"]
    assert wait_until(lambda: read(seen), 5, "the browser to be run") == urls["my-web"]
    os.unlink(seen)
    code, out = run_json(["open", "api"], {**plain, "BROWSER": f"{browser} --new-tab=%s"},
                         cwd=urls_project)
    # (printf writes its one line in one write: what is read at all is all of it)
    assert wait_until(lambda: read(seen), 5, "the browser to be run again") == \
        f"--new-tab={urls['api']}"
    proc = run_cli(["open", "api"], {**plain, "BROWSER": ""}, cwd=urls_project)
    assert proc.returncode == 0
    assert proc.stdout == urls["api"] + "\n"
    assert "no browser found" in proc.stderr
    code, out = run_json(["open", "worker"], plain, cwd=urls_project)
    assert code == 1 and "has no URL" in out["error"]


def test_env_stays_light(env: dict[str, str], urls_project: str, daemon: object) -> None:
    """direnv runs `eval "$(taskmux env)"` on every cd: it must cost what status costs."""
    from tests.test_imports import FORBIDDEN, imported_modules, top_level

    assert run_json(["daemon", "register"], env, cwd=urls_project)[0] == 0
    full = imported_modules(["env", "-p", "shop"], env)
    assert "taskmuxctl.commands.urls" in full
    assert not sorted(top_level(full) & set(FORBIDDEN))
