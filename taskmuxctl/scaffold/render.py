"""The text of a new taskmux.toml: proposed tasks, each with a comment saying where it came
from. Written by hand (no tomlkit) so the comments sit where a person would put them."""

from __future__ import annotations

from taskmuxctl.scaffold.detect import Proposal


def toml_string(value: str) -> str:
    """A TOML basic string."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def render(project: str, tasks: list[Proposal], agent_context: bool = True) -> str:
    lines = [
        "# taskmux.toml: the tasks `taskmux start` runs (written by `taskmux init`).",
        "# A task with `host` is served at https://HOST.PROJECT.localhost and gets a free",
        "# port as $PORT. Check it with `taskmux check`; add tasks with `taskmux add`.",
        "",
        f"name = {toml_string(project)}",
    ]
    if not agent_context:
        lines.append("agent_context = false  # taskmux does not touch CLAUDE.md / AGENTS.md")
    if not tasks:
        lines += ["", "# Nothing to run was found here. A task looks like this:",
                  "# [tasks.web]", '# command = "npm run dev -- --port $PORT"',
                  '# host = "web"']
    for t in tasks:
        lines += ["", f"# from {t.source}"]
        if t.note:
            lines.append(f"# {t.note}")
        lines += [f"[tasks.{t.name}]", f"command = {toml_string(t.command)}"]
        if t.host:
            lines.append(f"host = {toml_string(t.host)}")
        if not t.auto_start:
            lines.append("auto_start = false  # start it with `taskmux start "
                         f"{t.name}`")
        if t.stop_grace_period is not None:
            lines.append(f"stop_grace_period = {t.stop_grace_period:g}")
    return "\n".join(lines) + "\n"
