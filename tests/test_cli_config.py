"""``config show|set|path``: validation, comment-preserving writes, live reload."""

from __future__ import annotations

import os

from taskmuxctl.core.protocol import Code
from tests.helpers import DaemonProcess, call, read, run_cli, run_json, safe_settings


def test_path_and_show_defaults(env: dict[str, str], home: str) -> None:
    code, out = run_json(["config", "path"], env)
    assert (code, out["path"]) == (0, os.path.join(home, "config.toml"))
    code, out = run_json(["config", "show"], env)
    # The test home's config.toml sets only the keys that keep tests off shared resources.
    assert code == 0 and out["overrides"] == sorted(safe_settings(home))
    assert out["config"]["auto_start_daemon"] is True
    text = run_cli(["config", "show"], env).stdout
    assert "log_level" in text and "# default" in text


def test_set_preserves_comments_and_validates(env: dict[str, str], home: str) -> None:
    path = os.path.join(home, "config.toml")
    original = "# my settings\nlog_level = \"info\"  # chatty later\n\n# sweep\n"
    with open(path, "w") as fh:
        fh.write(original)
    code, out = run_json(["config", "set", "shutdown_timeout", "12.5"], env)
    assert code == 0 and out["value"] == 12.5 and out["daemon_reloaded"] is False
    code, out = run_json(["config", "set", "log_level", "debug"], env)
    assert code == 0
    text = read(path)
    assert "# my settings" in text and "# chatty later" in text and "# sweep" in text
    assert 'log_level = "debug"' in text and "shutdown_timeout = 12.5" in text
    before = read(path)
    for key, value, expect in (("log_level", "loud", Code.SETTINGS_INVALID),
                               ("shutdown_timeout", "-1", Code.SETTINGS_INVALID),
                               ("auto_start_daemon", "perhaps", Code.SETTINGS_INVALID),
                               ("log_levl", "debug", Code.SETTINGS_UNKNOWN_KEY)):
        code, out = run_json(["config", "set", key, value], env)
        assert code == 1 and out["code"] == expect, (key, out)
        assert key in out["error"]
    assert read(path) == before, "a refused set must not touch the file"
    code, out = run_json(["config", "set", "log_levl", "debug"], env)
    assert "did you mean 'log_level'" in out["error"]
    assert "valid settings:" in out["error"]
    code, out = run_json(["config", "set", "log_level", ""], env)
    assert code == 0 and out["value"] == "info"
    assert "log_level" not in read(path).replace("# chatty later", "")


def test_set_reloads_a_running_daemon(daemon: DaemonProcess, env: dict[str, str]) -> None:
    code, out = run_json(["config", "set", "log_level", "warning"], env)
    assert code == 0 and out["daemon_reloaded"] is True
    assert call(daemon.socket, "config.get")["config"]["log_level"] == "warning"


def test_show_reports_a_broken_file(env: dict[str, str], home: str) -> None:
    with open(os.path.join(home, "config.toml"), "w") as fh:
        fh.write("this is = = not toml\n")
    code, out = run_json(["config", "show"], env)
    assert code == 1 and "not valid TOML" in out["error"]
