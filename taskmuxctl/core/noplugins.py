"""pydantic without its plugin search, in this process only.

The first time pydantic builds a model's validator it looks for plugins: its loader imports
``importlib.metadata`` (with ``email``, ``zipfile`` and ``csv``) and reads the entry points of every
installed distribution, 10 to 25 ms of CPU in a command or a daemon start, and taskmux uses no
plugin. ``skip_plugin_search`` puts a stand-in for that loader (``pydantic.plugin._loader``, whose
one name pydantic uses is ``get_plugins``; tests/test_ownenv.py checks that against the installed
pydantic) into ``sys.modules``. It changes no environment variable, so nothing this process
starts inherits it. A user's own ``PYDANTIC_DISABLE_PLUGINS`` naming plugins to leave out (any
value but the all-off ones) is left for pydantic's real loader to honour.
"""

from __future__ import annotations

import os
import sys
import types

LOADER = "pydantic.plugin._loader"
ALL_OFF = ("__all__", "1", "true")  # the values for which pydantic loads no plugin at all
DOC = "taskmux's stand-in: no pydantic plugins in this process"


def _no_plugins() -> tuple[()]:
    return ()


def skip_plugin_search() -> None:
    """Before pydantic builds its first model: no plugin search in this process."""
    setting = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
    if (setting is not None and setting not in ALL_OFF) or LOADER in sys.modules:
        return
    stand_in = types.ModuleType(LOADER, DOC)
    stand_in.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[LOADER] = stand_in
