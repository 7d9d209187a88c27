"""Environment variables the daemon sets for its own process only, never for its children.

``PYDANTIC_DISABLE_PLUGINS=__all__``: pydantic looks for plugins among the entry points of every
installed distribution the first time it builds a model (tens of milliseconds at start); the
daemon uses none. A user's own setting is left as it is, and a child (the tmux server, and
through it the user's shells) gets the environment the daemon was started with.

With plugins off, pydantic's plugin loader (``pydantic.plugin._loader``) only ever answers "no
plugins", yet importing it imports ``importlib.metadata`` (with zipfile and email: ~10 ms of
the start). So the daemon puts a stand-in in its place, which gives the same answer.
"""

from __future__ import annotations

import os
import sys
import types

_ADDED: set[str] = set()
PLUGINS_OFF = ("__all__", "1", "true")  # the values for which pydantic loads no plugin
PLUGIN_LOADER = "pydantic.plugin._loader"


def set_own(name: str, value: str) -> None:
    """Set ``name`` for this process unless the caller's environment has it."""
    if name not in os.environ:
        os.environ[name] = value
        _ADDED.add(name)


def quiet_pydantic() -> None:
    set_own("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] in PLUGINS_OFF and PLUGIN_LOADER not in sys.modules:
        loader = types.ModuleType(PLUGIN_LOADER, "taskmuxd's stand-in: plugins are off")
        loader.get_plugins = lambda: ()  # type: ignore[attr-defined]
        sys.modules[PLUGIN_LOADER] = loader


def for_child(env: dict[str, str]) -> dict[str, str]:
    """``env`` (a copy of ``os.environ``) without what the daemon set for itself."""
    for name in _ADDED:
        env.pop(name, None)
    return env
