"""Which commands work with ``--host``, and how.

Most talk to the daemon only: their JSON-RPC goes through ssh (``sshhost.Channel``) and the
answer is shown here. Those that read or change files of the machine (logs, settings, the
daemon's pid file) run whole over there, ``ssh HOST taskmuxctl ...`` (``attach`` with a
terminal, ``ssh -t``). Those about this machine alone (installing the service, updating this
client, the project file in this folder) are refused with what to do instead.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.spec import Cmd

ENV = "TASKMUX_HOST"

# Run as a whole on the other machine.
OVER_SSH: frozenset[tuple[str, ...]] = frozenset({
    ("logs",), ("logs-clean",), ("run",), ("events",), ("watch",), ("attach",), ("env",),
    ("doctor",),
    ("daemon", "start"), ("daemon", "stop"), ("daemon", "restart"), ("daemon", "status"),
    ("daemon", "register"),
    ("config", "show"), ("config", "set"), ("config", "path"),
    ("ca", "path"), ("ca", "mint"), ("dns", "query"),
})
WITH_TERMINAL: frozenset[tuple[str, ...]] = frozenset({("attach",)})

_THIS_FOLDER = "works on the taskmux.toml in this folder, on this machine"
_MACHINE = "changes this machine's system settings"
# Refused, with why.
LOCAL_ONLY: dict[tuple[str, ...], str] = {
    ("daemon", "install"): "installs the service on this machine",
    ("daemon", "uninstall"): "removes the service from this machine",
    ("daemon", "run"): "runs a daemon in this terminal",
    ("update",): "updates the taskmux installed on this machine",
    ("completion",): "prints shell code for this machine's shell",
    ("init",): _THIS_FOLDER, ("inject",): _THIS_FOLDER, ("check",): _THIS_FOLDER,
    ("add",): _THIS_FOLDER, ("remove",): _THIS_FOLDER,
    ("open",): "opens a URL in this machine's browser",
    ("mcp",): "serves an agent on this machine", ("mcp", "install"): "edits this machine's "
    "agent settings",
    ("ca", "install"): _MACHINE, ("ca", "uninstall"): _MACHINE,
    ("dns", "install"): _MACHINE, ("dns", "uninstall"): _MACHINE, ("dns", "flush"): _MACHINE,
    ("dial-stdio",): "is what --host itself runs on the other machine",
    ("fleet", "add"): "drives the machines listed on this one",
    ("fleet", "remove"): "drives the machines listed on this one",
    ("fleet", "list"): "drives the machines listed on this one",
    ("fleet", "status"): "drives the machines listed on this one",
    ("fleet", "start"): "drives the machines listed on this one",
    ("fleet", "logs"): "drives the machines listed on this one",
    ("fleet", "events"): "drives the machines listed on this one",
    ("fleet", "stop"): "drives the machines listed on this one",
    ("fleet", "restart"): "drives the machines listed on this one",
    ("fleet", "update"): "drives the machines listed on this one",
}


# Commands with a ``--host`` of their own (the task's host name): after the command word it is
# theirs; the machine's ``--host`` then goes before the command (or in TASKMUX_HOST).
OWN_HOST_OPTION = frozenset({"add"})
VALUED_GLOBALS = frozenset({"-p", "--project"})


def split_host(argv: list[str]) -> tuple[list[str], str | None]:
    """Take ``--host VALUE`` / ``--host=VALUE`` out of ``argv`` (before any ``--``)."""
    out: list[str] = []
    host: str | None = None
    command: str | None = None
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--" or command in OWN_HOST_OPTION:
            out.extend(argv[i:])
            break
        if command is None and not tok.startswith("-"):
            command = tok
        elif tok in VALUED_GLOBALS and i + 1 < len(argv):
            out.extend(argv[i:i + 2])
            i += 2
            continue
        if tok == "--host" and i + 1 < len(argv):
            host = argv[i + 1]
            i += 2
            continue
        if tok.startswith("--host="):
            host = tok[len("--host="):]
        else:
            out.append(tok)
        i += 1
    return out, host


def over_ssh(cmd: Cmd, args: Any) -> bool:
    """Whether the command runs whole over there (``start --monitor`` follows the event log,
    a file of that machine)."""
    return cmd.path in OVER_SSH or (cmd.path == ("start",) and bool(getattr(args, "monitor",
                                                                              False)))


def refusal(cmd: Cmd, args: Any, host: str) -> str | None:
    """Why ``cmd`` cannot go to ``host`` as given (and what to do), or None."""
    from taskmuxctl.core.sshchannel import parse_target

    words = " ".join(cmd.path)
    why = LOCAL_ONLY.get(cmd.path)
    if why is not None:
        return (f"`taskmux {words}` {why}, so it does not take --host; run it on that "
                f"machine: `ssh {parse_target(host).ssh_words} taskmux {words}`")
    if any(arg.name == "project" for arg in cmd.args) and not getattr(args, "project", None) \
            and not getattr(args, "all_projects", False):
        every = " (or give --all-projects)" if any(a.name == "all_projects" for a in cmd.args) \
            else ""
        return (f"with --host, name the project with -p NAME{every} (the taskmux.toml in this "
                f"folder is on this machine); `taskmux --host {host} daemon list` lists the "
                "projects there")
    return None
