"""The README documents every command, setting, taskmux.toml key and error code there is, and
names no command that does not exist."""

from __future__ import annotations

import re

from taskmuxctl.core.projectconfig import Hooks, ProjectConfig, TaskConfig
from taskmuxctl.core.protocol import ERRORS
from taskmuxctl.core.settings import Settings
from taskmuxctl.spec import COMMANDS, GROUPS
from taskmuxd.policy import Ev, TaskState
from tests.helpers import REPO, read

README = read(f"{REPO}/README.md")


def section(title: str) -> str:
    start = README.index(title)
    nxt = README.find("\n## ", start + len(title))
    return README[start:nxt if nxt > 0 else None]


def test_every_command_is_documented() -> None:
    commands = section("## Commands")
    for cmd in COMMANDS:
        for word in (cmd.path[-1], *cmd.aliases):
            name = " ".join((*cmd.path[:-1], word))
            assert re.search(rf"`taskmux {re.escape(name)}(\b|`)", commands), name


def test_the_readme_names_no_command_that_does_not_exist() -> None:
    known = {" ".join(c.path) for c in COMMANDS} | {" ".join(g.path) for g in GROUPS}
    known |= {" ".join((*c.path[:-1], a)) for c in COMMANDS for a in c.aliases}
    mentioned = re.findall(r"`taskmux ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", section("## Commands"))
    for words in mentioned:
        parts = words.split()
        assert " ".join(parts) in known or parts[0] in known, words


def test_every_setting_is_documented_with_its_default() -> None:
    table = section("## Global settings")
    for key, field in Settings.model_fields.items():
        row = next((line for line in table.splitlines() if line.startswith(f"| `{key}` |")),
                   None)
        assert row is not None, key
        default = field.default
        if isinstance(default, bool):
            assert f"`{str(default).lower()}`" in row, (key, row)
        elif isinstance(default, int | float) and not isinstance(default, bool):
            assert re.search(rf"`{default}(\.0)?`", row), (key, row)


def test_every_taskmux_toml_key_is_documented() -> None:
    text = section("## A project")
    for model in (ProjectConfig, TaskConfig):
        for key in model.model_fields:
            if key in ("tasks", "hooks"):
                continue
            assert f"| `{key}` |" in text, key
    for key in Hooks.model_fields:
        assert f"`{key}`" in text, key


def test_every_error_code_is_documented() -> None:
    table = section("### Error codes") if "### Error codes" in README else ""
    for code, info in ERRORS.items():
        assert f"| {code} | {info.name} |" in table, code


def test_the_state_diagram_is_the_one_the_table_draws() -> None:
    from taskmuxd.supervisor.diagram import mermaid

    states = section("## Task states")
    block = re.search(r"```mermaid\n(.*?)```", states, re.S)
    assert block is not None, "the Task states section has no mermaid block"
    assert block.group(1) == mermaid(), "regenerate: python -m taskmuxd.supervisor.diagram"
    for state in TaskState:
        assert f"`{state.value}`" in states, state
    for kind in Ev:
        assert f"`{kind.value}`" in states, kind


def test_ci_runs_the_test_command_of_the_quick_start() -> None:
    quick = section("## Quick start")
    [command] = [line for line in quick.splitlines() if line.startswith("python3 -m venv")]
    assert "-m pytest" in command
    ci = [line for line in read(f"{REPO}/.ci/run").splitlines() if line.strip()]
    assert ci[-1] == command  # .ci/run ends with the README's command, verbatim
