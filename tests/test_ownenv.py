"""What the daemon sets for its own process only (pydantic's plugin scan off) never reaches
its children's environment, and a user's own setting is left alone."""

from __future__ import annotations

import os

import pytest

from taskmuxctl.core import noplugins
from taskmuxd import ownenv


def test_a_variable_set_for_the_daemon_is_not_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKMUX_TEST_OWN", raising=False)
    monkeypatch.setattr(ownenv, "_ADDED", set())
    ownenv.set_own("TASKMUX_TEST_OWN", "1")
    assert os.environ["TASKMUX_TEST_OWN"] == "1"
    child = ownenv.for_child(dict(os.environ))
    assert "TASKMUX_TEST_OWN" not in child and "PATH" in child
    monkeypatch.delenv("TASKMUX_TEST_OWN")


def test_the_users_own_setting_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "logfire")
    monkeypatch.setattr(ownenv, "_ADDED", set())
    ownenv.quiet_pydantic()
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "logfire"
    assert ownenv.for_child(dict(os.environ))["PYDANTIC_DISABLE_PLUGINS"] == "logfire"


@pytest.mark.parametrize("setting", [None, "logfire"])
def test_pydantic_builds_models_without_its_plugin_scan_only_when_plugins_are_off(
        setting: str | None) -> None:
    """Plugins off (the daemon's own setting): models are built and checked as ever, and
    pydantic's plugin loader (which imports importlib.metadata) is a stand-in; a user's own
    choice of plugins gets pydantic's real loader."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if setting is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = setting
    code = ("import sys; from taskmuxd import ownenv; ownenv.quiet_pydantic(); "
            "from taskmuxctl.core.settings import validate; "
            "s = validate({'log_level': 'debug'}, 'x'); assert s.log_level == 'debug'; "
            "print('importlib.metadata' in sys.modules, "
            "sys.modules['pydantic.plugin._loader'].__doc__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split(" ", 1)
    if setting is None:
        assert out == ["False", f"{noplugins.DOC}\n"]
    else:
        assert out[0] == "True" and "stand-in" not in out[1]


def test_the_stand_in_has_every_name_pydantic_takes_from_its_loader() -> None:
    """pydantic imports only ``get_plugins`` from its plugin loader (the stand-in's one name); a
    pydantic that takes more from it would fail here rather than at a model's first build."""
    import pathlib
    import re

    import pydantic

    names: set[str] = set()
    for path in pathlib.Path(pydantic.__file__).parent.rglob("*.py"):
        if path.name == "_loader.py":
            continue
        text = path.read_text(encoding="utf-8")
        for found in re.finditer(r"from\s+[.\w]*_loader\s+import\s+(\([^)]*\)|[\w ,]+)", text):
            listed = found.group(1).strip("()").split(",")
            names.update(n.split(" as ")[0].strip() for n in listed if n.strip())
        assert "plugin._loader" not in text.replace("from ._loader", ""), path
    assert names == {"get_plugins"}
