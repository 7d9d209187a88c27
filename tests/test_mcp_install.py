"""``taskmux mcp install``: each agent's config file written in its own format, idempotently,
with everything else in it kept; and the entry it writes starts a working server."""

from __future__ import annotations

import asyncio
import json
import os
import tomllib
from typing import Any

import pytest

from tests.helpers import BIN, read, run_json
from tests.projects import write_project


@pytest.fixture
def where(env: dict[str, str], tmp_path: Any) -> tuple[dict[str, str], str, str]:
    """(env with a private HOME, the project folder, that HOME)."""
    home = str(tmp_path / "home")
    os.makedirs(home)
    folder = write_project(str(tmp_path / "shop"), 'name = "shop"\n')
    os.makedirs(os.path.join(folder, "src"))
    clean = {k: v for k, v in env.items() if k not in ("XDG_CONFIG_HOME", "CODEX_HOME")}
    return {**clean, "HOME": home}, folder, home


def install(env: dict[str, str], cwd: str, *args: str) -> dict[str, Any]:
    code, out = run_json(["mcp", "install", *args], env, cwd=cwd)
    assert code == 0, out
    return out


EXPECTED = {  # client -> (file relative to the project, or ~ for the user's home), key path
    "claude": ("P/.mcp.json", ("mcpServers", "taskmux")),
    "cursor": ("P/.cursor/mcp.json", ("mcpServers", "taskmux")),
    "opencode": ("P/opencode.json", ("mcp", "taskmux")),
    "codex": ("~/.codex/config.toml", ("mcp_servers", "taskmux")),
}


def load(path: str) -> dict[str, Any]:
    if path.endswith(".toml"):
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    with open(path) as fh:
        data: dict[str, Any] = json.load(fh)
    return data


@pytest.mark.parametrize("client", sorted(EXPECTED))
def test_install_writes_each_clients_file_once(where: tuple[dict[str, str], str, str],
                                               client: str) -> None:
    env, folder, home = where
    rel, keys = EXPECTED[client]
    path = rel.replace("P", folder, 1).replace("~", home, 1)
    # From a subfolder: the project is where taskmux.toml is.
    out = install(env, os.path.join(folder, "src"), client)
    assert out["path"] == path and out["action"] == "added"
    data = load(path)
    entry = data[keys[0]][keys[1]]
    program = f"{BIN}/taskmuxctl"  # the venv's bin is not on PATH: an absolute path
    env_block = {"TASKMUX_HOME": env["TASKMUX_HOME"]}
    if client == "opencode":
        assert entry == {"type": "local", "command": [program, "mcp"], "enabled": True,
                         "environment": env_block}
        assert data["$schema"] == "https://opencode.ai/config.json"
    else:
        assert entry["command"] == program and entry["args"] == ["mcp"]
        assert entry["env"] == env_block
        assert entry.get("type", "stdio") == "stdio"
    before = read(path)
    again = install(env, folder, client)
    assert again["action"] == "unchanged" and read(path) == before


def test_other_entries_and_settings_are_kept(where: tuple[dict[str, str], str, str]) -> None:
    env, folder, home = where
    claude = os.path.join(folder, ".mcp.json")
    with open(claude, "w") as fh:
        json.dump({"mcpServers": {"other": {"command": "x", "args": []},
                                  "taskmux": {"command": "old", "args": []}},
                   "extra": [1, 2]}, fh)
    out = install(env, folder, "claude")
    assert out["action"] == "updated"
    data = load(claude)
    assert data["mcpServers"]["other"] == {"command": "x", "args": []}
    assert data["extra"] == [1, 2] and data["mcpServers"]["taskmux"]["args"] == ["mcp"]

    opencode = os.path.join(folder, "opencode.json")
    with open(opencode, "w") as fh:
        json.dump({"$schema": "https://opencode.ai/config.json", "theme": "dark",
                   "mcp": {"docs": {"type": "remote", "url": "https://x"}}}, fh)
    install(env, folder, "opencode")
    data = load(opencode)
    assert data["theme"] == "dark" and data["mcp"]["docs"]["url"] == "https://x"
    assert set(data["mcp"]) == {"docs", "taskmux"}

    codex = os.path.join(home, ".codex", "config.toml")
    os.makedirs(os.path.dirname(codex))
    original = ('# my settings\nmodel = "gpt-5"  # pinned\n\n[mcp_servers.docs]\n'
                'command = "docs-mcp"\nargs = ["--port", "1"]\n\n[projects."/x"]\n'
                'trust_level = "trusted"\n')
    with open(codex, "w") as fh:
        fh.write(original)
    install(env, folder, "codex")
    text = read(codex)
    start, end = text.index("[mcp_servers.taskmux]"), text.index('[projects."/x"]')
    assert text[:start] + text[end:] == original  # the rest untouched, comments and all
    data = load(codex)
    assert data["mcp_servers"]["docs"]["command"] == "docs-mcp"
    assert data["mcp_servers"]["taskmux"]["args"] == ["mcp"]
    assert install(env, folder, "codex")["action"] == "unchanged" and read(codex) == text


def test_scopes_and_names(where: tuple[dict[str, str], str, str]) -> None:
    env, folder, home = where
    out = install(env, folder, "codex", "--scope", "project")
    assert out["path"] == os.path.join(folder, ".codex", "config.toml")
    out = install(env, folder, "cursor", "--scope", "user", "--name", "dev-tasks")
    assert out["path"] == os.path.join(home, ".cursor", "mcp.json")
    assert "dev-tasks" in load(out["path"])["mcpServers"]
    xdg = os.path.join(home, "xdg")
    out = install({**env, "XDG_CONFIG_HOME": xdg}, folder, "opencode", "--scope", "user")
    assert out["path"] == os.path.join(xdg, "opencode", "opencode.json")
    out = install({**env, "CODEX_HOME": os.path.join(home, "cx")}, folder, "codex")
    assert out["path"] == os.path.join(home, "cx", "config.toml")
    out = install(env, folder, "claude", "--scope", "user")
    assert out["path"] == os.path.join(home, ".claude.json")


def test_files_it_cannot_rewrite_faithfully_are_refused(
        where: tuple[dict[str, str], str, str]) -> None:
    env, folder, _home = where
    path = os.path.join(folder, ".cursor", "mcp.json")
    os.makedirs(os.path.dirname(path))
    jsonc = '{\n  // my servers\n  "mcpServers": {}\n}\n'
    with open(path, "w") as fh:
        fh.write(jsonc)
    code, out = run_json(["mcp", "install", "cursor"], env, cwd=folder)
    assert code == 1 and "not plain JSON" in out["error"] and "yourself" in out["error"]
    assert read(path) == jsonc


def test_the_written_entry_starts_a_working_server(
        where: tuple[dict[str, str], str, str]) -> None:
    mcp = pytest.importorskip("mcp")
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env, folder, _home = where
    entry = load(install(env, folder, "claude")["path"])["mcpServers"]["taskmux"]

    async def scenario() -> list[str]:
        params = StdioServerParameters(command=entry["command"], args=entry["args"],
                                       env={**entry["env"], "TASKMUX_NO_DAEMON_START": "1"},
                                       cwd=folder)
        errlog = await asyncio.to_thread(open, os.devnull, "w")
        try:
            async with mcp.Client(stdio_client(params, errlog=errlog)) as client:
                return [t.name for t in (await client.list_tools()).tools]
        finally:
            errlog.close()

    assert "status" in asyncio.run(scenario())
