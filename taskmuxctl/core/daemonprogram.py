"""The command a service manager runs to start taskmuxd: the one place that decides it.

Everything that starts the daemon (the unit files, the plists, the detached start of
``taskmuxctl daemon start``) asks ``daemon_program`` so that they all run the same
installation. The self-update's installed layout and its boot-guard plug in here.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from taskmuxctl.core.paths import Paths


def daemon_program(paths: Paths | None = None) -> list[str]:
    """The absolute command (without ``run``) that starts this installation's taskmuxd.

    In the layout install.sh makes (``app/current``...), the boot-guard on the base
    interpreter, which starts whichever version is current. Otherwise the ``taskmuxd``
    console script next to the running interpreter when there is one (a
    virtualenv or a system install), else the interpreter itself with ``-m taskmuxd``. The
    interpreter's path is kept as it is, not resolved: a virtualenv's ``bin/python`` is a
    symlink whose location is what selects the environment.
    """
    if paths is not None:
        from taskmuxctl.core.update.layout import installed_daemon_command

        installed = installed_daemon_command(paths)
        if installed is not None:  # installed with install.sh: the boot-guard, via app/current
            return installed
    python = os.path.abspath(sys.executable) if sys.executable else "/usr/bin/python3"
    script = os.path.join(os.path.dirname(python), "taskmuxd")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [python, "-m", "taskmuxd"]


def ctl_command() -> str:
    """How to run this installation's taskmuxctl from a hint (``sudo`` resets PATH, so a
    virtualenv's client must be named by its full path)."""
    python = os.path.abspath(sys.executable) if sys.executable else ""
    script = os.path.join(os.path.dirname(python), "taskmuxctl")
    return script if python and os.access(script, os.X_OK) else "taskmuxctl"
