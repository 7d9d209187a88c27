"""Reading ``config.toml`` into plain TOML values, without the settings model.

The daemon's first phase reads the file with this (tomllib only: no pydantic), so that a file
that cannot be read or is not TOML stops the start at once (exit 78), and takes the log level
from it; the values are checked against ``taskmuxctl.core.settings.Settings`` later, off the path to
the first answer. ``taskmuxctl.core.settings`` reads through here too, so both phases see one file
the same way.
"""

from __future__ import annotations

import tomllib
from typing import Any

from taskmuxctl.core.errors import SettingsError

MAX_SETTINGS_BYTES = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """The TOML document in ``text``; SettingsError naming ``source`` when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{source}: not valid TOML: {exc}", {"path": source}) from None
    except RecursionError:
        raise SettingsError(f"{source}: values are nested too deeply to read",
                            {"path": source}) from None


def read(path: str) -> dict[str, Any]:
    """The TOML values in ``path``, empty when the file does not exist. Only a regular file
    of at most 1 MiB is read, opened without blocking (a FIFO is refused, not waited on)."""
    from taskmuxctl.core.fsutil import read_regular_file

    try:
        text = read_regular_file(path, MAX_SETTINGS_BYTES).decode("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot be read: {exc}", {"path": path}) from None
    return parse_toml(text, path)


def log_level(raw: dict[str, Any]) -> str:
    """The log level ``raw`` asks for if it names one, else the default (the full check
    comes later and refuses a bad one)."""
    level = raw.get("log_level")
    return level if isinstance(level, str) and level in LOG_LEVELS else "info"
