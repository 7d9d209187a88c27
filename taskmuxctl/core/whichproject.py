"""Which project a command is about: ``-p NAME``, or the taskmux.toml here or above."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any


CONFIG_NAME = "taskmux.toml"
# One wording for "no project here", whichever command (and whether client or daemon) says it.
NO_PROJECT_HINT = "create one with `taskmux init`, or name a registered project with -p NAME"


def no_project_message(cwd: str | None, hint: str = NO_PROJECT_HINT) -> str:
    return f"no {CONFIG_NAME} in {cwd or 'this folder'} or any folder above it; {hint}"


def find_config(start: str | None = None) -> str | None:
    """The nearest taskmux.toml in ``start`` (default: cwd) or a parent folder."""
    folder = os.path.abspath(start or os.getcwd())
    while True:
        candidate = os.path.join(folder, CONFIG_NAME)
        # Any entry but a folder counts (a FIFO, a dangling link, a link loop): the loader
        # then says what is wrong with it, rather than "no taskmux.toml".
        if os.path.lexists(candidate) and not os.path.isdir(candidate):
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


def require_config(given: str | None = None, hint: str = NO_PROJECT_HINT) -> str:
    """``given`` (a -c PATH), else the nearest taskmux.toml; a CommandError saying where it
    looked and what to do (``hint``) when there is none."""
    path = given or find_config()
    if path is None:
        from taskmuxctl.core.protocol import Code
        from taskmuxctl.core.result import CommandError

        raise CommandError(no_project_message(os.getcwd(), hint), Code.CONFIG_NOT_FOUND,
                           {"cwd": os.getcwd()})
    return path
