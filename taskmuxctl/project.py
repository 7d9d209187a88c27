"""Which project a command is about: ``-p NAME``, or the taskmux.toml here or above."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any


CONFIG_NAME = "taskmux.toml"


def find_config(start: str | None = None) -> str | None:
    """The nearest taskmux.toml in ``start`` (default: cwd) or a parent folder."""
    folder = os.path.abspath(start or os.getcwd())
    while True:
        candidate = os.path.join(folder, CONFIG_NAME)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def project_params(project: str | None, start: str | None = None) -> dict[str, Any]:
    """Params naming the project for a ``project.*``/``task.*`` call."""
    if project:
        return {"project": project}
    return {"config": find_config(start), "cwd": os.path.abspath(start or os.getcwd())}
