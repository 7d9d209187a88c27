"""The taskmux block in CLAUDE.md / AGENTS.md: added, refreshed and removed without touching a
byte around it; idempotent; which files get it; the project setting that turns it off."""

from __future__ import annotations

import os

import pytest

from taskmuxctl import agentcontext
from tests.helpers import read, run_cli, run_json

BLOCK = agentcontext.render("shop", [("web", "npm run dev -- --port $PORT", "web", True),
                                     ("odd", "a | b `c`", None, False)])


@pytest.mark.parametrize("original", [
    "", "# Notes\n", "# Notes", "# Notes\n\n", "a\r\nb\r\n", "intro\n\n## Tail\nend\n"])
def test_apply_then_remove_gives_back_the_original(original: str) -> None:
    once = agentcontext.apply(original, BLOCK)
    assert once.startswith(original)
    assert agentcontext.apply(once, BLOCK) == once  # idempotent
    if original:
        restored = agentcontext.remove(once)
        assert restored == original or (not original.endswith("\n") and restored ==
                                        original + "\n")


def test_crlf_files_get_crlf_blocks() -> None:
    out = agentcontext.apply("one\r\ntwo\r\n", BLOCK)
    assert "\r\n" + agentcontext.START + "\r\n" in out
    assert out.count("\n") == out.count("\r\n")


def test_the_block_is_replaced_in_place_with_the_rest_untouched() -> None:
    before = "# Title\r\nkeep me  \n\n" + agentcontext.START + "\nold stuff\n" + \
        agentcontext.END + "\n\n## After\n\ttabs stay\n"
    newer = agentcontext.render("shop", [("api", "x", "api", True)])
    out = agentcontext.apply(before, newer)
    head, _, rest = before.partition(agentcontext.START)
    tail = rest.partition(agentcontext.END)[2]
    assert out == head + newer.replace("\n", "\r\n") + tail


def test_table_cells_escape_pipes_and_backticks() -> None:
    assert "| odd | `` a \\| b `c` `` | - | no |" in BLOCK
    assert "| web | `npm run dev -- --port $PORT` | `web.shop.localhost` | yes |" in BLOCK


def test_a_lone_marker_is_an_error_not_a_guess() -> None:
    with pytest.raises(agentcontext.BlockError):
        agentcontext.apply("x\n" + agentcontext.START + "\nno end\n", BLOCK)
    with pytest.raises(agentcontext.BlockError):
        agentcontext.remove(agentcontext.END + "\n")


def project(folder: str, extra: str = "") -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "taskmux.toml"), "w") as fh:
        fh.write(f'name = "shop"\n{extra}\n[tasks.web]\ncommand = "sleep 100"\nhost = "web"\n')
    return folder


