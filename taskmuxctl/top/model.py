"""What ``taskmux top`` shows, without the screen: rows from the daemon's status answers,
the filter, and the text of each cell. Standard library only, tested without a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskmuxctl.core import humanize
from taskmuxctl.core.protocol import Method

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.core.rpcclient import Client

COLUMNS = ("PROJECT", "TASK", "STATE", "HEALTH", "CPU", "MEM", "RESTARTS", "UPTIME", "URL",
           "LAST ERROR")
LIVE = ("starting", "running", "stopping")
MAX_ERROR = 80  # characters of the last error shown


@dataclass(frozen=True)
class Row:
    project: str
    task: str
    state: str
    health: str
    cpu: str
    mem: str
    restarts: str
    uptime: str
    url: str
    error: str

    @property
    def key(self) -> str:
        return f"{self.project}/{self.task}"

    def cells(self) -> tuple[str, ...]:
        return (self.project, self.task, self.state, self.health, self.cpu, self.mem,
                self.restarts, self.uptime, self.url, self.error)

    def matches(self, text: str) -> bool:
        """Whether the filter ``text`` (words, all of which must appear) selects this row."""
        hay = " ".join((self.project, self.task, self.state, self.health, self.url,
                        self.error)).lower()
        return all(word in hay for word in text.lower().split())


def last_error(t: dict[str, Any], config_error: str | None) -> str:
    """The most useful line about what went wrong with a task lately ("" when nothing)."""
    text = ""
    if t.get("healthy") is False and t.get("last_health_failure"):
        text = f"health: {t['last_health_failure']}"
    elif t.get("state") in ("backoff", "fatal", "exited") and t.get("last_exit") \
            and not t.get("completed"):
        text = humanize.last_exit(t["last_exit"])
    elif config_error:
        text = f"config: {config_error}"
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR - 1] + "…"


def uptime(seconds: float | None) -> str:
    """Seconds only in the first minute, then minutes: an idle screen has nothing to redraw
    for most refreshes."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds) // 60}m"
    return humanize.duration(seconds)


def row_of(project: str, t: dict[str, Any], config_error: str | None = None) -> Row:
    res = t.get("resources") or {}
    live = t.get("state") in LIVE
    health = {True: "healthy", False: "unhealthy", None: "-"}.get(t.get("healthy"), "-")
    return Row(project, str(t["name"]), str(t.get("state", "?")), health,
               humanize.cpu(res.get("cpu")) if live else "-",
               humanize.size(res.get("rss")) if live else "-",
               str(t.get("restarts", 0)), uptime(t.get("uptime")),
               t.get("url") or "-", last_error(t, config_error))


def rows_of(statuses: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for st in statuses:
        for t in st.get("tasks") or []:
            rows.append(row_of(st["project"], t, st.get("config_error")))
    return rows


def visible(rows: list[Row], project: str | None, text: str) -> list[Row]:
    return [r for r in rows if (project is None or r.project == project)
            and (not text or r.matches(text))]


def fetch(client: Client) -> list[dict[str, Any]]:
    """The status of every registered project (one connection, one call each)."""
    out = []
    for p in client.call(Method.PROJECT_LIST)["projects"]:
        if p.get("state") != "ok" and not p.get("tasks_total"):
            out.append({"project": p["name"], "tasks": [], "config_error": p.get("error")})
            continue
        try:
            out.append(client.call(Method.PROJECT_STATUS, {"project": p["name"]}))
        except Exception as exc:  # one project's trouble must not blank the others
            from taskmuxctl.core.protocol import RpcError

            if not isinstance(exc, RpcError):
                raise
            out.append({"project": p["name"], "tasks": [], "config_error": exc.message})
    return out


def next_project(projects: list[str], current: str | None) -> str | None:
    """The project after ``current`` in the cycle all → each project → all."""
    if not projects:
        return None
    if current not in projects:
        return projects[0]
    at = projects.index(current)
    return projects[at + 1] if at + 1 < len(projects) else None
