"""What ``taskmux init`` finds in a project folder, as proposed tasks. Reads files only.

Sources, in order: a ``Procfile.dev`` or ``Procfile`` (already a list of processes, so taken
as it is, instead of guessing from the rest); otherwise a Django ``manage.py`` and the
``package.json`` dev script; and a Docker Compose file in any case.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace

COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
MAIN_SCRIPTS = ("dev", "start", "serve", "develop")
NAME_OK = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Dev servers that take the port as a flag (they ignore $PORT); those that read $PORT
# themselves (react-scripts, most node servers) need no flag.
PORT_FLAGS: tuple[tuple[str, str, str], ...] = (
    (r"\bnext\s+(dev|start)\b", "Next.js", "--port"),
    (r"\bnuxi?\s+dev\b", "Nuxt", "--port"),
    (r"\bastro\s+dev\b", "Astro", "--port"),
    (r"\bstorybook\s+dev\b|\bstart-storybook\b", "Storybook", "-p"),
    (r"\bng\s+serve\b", "Angular", "--port"),
    (r"\bgatsby\s+develop\b", "Gatsby", "--port"),
    (r"\bwebpack(-dev-server|\s+serve)\b", "webpack-dev-server", "--port"),
    (r"\bparcel\b", "Parcel", "--port"),
    (r"\bvite\b", "Vite", "--port"),
)
READS_PORT_ENV = ((r"\breact-scripts\s+start\b", "Create React App"),)


@dataclass(frozen=True)
class Proposal:
    name: str
    command: str
    source: str  # where it came from, said in a comment and in the prompt
    host: str | None = None
    auto_start: bool = True
    note: str | None = None  # one more comment line
    stop_grace_period: float | None = None


def safe_name(raw: str, fallback: str = "app") -> str:
    """A valid project/task name: lowercase letters, digits and hyphens."""
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:63].strip("-")
    return name if NAME_OK.match(name) else fallback


def package_manager(folder: str, declared: str | None) -> str:
    if declared:
        return declared.split("@", 1)[0]
    for lock, manager in (("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"),
                          ("bun.lockb", "bun"), ("bun.lock", "bun")):
        if os.path.exists(os.path.join(folder, lock)):
            return manager
    return "npm"


def run_script(manager: str, script: str, extra: str = "") -> str:
    """The command that runs ``script`` with ``extra`` arguments passed through to it."""
    if manager == "npm":
        return f"npm run {script}" + (f" -- {extra}" if extra else "")
    prefix = {"yarn": "yarn", "pnpm": "pnpm", "bun": "bun run"}.get(manager, f"{manager} run")
    return f"{prefix} {script}" + (f" {extra}" if extra else "")


def web_framework(script_text: str) -> tuple[str, str | None] | None:
    """(framework, port flag or None when it reads $PORT), or None when not a known server."""
    for pattern, name, flag in PORT_FLAGS:
        if re.search(pattern, script_text):
            return name, flag
    for pattern, name in READS_PORT_ENV:
        if re.search(pattern, script_text):
            return name, None
    return None


def node(folder: str) -> list[Proposal]:
    try:
        with open(os.path.join(folder, "package.json"), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return []
    scripts = data.get("scripts") if isinstance(data, dict) else None
    if not isinstance(scripts, dict):
        return []
    scripts = {k: v for k, v in scripts.items() if isinstance(v, str)}
    manager = package_manager(folder, data.get("packageManager")
                              if isinstance(data.get("packageManager"), str) else None)
    out: list[Proposal] = []
    main = next((s for s in MAIN_SCRIPTS if s in scripts), None)
    if main:
        out.append(_node_task("web", main, scripts[main], manager, auto_start=True))
    for script, text in scripts.items():
        if script == main:
            continue
        if script == "storybook":
            out.append(_node_task("storybook", script, text, manager, auto_start=False))
        elif script == "watch" or script.endswith((":watch", ":dev")) or script.startswith(
                "watch:"):
            out.append(Proposal(safe_name(script, "watch"), run_script(manager, script),
                                f'package.json script "{script}"', auto_start=False))
    return out


def _node_task(name: str, script: str, text: str, manager: str, auto_start: bool) -> Proposal:
    source = f'package.json script "{script}"'
    found = web_framework(text)
    if found is None:
        return Proposal(name, run_script(manager, script), source, auto_start=auto_start,
                        note=f'if it serves HTTP on $PORT, add host = "{name}"')
    framework, flag = found
    extra = f"{flag} $PORT" if flag else ""
    how = f"{flag} $PORT" if flag else "reads $PORT"
    return Proposal(name, run_script(manager, script, extra), f"{source} ({framework}, {how})",
                    host=name, auto_start=auto_start)


def python_command(folder: str) -> str:
    for venv in (".venv", "venv"):
        if os.path.exists(os.path.join(folder, venv, "bin", "python")):
            return f"{venv}/bin/python"
    if os.path.exists(os.path.join(folder, "uv.lock")):
        return "uv run python"
    if os.path.exists(os.path.join(folder, "poetry.lock")):
        return "poetry run python"
    return "python3"


def django(folder: str, name: str) -> list[Proposal]:
    if not os.path.isfile(os.path.join(folder, "manage.py")):
        return []
    py = python_command(folder)
    return [Proposal(name, f"{py} manage.py runserver 127.0.0.1:$PORT",
                     "manage.py (Django runserver on $PORT)", host=name)]


def compose(folder: str) -> list[Proposal]:
    for filename in COMPOSE_FILES:
        path = os.path.join(folder, filename)
        if os.path.isfile(path):
            services = compose_services(path)
            note = ("services: " + ", ".join(services)) if services else None
            return [Proposal("compose", f"docker compose -f {filename} up", filename,
                             note=note, stop_grace_period=20.0)]
    return []


def compose_services(path: str) -> list[str]:
    """The keys of the top-level ``services:`` mapping (enough YAML for a comment)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    names: list[str] = []
    inside = False
    indent: int | None = None
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        level = len(line) - len(line.lstrip())
        if level == 0:
            inside = line.rstrip().rstrip(":").strip() == "services" and line.rstrip(
                ).endswith(":")
            indent = None
            continue
        if inside:
            indent = level if indent is None else indent
            m = re.match(r"^\s*([\"']?)([A-Za-z0-9._-]+)\1\s*:", line)
            if level == indent and m:
                names.append(m.group(2))
    return names


def procfile(folder: str) -> list[Proposal]:
    for filename in ("Procfile.dev", "Procfile"):
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            continue
        out: list[Proposal] = []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                m = re.match(r"^\s*([A-Za-z0-9_-]+)\s*:\s*(.+?)\s*$", line)
                if not m or line.lstrip().startswith("#"):
                    continue
                kind, command = m.group(1), m.group(2)
                if kind == "release":  # a one-shot step of a deploy, not a process
                    continue
                name = safe_name(kind.replace("_", "-"), "proc")
                out.append(Proposal(name, command, f"{filename} process {kind!r}",
                                    host=name if kind == "web" else None))
        return out
    return []


def detect(folder: str) -> list[Proposal]:
    """Every task proposed for ``folder``, with unique names."""
    found = procfile(folder)
    if not found:
        web = node(folder)
        has_node_web = any(p.name == "web" for p in web)
        found = django(folder, "api" if has_node_web else "web") + web
    found += compose(folder)
    seen: set[str] = set()
    unique = []
    for p in found:
        name, n = p.name, 2
        while name in seen:
            name, n = f"{p.name}-{n}", n + 1
        seen.add(name)
        unique.append(p if name == p.name else replace(p, name=name, host=None if p.host is None
                                                         else name))
    return unique
