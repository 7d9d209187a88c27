"""``~/.taskmux/fleet.toml``: the machines ``taskmux fleet`` drives, and asking them all.

One ``[[host]]`` table per machine::

    [[host]]
    name = "build1"
    target = "ssh://ci@build1.example"
    groups = ["build", "linux"]

``survey`` asks every chosen machine at once (a thread each, through ``--host``'s ssh
channel) for its daemon's version and its projects' tasks, and gives up on a machine at
its deadline (its ssh is ended) so that one slow machine never holds the table.
"""

from __future__ import annotations

import os
import time

from taskmuxctl.core.protocol import Code, Method, RpcError
from taskmuxctl.core.result import EXIT_USAGE, CommandError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.core.paths import Paths

FILE = "fleet.toml"
# ``DaemonUnavailable.reason`` values that mean ssh never reached the machine's shell.
SSH_FAILURES = frozenset({"unreachable", "host_key", "auth", "ssh_failed", "no_ssh",
                          "timeout", None})
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class Host:
    __slots__ = ("groups", "name", "target")

    def __init__(self, name: str, target: str, groups: list[str]) -> None:
        self.name = name
        self.target = target
        self.groups = groups

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "groups": list(self.groups)}


def path(paths: Paths) -> str:
    return os.path.join(paths.home, FILE)


def _invalid(where: str, why: str) -> CommandError:
    return CommandError(f"{where}: {why}; fix it there, or `taskmux fleet remove` the host and "
                        "add it again", Code.CONFIG_INVALID, {"path": where})


def check_name(name: str, what: str = "host name") -> str | None:
    if not name or not set(name) <= NAME_CHARS:
        return f"the {what} {name!r} must be letters, digits, '-', '_' or '.'"
    return None


