"""What the daemon sets for its own process only (pydantic's plugin scan off) never reaches
its children's environment, and a user's own setting is left alone."""

from __future__ import annotations

import os

import pytest

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
