"""pydantic without its plugin search, in the client's own process.

The first time pydantic builds a model's validator it looks for plugins: it imports
``importlib.metadata`` (with ``email``, ``zipfile``, ``csv`` and more) and reads the entry points of
every installed distribution. That is about 25 ms of CPU for each config-reading command, and the
client uses no plugin. ``skip_plugin_search`` puts a stand-in for pydantic's plugin loader into
``sys.modules`` that finds none; it touches no environment variable, so nothing the client starts
(the daemon, a ``run`` command's program) inherits it. A user's own ``PYDANTIC_DISABLE_PLUGINS``
is left for pydantic to honour, as the daemon does (``taskmuxd/ownenv.py``).
"""

from __future__ import annotations

import os
import sys

LOADER = "pydantic.plugin._loader"


def _no_plugins() -> tuple[()]:
    return ()


def skip_plugin_search() -> None:
    """Before pydantic builds its first model: no plugin search in this process."""
    if "PYDANTIC_DISABLE_PLUGINS" in os.environ or LOADER in sys.modules:
        return
    stand_in = type(sys)(LOADER)
    stand_in.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[LOADER] = stand_in
