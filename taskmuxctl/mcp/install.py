"""Writing taskmux's entry into coding agents' MCP configuration, keeping everything else.

| agent    | project scope (default)        | user scope                              |
| -------- | ------------------------------ | --------------------------------------- |
| claude   | .mcp.json  (``mcpServers``)    | ~/.claude.json (``mcpServers``)         |
| cursor   | .cursor/mcp.json (``mcpServers``) | ~/.cursor/mcp.json                   |
| opencode | opencode.json (``mcp``)        | ~/.config/opencode/opencode.json        |
| codex    | .codex/config.toml (trusted projects only) | ~/.codex/config.toml (default) |

Codex reads a project's ``.codex/config.toml`` only once the project is trusted, so its default
is the user file; the server finds the project from the working directory Codex starts it in.
"Project" is the folder of the nearest taskmux.toml (else the current one). Each write is
atomic and happens only when the entry differs; JSON files with comments (JSONC) are refused
rather than rewritten without them.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CLIENTS = ("claude", "codex", "cursor", "opencode")


class InstallError(Exception):
    pass


def config_path(client: str, scope: str, project_dir: str, environ: dict[str, str]) -> str:
    home = environ.get("HOME") or os.path.expanduser("~")
    if client == "claude":
        return os.path.join(project_dir, ".mcp.json") if scope == "project" else \
            os.path.join(home, ".claude.json")
    if client == "cursor":
        return os.path.join(project_dir if scope == "project" else home, ".cursor", "mcp.json")
    if client == "opencode":
        if scope == "project":
            return os.path.join(project_dir, "opencode.json")
        base = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        return os.path.join(base, "opencode", "opencode.json")
    if client == "codex":
        if scope == "project":
            return os.path.join(project_dir, ".codex", "config.toml")
        return os.path.join(environ.get("CODEX_HOME") or os.path.join(home, ".codex"),
                            "config.toml")
    raise InstallError(f"unknown client {client!r}; one of {', '.join(CLIENTS)}")


def entry(client: str, command: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The server's entry in the client's own format."""
    if client == "opencode":
        out: dict[str, Any] = {"type": "local", "command": [command, *args], "enabled": True}
        if env:
            out["environment"] = env
        return out
    out = {"command": command, "args": args}
    if client == "claude":
        out = {"type": "stdio", **out}
    if env:
        out["env"] = env
    return out


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InstallError(f"{path} is not plain JSON ({exc}); taskmux does not rewrite files "
                           "with comments: add the entry yourself") from None
    if not isinstance(data, dict):
        raise InstallError(f"{path} does not hold a JSON object; fix it or move it away")
    return data


def install_json(path: str, key: str, name: str, value: dict[str, Any],
                 extra_top: dict[str, Any] | None = None) -> str:
    data = _read_json(path)
    servers = data.get(key)
    if servers is None:
        servers = data[key] = {}
    if not isinstance(servers, dict):
        raise InstallError(f"{path}: {key!r} is not an object; fix it or move it away")
    if servers.get(name) == value:
        return "unchanged"
    action = "updated" if name in servers else "added"
    servers[name] = value
    if extra_top and not os.path.exists(path):
        data = {**extra_top, **data}
    _write(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return action


def install_toml(path: str, name: str, value: dict[str, Any]) -> str:
    import tomlkit

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = ""
    try:
        doc = tomlkit.parse(text)
    except Exception as exc:  # tomlkit's parse errors share no useful base class
        raise InstallError(f"{path} is not valid TOML ({exc}); fix it first") from None
    servers = doc.get("mcp_servers")
    if servers is None:
        servers = tomlkit.table(is_super_table=True)
        doc["mcp_servers"] = servers
    current = servers.get(name)
    if current is not None and current.unwrap() == value:
        return "unchanged"
    table = tomlkit.table()
    for k, v in value.items():
        if isinstance(v, dict):  # env = { ... }, as Codex's own docs write it
            inline = tomlkit.inline_table()
            inline.update(v)
            table[k] = inline
        else:
            table[k] = v
    table.add(tomlkit.nl())  # a blank line before whatever table follows
    action = "updated" if current is not None else "added"
    servers[name] = table
    text = tomlkit.dumps(doc)
    _write(path, text.rstrip("\n") + "\n")
    return action


def _write(path: str, text: str) -> None:
    from taskmuxctl.core.fsutil import atomic_write

    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    atomic_write(path, text, mode=mode)


def install(client: str, scope: str, project_dir: str, name: str, command: str,
            args: list[str], env: dict[str, str], environ: dict[str, str]) -> dict[str, Any]:
    path = config_path(client, scope, project_dir, environ)
    value = entry(client, command, args, env)
    if client == "codex":
        action = install_toml(path, name, value)
    elif client == "opencode":
        action = install_json(path, "mcp", name, value,
                              {"$schema": "https://opencode.ai/config.json"})
    else:
        action = install_json(path, "mcpServers", name, value)
    return {"client": client, "scope": scope, "path": path, "name": name, "action": action,
            "entry": value}
