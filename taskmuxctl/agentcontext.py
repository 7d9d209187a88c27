"""The block taskmux keeps in a project's CLAUDE.md / AGENTS.md, telling coding agents where
the dev environment's live state is.

The block sits between ``<!-- taskmux:start -->`` and ``<!-- taskmux:end -->``; only that part
of a file is ever rewritten, so every byte around it stays as it was (line endings included).

Which files: every one of CLAUDE.md and AGENTS.md that exists next to taskmux.toml (CLAUDE.md
is skipped when it imports ``@AGENTS.md``, so Claude does not read the block twice). When
neither exists, AGENTS.md is created (Codex, OpenCode, Cursor and others read it), and
CLAUDE.md too when the folder has a ``.claude/`` directory (a Claude Code project).
"""

from __future__ import annotations

import os

START = "<!-- taskmux:start -->"
END = "<!-- taskmux:end -->"
FILES = ("CLAUDE.md", "AGENTS.md")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class BlockError(Exception):
    """A file has a start marker without an end marker (or the reverse): left untouched."""


def _code(text: str) -> str:
    """``text`` as a Markdown code span inside a table cell."""
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def render(project: str, tasks: Iterable[tuple[str, str, str | None, bool]]) -> str:
    """The block, markers included, lines joined with "\\n", without a final newline.
    ``tasks``: (name, command, host, auto_start)."""
    rows = []
    for name, command, host, auto_start in tasks:
        serves = f"`{host}.{project}.localhost`" if host and host not in ("@", "*") else (
            f"`{project}.localhost`" if host == "@" else "-")
        rows.append(f"| {name} | {_code(command)} | {serves} | "
                    f"{'yes' if auto_start else 'no'} |")
    lines = [
        START,
        "## Dev environment: taskmux",
        "",
        "This project's dev processes (servers, watchers, workers) run under taskmux: the tasks",
        "in `taskmux.toml` run in tmux, supervised by a daemon that starts them in dependency",
        "order, checks their health and restarts them when they crash. Their state changes on",
        "its own, so do not infer it from memory, old terminal output or port probing, and do",
        "not start these processes yourself (no `npm run dev &`). Ask taskmux instead:",
        "",
        "- `taskmux status --json`: every task's state, pid, port, URL, health and restarts",
        "- `taskmux logs TASK -n 200` (or `--since 5m`, `-g PATTERN`): a task's recent output",
        "- `taskmux restart TASK` after changing its config, dependencies or environment;",
        "  `taskmux start TASK` / `taskmux stop TASK`",
        "- `taskmux events --since 15m`: what started, exited, restarted or failed a health",
        "  check, and when",
        "- `taskmux inspect TASK`, `taskmux health -v`, `taskmux url TASK`: details, probe",
        "  results, the exact URL",
        "",
        "With the taskmux MCP server connected (`taskmux mcp install claude|codex|cursor|"
        "opencode`),",
        "its tools (status, logs, restart, events, ...) answer the same questions.",
        "",
        f"Tasks of project `{project}`:",
        "",
        "| task | command | served at | auto start |",
        "| --- | --- | --- | --- |",
        *(rows or ["| (none yet) | `taskmux add NAME \"COMMAND\"` | - | - |"]),
        END,
    ]
    return "\n".join(lines)


def _find(text: str) -> tuple[int, int] | None:
    """(start, end) offsets of the block (end just after the end marker), or None."""
    start = text.find(START)
    end_at = text.find(END, start if start >= 0 else 0)
    if start < 0 and text.find(END) < 0:
        return None
    if start < 0 or end_at < 0:
        raise BlockError(f"found {'an end' if start < 0 else 'a start'} marker without "
                         f"{'a start' if start < 0 else 'an end'} marker")
    return start, end_at + len(END)


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def apply(text: str, block: str) -> str:
    """``text`` with the block replaced, or appended after a blank line."""
    nl = _newline(text)
    block = block.replace("\n", nl)
    found = _find(text)
    if found is not None:
        start, end = found
        return text[:start] + block + text[end:]
    if not text:
        return block + nl
    # One blank line before the block (always added, so that ``remove`` knows what to take).
    sep = nl if text.endswith(nl) else nl + nl
    return text + sep + block + nl


def remove(text: str) -> str:
    """``text`` without the block (and the line break and blank line ``apply`` added)."""
    found = _find(text)
    if found is None:
        return text
    nl = _newline(text)
    start, end = found
    if text.startswith(nl, end):
        end += len(nl)
    before, after = text[:start], text[end:]
    if not after and before.endswith(nl + nl):
        before = before[: -len(nl)]
    return before + after


def targets(folder: str) -> list[tuple[str, bool]]:
    """(path, exists) of the files the block goes into (see the module's docstring)."""
    paths = {name: os.path.join(folder, name) for name in FILES}
    existing = [name for name in FILES if os.path.isfile(paths[name])]
    if not existing:
        make = ["AGENTS.md"]
        if os.path.isdir(os.path.join(folder, ".claude")):
            make.insert(0, "CLAUDE.md")
        return [(paths[name], False) for name in make]
    out = []
    seen = set()
    for name in existing:
        if name == "CLAUDE.md" and "AGENTS.md" in existing and _imports_agents(paths[name]):
            continue
        real = os.path.realpath(paths[name])  # CLAUDE.md is often a link to AGENTS.md
        if real not in seen:
            seen.add(real)
            out.append((paths[name], True))
    return out


def _imports_agents(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return any(line.strip().startswith("@AGENTS.md") or " @AGENTS.md" in line
                       for line in fh)
    except OSError:
        return False


def read(path: str) -> str:
    with open(path, encoding="utf-8", newline="") as fh:
        return fh.read()


def write(path: str, text: str) -> None:
    """Replace the file (through a symlink: the link stays a link)."""
    from taskmuxctl.core.fsutil import atomic_write

    path = os.path.realpath(path)
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    atomic_write(path, text.encode("utf-8"), mode=mode)
