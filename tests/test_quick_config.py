"""The client's quick path for taskmux.toml (``taskmuxctl.quickconfig``) agrees with the pydantic
models: its table is theirs, it never accepts what they refuse, what it accepts has their values,
and a file with problems gets their messages."""

from __future__ import annotations

import os
import typing
from typing import Any

import pytest

from taskmuxctl import quickconfig
from taskmuxctl.core import projectconfig as cfgmod

BOUNDS = {"Ge": ("ge", False), "Gt": ("gt", True), "MinLen": ("min_length", False)}


def _kind(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if args and typing.get_origin(args[0]) is typing.Literal:
        return typing.get_args(args[0])
    base = args[0] if args else annotation
    return {str: "str", bool: "bool", int: "int", float: "float"}[base]


def _spec_of(field: Any) -> tuple[Any, Any, Any, bool, Any]:
    low, open_low, high = None, False, None
    for m in field.metadata:
        name = type(m).__name__
        if name in BOUNDS:
            attr, open_low = BOUNDS[name]
            low = getattr(m, attr)
        elif name in ("Le", "MaxLen"):
            high = getattr(m, "le" if name == "Le" else "max_length")
    default = ... if field.is_required() else field.default
    return (_kind(field.annotation), default, low, open_low, high)


@pytest.mark.parametrize(("model", "table"), [(cfgmod.TaskConfig, quickconfig.TASK_FIELDS),
                                              (cfgmod.ProjectConfig, quickconfig.PROJECT_FIELDS)])
def test_the_table_is_the_models(model: Any, table: dict[str, Any]) -> None:
    special = {"env", "depends_on", "success_exit_codes", "log_max_size", "hooks", "tasks"}
    assert set(model.model_fields) == set(table) | (special & set(model.model_fields))
    for name, spec in table.items():
        assert _spec_of(model.model_fields[name]) == spec, name
    size = cfgmod.TaskConfig.model_fields["log_max_size"]
    assert (size.default, _spec_of(size)[2]) == quickconfig.LOG_MAX_SIZE
    assert set(quickconfig.HOOK_KEYS) == set(cfgmod.Hooks.model_fields)


def test_the_views_have_every_field_of_the_models() -> None:
    assert set(typing.get_type_hints(quickconfig.TaskView)) >= set(cfgmod.TaskConfig.model_fields)
    assert set(typing.get_type_hints(quickconfig.ProjectView)) == \
        set(cfgmod.ProjectConfig.model_fields)


def _candidates(spec: tuple[Any, Any, Any, bool, Any]) -> list[Any]:
    kind, default, low, _, high = spec
    out: list[Any] = ["x", "", True, False, 0, 1, -1, 0.5, 1.0, 2**70, float("inf"),
                      float("nan"), [], {}, ["a"]]
    if isinstance(kind, tuple):
        out += list(kind) + [k.upper() for k in kind]
    for bound in (low, high):
        if bound is not None:
            out += [bound, bound - 1, bound + 1, float(bound) - 0.5, float(bound) + 0.5,
                    "y" * int(bound), "y" * (int(bound) + 1)]
    if default not in (None, ...):
        out.append(default)
    return out


def _task_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = [{"command": "true"}, {}, {"command": ""}]
    for name, spec in quickconfig.TASK_FIELDS.items():
        cases += [{"command": "true", name: v} for v in _candidates(spec)]
    special: dict[str, list[Any]] = {
        "env": [{}, {"A": "1", "B": 2, "C": True, "D": 1.5}, {"A": []}, {"A": {"b": 1}}, "x", []],
        "depends_on": [[], ["other"], ["other", "other"], [1], {}, {"other": "healthy"},
                       {"other": "started"}, {"other": "ready"},
                       {"other": {"condition": "completed_successfully"}},
                       {"other": {"restart": True}}, {"other": {"restart": "yes"}},
                       {"other": {"condition": "healthy", "restart": True, "x": 1}},
                       {"other": {"condition": 3}}, {"other": 1}, "other", 3],
        "success_exit_codes": [[0], [], [0, 255], [256], [-1], [True], [1.0], 0, "0"],
        "log_max_size": [1024, 1023, "10MB", "512k", "1KiB", "1 b", "ten", True, 2048.0,
                         "9" * 400, [], 10**30],
        "hooks": [{}, {"before_start": "echo"}, {"before_start": 1}, {"nope": "x"}, "x"],
    }
    for name, values in special.items():
        cases += [{"command": "true", name: v} for v in values]
    return cases


def _full(text: str, path: str) -> Any:
    try:
        return cfgmod.parse(text, path)
    except cfgmod.ConfigError as exc:
        return exc.message
    except Exception as exc:  # e.g. a size too large for a float: load_guarded reports it
        return f"raised {type(exc).__name__}: {exc}"


def _quick(text: str, path: str) -> Any:
    try:
        return quickconfig.parse(text, path)
    except cfgmod.ConfigError as exc:
        return exc.message
    except Exception as exc:  # e.g. a size too large for a float: load_guarded reports it
        return f"raised {type(exc).__name__}: {exc}"


def _toml(project: dict[str, Any]) -> str:
    import tomlkit

    return tomlkit.dumps(project)


def _same(quick: Any, full: Any) -> None:
    """The quick result is the full one: the same message, or the same values throughout."""
    if isinstance(full, str) or isinstance(quick, str):
        assert quick == full
        return
    assert full.path == quick.path and full.text == quick.text
    if isinstance(quick, cfgmod.LoadedConfig):  # the models decided
        assert quick.project == full.project
        return
    dumped = full.project.model_dump()
    for key, value in dumped.items():
        if key == "tasks":
            assert set(value) == set(quick.project.tasks)
            for name, task in value.items():
                mine = quick.project.tasks[name]
                for field, expected in task.items():
                    got = getattr(mine, field)
                    if field == "depends_on" and isinstance(got, dict):
                        got = {d: e if isinstance(e, str) else
                               {"condition": e.condition, "restart": e.restart}
                               for d, e in got.items()}
                    assert got == expected and type(got) is type(expected), (name, field)
                other = full.project.tasks[name]
                for dep in other.depends_on:
                    dep_config = full.project.tasks.get(dep, other)
                    mine_dep = quick.project.tasks.get(dep, mine)
                    assert mine.condition_on(dep, mine_dep) == other.condition_on(dep, dep_config)
                    assert mine.restarts_with(dep) == other.restarts_with(dep)
                assert (mine.ready_source, mine.oneshot, mine.wants_port,
                        mine.has_health_check) == (other.ready_source, other.oneshot,
                                                   other.wants_port, other.has_health_check)
        else:
            assert getattr(quick.project, key) == value, key


def test_every_value_gets_the_models_verdict(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "taskmux.toml")
    accepted = 0
    for task in _task_cases():
        project = {"name": "shop", "tasks": {"web": task, "other": {"command": "sleep 1",
                                                                   "type": "oneshot"}}}
        text = _toml(project)
        full, quick = _full(text, path), _quick(text, path)
        _same(quick, full)
        accepted += isinstance(quick, quickconfig.QuickLoaded)
    assert accepted > 50  # the quick path is taken for the plain valid ones


@pytest.mark.parametrize("project", [
    {},
    {"name": "Shop"},
    {"name": 3},
    {"name": "shop", "auto_start": False, "auto_daemon": True, "agent_context": False},
    {"name": "shop", "hooks": {"after_start": "echo hi"}},
    {"name": "shop", "extra": 1},
    {"name": "shop", "tasks": []},
    {"name": "shop", "tasks": {"a": "x"}},
    {"name": "shop", "tasks": {"A_b": {"command": "x"}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "depends_on": ["a"]}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "depends_on": ["b"]},
                               "b": {"command": "x", "depends_on": ["a"]}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "depends_on": ["nope"]}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "cwd": "missing"}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "cwd": "."}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "env_file": "missing.env"}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "host": "@"},
                               "b": {"command": "x", "host": "@"}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "host": "Bad_Host"}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "health_expected_body": "("}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "ready_log_line": "(",
                                     "ready": "notify"}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "ready": "notify",
                                     "health_url": "http://x/"}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "shell": "bash"}}},
    {"name": "shop", "tasks": {"a": {"command": "x"},
                               "b": {"command": "x", "depends_on": {
                                   "a": "completed_successfully"}}}},
    {"name": "shop", "tasks": {"a": {"command": "x", "type": "oneshot"},
                               "b": {"command": "x", "depends_on": {
                                   "a": {"condition": "completed_successfully",
                                         "restart": True}}}}},
])
def test_a_project_gets_the_models_verdict(tmp_path: Any, project: dict[str, Any]) -> None:
    path = os.path.join(str(tmp_path), "taskmux.toml")
    text = _toml(project)
    _same(_quick(text, path), _full(text, path))


@pytest.mark.parametrize("text", ["name = ", "[tasks.a]\ncommand = 'x'\n[tasks.a]\n",
                                  "x = " + "[" * 5000 + "]" * 5000])
def test_a_file_that_is_not_toml_gets_the_same_message(tmp_path: Any, text: str) -> None:
    path = os.path.join(str(tmp_path), "taskmux.toml")
    _same(_quick(text, path), _full(text, path))


def test_load_guarded_leaves_a_surprise_to_the_models(tmp_path: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure nobody foresaw comes out as projectconfig.load_guarded says it, logged."""
    path = os.path.join(str(tmp_path), "taskmux.toml")
    with open(path, "w") as fh:
        fh.write("[tasks.a]\ncommand = 'x'\n")

    def boom(*args: Any) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr(cfgmod, "check_across", boom)
    monkeypatch.setattr(quickconfig, "check_across", boom)
    with pytest.raises(cfgmod.ConfigError) as caught:
        quickconfig.load_guarded(path)
    assert "could not be loaded (KeyError: 'boom')" in caught.value.message
