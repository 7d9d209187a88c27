"""Environment variables the daemon sets for its own process only, never for its children.

``PYDANTIC_DISABLE_PLUGINS=__all__``: pydantic looks for plugins among the entry points of every
installed distribution the first time it builds a model (tens of milliseconds at start); the
daemon uses none. A user's own setting is left as it is, and a child (the tmux server, and
through it the user's shells) gets the environment the daemon was started with.

The variable stops the scan, yet importing pydantic's plugin loader still imports
``importlib.metadata`` (~10 ms of the start): the loader itself is replaced too, as in the
client (``taskmuxctl.core.noplugins``).
"""

from __future__ import annotations

import os

from taskmuxctl.core.noplugins import skip_plugin_search

_ADDED: set[str] = set()


def set_own(name: str, value: str) -> None:
    """Set ``name`` for this process unless the caller's environment has it."""
    if name not in os.environ:
        os.environ[name] = value
        _ADDED.add(name)


def quiet_pydantic() -> None:
    set_own("PYDANTIC_DISABLE_PLUGINS", "__all__")
    skip_plugin_search()


def for_child(env: dict[str, str]) -> dict[str, str]:
    """``env`` (a copy of ``os.environ``) without what the daemon set for itself."""
    for name in _ADDED:
        env.pop(name, None)
    return env
