"""``open`` (a task's URL in the browser) and ``env`` (the project's URLs as shell variables)."""

from __future__ import annotations

import os
import sys

from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Method
from taskmuxctl.core.result import Result
from taskmuxctl.core.whichproject import project_params

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SHELLS = ("bash", "zsh", "fish")


def var_name(task: str) -> str:
    """``TASKMUX_URL_<TASK>``: upper case, hyphens to underscores (task names are
    ``[a-z0-9-]``, so the result is a valid variable name)."""
    return "TASKMUX_URL_" + task.upper().replace("-", "_")


def quote(value: str, shell: str) -> str:
    """``value`` as one literal word of ``shell``."""
    if shell == "fish":  # inside '...', fish gives meaning to \\ and \' only
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + value.replace("'", "'\\''") + "'"  # POSIX shells, bash, zsh


def render_env(variables: dict[str, str], shell: str) -> str:
    if shell == "fish":
        return "".join(f"set -gx {k} {quote(v, shell)}\n" for k, v in variables.items())
    return "".join(f"export {k}={quote(v, shell)}\n" for k, v in variables.items())


def default_shell() -> str:
    name = os.path.basename(os.environ.get("SHELL", ""))
    return name if name in SHELLS else "bash"


def env(ctx: Context, args: Any) -> Result:
    out = ctx.call(Method.PROJECT_STATUS, project_params(args.project))
    variables = {"TASKMUX_PROJECT": out["project"]}
    for task in out["tasks"]:
        if task.get("url"):
            variables[var_name(task["name"])] = task["url"]
    shell = args.shell or default_shell()
    return Result({"project": out["project"], "shell": shell, "vars": variables},
                  render_env(variables, shell))


def _browser_commands(url: str) -> list[list[str]]:
    """What to try, in order: each $BROWSER entry (``%s`` is the URL, else it is appended),
    then ``open`` on macOS or ``xdg-open`` when there is a graphical session."""
    import shlex

    found: list[list[str]] = []
    for entry in filter(None, os.environ.get("BROWSER", "").split(os.pathsep)):
        words = shlex.split(entry)
        if not words:
            continue
        if any("%s" in w for w in words):
            found.append([w.replace("%s", url) for w in words])
        else:
            found.append([*words, url])
    if sys.platform == "darwin":
        found.append(["open", url])
    elif os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        found.append(["xdg-open", url])
    return found


def _open_in_browser(url: str) -> str | None:
    """Open ``url`` with the first browser that takes it; the one that did, or None."""
    import shutil
    import subprocess

    for argv in _browser_commands(url):
        program = shutil.which(argv[0])
        if program is None:
            continue
        # $BROWSER may be a terminal browser that needs this terminal: run it in the
        # foreground, as other tools do; open/xdg-open hand over to the desktop and return.
        try:
            proc = subprocess.run([program, *argv[1:]], stdin=subprocess.DEVNULL if
                                  argv[0] in ("open", "xdg-open") else None, check=False)
        except OSError:
            continue
        if proc.returncode == 0:
            return argv[0]
    return None


def open_(ctx: Context, args: Any) -> Result:
    from taskmuxctl.commands.project import url as url_command

    url = str(url_command(ctx, args).data["url"])
    browser = _open_in_browser(url)
    if browser is not None:
        return Result({"task": args.task, "url": url, "opened": True, "browser": browser},
                      f"opened {url}")
    if not ctx.as_json:
        sys.stderr.write("no browser found (set $BROWSER, or run inside a desktop session "
                         "with xdg-open); open the URL yourself:\n")
    return Result({"task": args.task, "url": url, "opened": False, "browser": None}, url)


def dashboard(ctx: Context, args: Any) -> Result:
    """Open the web dashboard with a session: a one-time link the browser trades for a
    cookie (so only this user's browser may change anything there)."""
    out = ctx.call(Method.DASHBOARD_SESSION)
    url = str(out["url"])
    if args.print_url:
        return Result(out, url)
    if _open_in_browser(url) is not None:
        return Result({**out, "opened": True}, f"opened {out['dashboard']}")
    if not ctx.as_json:
        sys.stderr.write("no browser found; open this one-time link yourself (good for two "
                         "minutes):\n")
    return Result({**out, "opened": False}, url)
