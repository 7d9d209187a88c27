"""The fast path parses exactly as argparse would; completion works through argcomplete."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from taskmuxctl.parse import UsageError, fast, slow, split_globals
from taskmuxctl.spec import COMMANDS
from tests.helpers import BIN, run_cli


def sample_argvs() -> list[list[str]]:
    out: list[list[str]] = []
    for cmd in COMMANDS:
        base = list(cmd.path)
        positionals = [a for a in cmd.args if a.positional]
        fill = []
        for arg in positionals:
            value = arg.choices[0] if arg.choices else "web"
            fill.append(value)
        out.append(base + fill)
        for arg in cmd.args:
            if arg.positional:
                continue
            value = [] if arg.action in ("store_true", "count") else ["7" if arg.type else "x"]
            out.append(base + fill + [arg.flags[0], *value])
            out.append([*base, arg.flags[-1], *value, *fill])
    return out


@pytest.mark.parametrize("argv", sample_argvs(), ids=" ".join)
def test_fast_path_agrees_with_argparse(argv: list[str]) -> None:
    quick = fast(argv)
    try:
        full = slow(argv, "taskmux")
    except UsageError:
        assert quick is None, f"fast path accepted what argparse refuses: {argv}"
        return
    if quick is not None:
        assert quick[0] is full[0]
        assert quick[1] == full[1], argv


@pytest.mark.parametrize("argv", [["daemon", "stat"], ["-h"], ["daemon", "status", "--bogus"],
                                  ["config", "set", "only-key"], ["completion", "tcsh"]])
def test_fast_path_declines_what_it_cannot_be_sure_of(argv: list[str]) -> None:
    assert fast(argv) is None


def test_global_flags_are_taken_from_anywhere_before_double_dash() -> None:
    tokens, flags = split_globals(["daemon", "--json", "status", "--", "--json"])
    assert tokens == ["daemon", "status", "--", "--json"]
    assert flags == {"--json"}


def test_help_lists_every_top_level_word(env: dict[str, str]) -> None:
    proc = run_cli(["--help"], env)
    assert proc.returncode == 0
    for cmd in COMMANDS:
        assert cmd.path[0] in proc.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script(env: dict[str, str], shell: str) -> None:
    proc = run_cli(["completion", shell], env)
    assert proc.returncode == 0
    assert "taskmuxctl" in proc.stdout and "taskmux" in proc.stdout
    if shell == "bash":
        check = subprocess.run(["bash", "-n"], input=proc.stdout, text=True,
                               capture_output=True)
        assert check.returncode == 0, check.stderr


def complete(line: str, env: dict[str, str], tmp_path: str) -> list[str]:
    out_file = os.path.join(tmp_path, "completions")
    full_env = {**env, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "bash", "COMP_LINE": line,
                "COMP_POINT": str(len(line)), "_ARGCOMPLETE_IFS": "\n",
                "_ARGCOMPLETE_STDOUT_FILENAME": out_file}
    proc = subprocess.run([os.path.join(BIN, "taskmux")], env=full_env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    with open(out_file) as fh:
        return fh.read().split()


def test_tab_completion_of_commands_and_settings(env: dict[str, str], tmp_path: str) -> None:
    assert set(complete("taskmux daemon st", env, str(tmp_path))) == {"start", "stop", "status"}
    keys = complete("taskmux config set log_", env, str(tmp_path))
    assert keys == ["log_level"]


def test_python_m_works(env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "taskmuxctl", "version"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("taskmuxctl ")


@pytest.mark.parametrize("argv", [["-p", "shop", "status"], ["status", "-p", "shop"],
                                  ["--project", "shop", "status"], ["--project=shop", "status"],
                                  ["status", "--project=shop"], ["-p", "shop", "ls"]])
def test_the_project_option_goes_before_or_after_the_command(argv: list[str]) -> None:
    tokens, _ = split_globals(argv)
    quick = fast(tokens)
    assert quick is not None, tokens  # the plain forms stay on the fast path
    assert quick[0].path == ("status",) and quick[1].project == "shop"
    full = slow(tokens, "taskmux")
    assert full[0] is quick[0] and full[1] == quick[1]


def test_the_project_option_moves_only_before_double_dash() -> None:
    tokens, flags = split_globals(["-p", "shop", "--json", "send", "web", "--", "-p", "x"])
    assert tokens == ["send", "-p", "shop", "web", "--", "-p", "x"]
    assert flags == {"--json"}
    cmd, args = slow(tokens, "taskmux")
    assert cmd.path == ("send",) and args.project == "shop" and args.text == ["-p", "x"]
    # With no value after it, -p is left where it is, for argparse to say what is missing.
    assert split_globals(["status", "-p"])[0] == ["status", "-p"]


def test_the_project_option_before_the_command_end_to_end(env: dict[str, str]) -> None:
    for argv in (["-p", "shop", "logs"], ["--json", "--project=shop", "logs", "-n", "5"],
                 ["-p", "shop", "logs", "--lines=5"]):  # the last one through argparse
        proc = run_cli(argv, env)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert "invalid choice" not in proc.stderr
    code = run_cli(["--json", "-p", "shop", "logs"], env)
    assert '"project":"shop"' in code.stdout


@pytest.mark.parametrize(("argv", "meant"), [
    (["statsu"], "taskmux status"), (["strat"], "taskmux start"),
    (["daemon", "stat"], "taskmux daemon status"), (["config", "shwo"], "taskmux config show"),
    (["mcp", "instal", "claude"], "taskmux mcp install"), (["-p", "x", "lgos"], "taskmux logs")])
def test_a_misspelt_command_names_the_closest_one(env: dict[str, str], argv: list[str],
                                                   meant: str) -> None:
    proc = run_cli(argv, env, prog="taskmux")
    assert proc.returncode == 2
    assert f"did you mean `{meant}`?" in proc.stderr, proc.stderr
    assert "choose from" not in proc.stderr  # not every command there is
    assert len(proc.stderr.splitlines()) == 2, proc.stderr  # usage, then the error


def test_a_word_like_no_command_points_to_help(env: dict[str, str]) -> None:
    proc = run_cli(["xyzzy"], env, prog="taskmux")
    assert proc.returncode == 2
    assert "unknown command 'xyzzy'; `taskmux --help` lists the commands" in proc.stderr
    code = run_cli(["--json", "statsu"], env)
    assert '"ok":false' in code.stdout and "did you mean" in code.stdout


def test_help_puts_everyday_commands_first(env: dict[str, str]) -> None:
    from taskmuxctl.spec import GROUPS, SECTIONS

    top = {c.path[0] for c in COMMANDS} | {g.path[0] for g in GROUPS}
    listed = [name for _, names in SECTIONS for name in names]
    assert sorted(listed) == sorted(top)  # every top-level word in exactly one section
    text = run_cli(["--help"], env).stdout
    titles = [title for title, _ in SECTIONS]
    assert titles[0] == "everyday commands"
    positions = [text.index(f"\n{title}:\n") for title in titles]
    assert positions == sorted(positions)
    everyday = text[positions[0]:positions[1]]
    firsts = [line.split()[0] for line in everyday.splitlines()[1:] if line.startswith("  ")
              and not line.startswith("   ")]
    assert firsts == ["start", "stop", "restart", "status", "top", "logs", "events", "attach"]
    for word in ("daemon", "config", "ca", "dns"):
        assert text.index(f"\n  {word} ") > positions[-1]
    assert "-p NAME, --project NAME" in text