def load(paths: Paths) -> list[Host]:
    import tomllib

    from taskmuxctl.core.sshchannel import parse_target

    where = path(paths)
    try:
        with open(where, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return []
    except tomllib.TOMLDecodeError as exc:
        raise _invalid(where, f"not valid TOML ({exc})") from None
    hosts: list[Host] = []
    entries = data.get("host", [])
    if not isinstance(entries, list):
        raise _invalid(where, "`host` must be a list of [[host]] tables")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _invalid(where, f"host #{i + 1} is not a table")
        name, target, groups = entry.get("name"), entry.get("target"), entry.get("groups", [])
        if not isinstance(name, str) or check_name(name):
            raise _invalid(where, f"host #{i + 1} has no valid name")
        if not isinstance(target, str):
            raise _invalid(where, f"host {name!r} has no target (ssh://[USER@]HOST[:PORT])")
        try:
            parse_target(target)
        except RpcError as exc:
            raise _invalid(where, f"host {name!r}: {exc.message}") from None
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise _invalid(where, f"host {name!r}: groups must be a list of names")
        if any(h.name == name for h in hosts):
            raise _invalid(where, f"host {name!r} is listed twice")
        hosts.append(Host(name, target, groups))
    return hosts


def _quote(text: str) -> str:
    from taskmuxctl.core import jsonio

    return jsonio.dumps(text)  # a JSON string is a TOML basic string


def save(paths: Paths, hosts: list[Host]) -> None:
    from taskmuxctl.core.fsutil import atomic_write

    parts = ["# The machines `taskmux fleet` drives (`taskmux fleet add|remove|list`).\n"]
    for h in hosts:
        groups = ", ".join(_quote(g) for g in h.groups)
        parts.append(f"\n[[host]]\nname = {_quote(h.name)}\ntarget = {_quote(h.target)}\n"
                     f"groups = [{groups}]\n")
    paths.ensure()
    atomic_write(path(paths), "".join(parts))


def select(hosts: list[Host], group: str | None) -> list[Host]:
    if group is None:
        return hosts
    chosen = [h for h in hosts if group in h.groups or h.name == group]
    if not chosen:
        known = sorted({g for h in hosts for g in h.groups})
        raise CommandError(f"no host is in group {group!r} (groups: {', '.join(known) or 'none'})"
                           "; `taskmux fleet list` shows them", Code.USAGE,
                           {"group": group}, exit_code=EXIT_USAGE)
    return chosen


def status_of(client: Any, entry: dict[str, Any]) -> None:
    """Fill one machine's line of ``fleet status``."""
    projects = client.call(Method.PROJECT_LIST)["projects"]
    entry["projects"] = len(projects)
    entry["tasks_up"] = sum(int(p.get("tasks_running") or 0) for p in projects)
    entry["tasks_total"] = sum(int(p.get("tasks_total") or 0) for p in projects)
    unhealthy: list[str] = []
    for p in projects:
        if p.get("state") != "ok":
            continue
        out = client.call(Method.PROJECT_STATUS, {"project": p["name"]})
        unhealthy += [f"{p['name']}/{t['name']}" for t in out.get("tasks", [])
                      if t.get("healthy") is False]
    entry["unhealthy"] = unhealthy


def action_on(method: str, project: str | None, tasks: list[str]) -> Any:
    """``fleet start|stop|restart``: ``method`` on ``project`` (default: every project the
    machine has) and ``tasks`` (default: all)."""

    def work(client: Any, entry: dict[str, Any]) -> None:
        names = [project] if project else [
            p["name"] for p in client.call(Method.PROJECT_LIST)["projects"]
            if p.get("state") == "ok"]
        done: dict[str, Any] = {}
        failed: list[str] = []
        for name in names:
            out = client.call(method, {"project": name, **({"tasks": tasks} if tasks else {})})
            done[name] = out.get("results", [])
            failed += [f"{name}/{r['task']}: {r['error']}" for r in done[name] if r.get("error")]
        entry["results"] = done
        if failed:
            raise CommandError("; ".join(failed), Code.TASK_START_FAILED)

    return work


def ask(paths: Paths, host: Host, deadline: float, clients: dict[str, Any],
        work: Any = status_of) -> dict[str, Any]:
    """One machine's line (a thread runs it): the daemon's version, then ``work``."""
    from taskmuxctl.core.paths import Paths as PathsCls
    from taskmuxctl.core.rpcclient import Client

    entry: dict[str, Any] = {"name": host.name, "target": host.target, "ok": False,
                             "reachable": False}
    started = time.monotonic()
    client = Client(PathsCls(paths.home, host.target), timeout=deadline)
    clients[host.name] = client
    try:
        version = client.call(Method.DAEMON_VERSION)
        entry["reachable"] = True
        entry["daemon_version"] = version.get("version")
        work(client, entry)
        entry["ok"] = True
    except RpcError as exc:
        entry["error"] = exc.message
        entry["reason"] = reason = getattr(exc, "reason", None)
        # ssh got there (and the failure is taskmux's over there) unless ssh itself failed.
        entry["reachable"] = entry["reachable"] or reason not in SSH_FAILURES
    except Exception as exc:  # a thread must always hand back its line
        entry["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    entry["seconds"] = round(time.monotonic() - started, 3)
    return entry


def survey(paths: Paths, hosts: list[Host], deadline: float,
           work: Any = status_of) -> list[dict[str, Any]]:
    """Every host's line, asked in parallel; a host still busy at ``deadline`` seconds gets
    a timeout line and its ssh is ended."""
    import threading

    results: dict[str, dict[str, Any]] = {}
    clients: dict[str, Any] = {}

    def run_one(host: Host) -> None:
        results[host.name] = ask(paths, host, deadline, clients, work)

    threads = [threading.Thread(target=run_one, args=(h,), daemon=True) for h in hosts]
    end = time.monotonic() + deadline
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    out = []
    for host in hosts:
        entry = results.get(host.name)
        if entry is None:
            client = clients.get(host.name)
            if client is not None:
                client.abort()
            entry = {"name": host.name, "target": host.target, "ok": False,
                     "reachable": False, "reason": "deadline",
                     "error": f"no answer within the deadline of {deadline:g}s"}
        out.append(entry)
    return out