def raw(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def test_inject_keeps_every_byte_around_the_block_and_is_idempotent(
        env: dict[str, str], tmp_path: str) -> None:
    folder = project(str(tmp_path / "shop"))
    claude = os.path.join(folder, "CLAUDE.md")
    original = b"# House rules\r\n\r\nUse tabs.\t \r\nNo trailing newline"
    with open(claude, "wb") as fh:
        fh.write(original)
    os.chmod(claude, 0o640)
    code, out = run_json(["inject"], env, cwd=folder)
    assert code == 0 and out["files"] == [{"path": claude, "action": "added"}]
    first = raw(claude)
    assert first.startswith(original) and b"| web | `sleep 100`" in first
    assert not os.path.exists(os.path.join(folder, "AGENTS.md"))  # CLAUDE.md existed
    assert os.stat(claude).st_mode & 0o777 == 0o640
    code, out = run_json(["inject"], env, cwd=folder)
    assert out["files"][0]["action"] == "kept" and raw(claude) == first
    # The user edits around the block; taskmux's refresh leaves those edits alone.
    edited = b"Prologue\r\n" + first + b"Epilogue \xe2\x9c\x93\r\n"
    with open(claude, "wb") as fh:
        fh.write(edited)
    with open(os.path.join(folder, "taskmux.toml"), "a") as fh:
        fh.write('\n[tasks.worker]\ncommand = "sleep 200"\n')
    code, out = run_json(["inject"], env, cwd=folder)
    assert out["files"][0]["action"] == "updated"
    now = raw(claude)
    assert now.startswith(b"Prologue\r\n" + original) and now.endswith(b"Epilogue \xe2\x9c\x93\r\n")
    assert b"| worker | `sleep 200`" in now


def test_which_files_get_the_block(env: dict[str, str], tmp_path: str) -> None:
    none = project(str(tmp_path / "a"))
    run_json(["inject"], env, cwd=none)
    assert sorted(os.listdir(none)) == ["AGENTS.md", "taskmux.toml"]
    claude_project = project(str(tmp_path / "b"))
    os.mkdir(os.path.join(claude_project, ".claude"))
    run_json(["inject"], env, cwd=claude_project)
    assert {"AGENTS.md", "CLAUDE.md"} <= set(os.listdir(claude_project))
    both = project(str(tmp_path / "c"))
    for name, text in (("CLAUDE.md", "See @AGENTS.md for the rules.\n"), ("AGENTS.md", "")):
        with open(os.path.join(both, name), "w") as fh:
            fh.write(text)
    code, out = run_json(["inject"], env, cwd=both)
    assert code == 0
    assert [os.path.basename(f["path"]) for f in out["files"]] == ["AGENTS.md"]
    assert raw(os.path.join(both, "CLAUDE.md")) == b"See @AGENTS.md for the rules.\n"
    linked = project(str(tmp_path / "d"))
    with open(os.path.join(linked, "AGENTS.md"), "w") as fh:
        fh.write("# Agents\n")
    os.symlink("AGENTS.md", os.path.join(linked, "CLAUDE.md"))
    _code, out = run_json(["inject"], env, cwd=linked)
    assert len(out["files"]) == 1
    assert os.path.islink(os.path.join(linked, "CLAUDE.md"))
    assert raw(os.path.join(linked, "AGENTS.md")).count(agentcontext.START.encode()) == 1


def test_agent_context_false_takes_the_block_out(env: dict[str, str], tmp_path: str) -> None:
    folder = project(str(tmp_path / "shop"))
    agents = os.path.join(folder, "AGENTS.md")
    with open(agents, "w") as fh:
        fh.write("# Mine\n")
    run_json(["inject"], env, cwd=folder)
    assert agentcontext.START in read(agents)
    project(folder, "agent_context = false")
    code, out = run_json(["inject"], env, cwd=folder)
    assert code == 0 and out["enabled"] is False and out["files"][0]["action"] == "removed"
    assert raw(agents) == b"# Mine\n"
    # A file taskmux created only for the block goes away with it.
    other = project(str(tmp_path / "other"))
    run_json(["inject"], env, cwd=other)
    project(other, "agent_context = false")
    run_json(["inject"], env, cwd=other)
    assert not os.path.exists(os.path.join(other, "AGENTS.md"))


def test_inject_print_writes_nothing(env: dict[str, str], tmp_path: str) -> None:
    folder = project(str(tmp_path / "shop"))
    proc = run_cli(["inject", "--print"], env, cwd=folder)
    assert proc.returncode == 0
    assert proc.stdout.startswith(agentcontext.START) and "taskmux status --json" in proc.stdout
    assert "taskmux logs" in proc.stdout and "taskmux restart" in proc.stdout
    assert "taskmux events" in proc.stdout and "MCP" in proc.stdout
    assert os.listdir(folder) == ["taskmux.toml"]


def test_a_broken_block_is_reported_and_left_alone(env: dict[str, str], tmp_path: str) -> None:
    folder = project(str(tmp_path / "shop"))
    agents = os.path.join(folder, "AGENTS.md")
    text = "x\n" + agentcontext.START + "\nhalf\n"
    with open(agents, "w") as fh:
        fh.write(text)
    code, out = run_json(["inject"], env, cwd=folder)
    assert code == 1 and "marker" in out["error"] and agents in out["error"]
    assert read(agents) == text
