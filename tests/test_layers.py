"""The layers hold: import-linter's contracts (pyproject.toml) pass, their module lists are
complete, and no import circle is left beyond the ones named here with the reason they remain.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import subprocess
import sys
import tomllib
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import BIN
from tests.test_imports import imported_modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# No import circle is left, typing-only ones (under ``TYPE_CHECKING``) included. A circle that
# must stay a while is named here, and a found one must lie inside a named one (it may shrink or
# vanish; it may not grow). None is named: the helpers of Project and of the proxy type against
# Protocols (projects/projectview.py, proxy/proxyview.py, proxy/h2view.py).
KNOWN_TYPING_CIRCLES: list[set[str]] = []


def contracts() -> list[dict[str, Any]]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        found: list[dict[str, Any]] = tomllib.load(fh)["tool"]["importlinter"]["contracts"]
    return found


def contract(start: str) -> dict[str, Any]:
    (found,) = [c for c in contracts() if c["name"].startswith(start)]
    return found


def importcycles() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "importcycles", os.path.join(ROOT, "tools", "importcycles.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_contracts_are_kept() -> None:
    proc = subprocess.run([os.path.join(BIN, "lint-imports"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken." in proc.stdout, proc.stdout


def test_the_daemon_contract_names_every_client_module() -> None:
    """The daemon may import of taskmuxctl only its core and root: every other module of the
    client is in the forbidden list, so a new client module cannot slip past it."""
    import taskmuxctl

    children = {f"taskmuxctl.{m.name}" for m in pkgutil.iter_modules(taskmuxctl.__path__)}
    expected = children - {"taskmuxctl.core"}
    listed = set(contract("The daemon imports of taskmuxctl only")["forbidden_modules"])
    assert listed == expected


@pytest.mark.parametrize("argv", [["--json", "daemon", "status"], ["--help"],
                                  ["-p", "shop", "--json", "--no-daemon-start", "status"]])
def test_the_hot_path_contract_covers_what_start_up_imports(env: dict[str, str],
                                                            argv: list[str]) -> None:
    mods = imported_modules(argv, env)
    client = {m for m in mods if m.startswith("taskmuxctl.")
              and not m.startswith("taskmuxctl.core")}
    client -= {"taskmuxctl.commands", "taskmuxctl.service"}  # packages: empty __init__
    assert client, mods
    sources = set(contract("The client's hot path")["source_modules"])
    assert client <= sources, f"add to the hot-path contract: {sorted(client - sources)}"


def _inside_known(found: list[list[str]], known: list[set[str]]) -> list[list[str]]:
    return [comp for comp in found if not any(set(comp) <= k for k in known)]


def test_no_new_import_circle() -> None:
    """Runtime imports (module level or in a function) make no circle at all; counting the
    typing-only ones (under ``TYPE_CHECKING``) too, no circle but the one named above."""
    tool = importcycles()
    sys.path.insert(0, ROOT)
    try:
        edges = tool.import_edges(ROOT)
    finally:
        sys.path.remove(ROOT)
    runtime = tool.cycles(pair for pair, runs in edges.items() if runs)
    everything = tool.cycles(edges)
    assert not runtime, runtime
    assert not _inside_known(everything, KNOWN_TYPING_CIRCLES), everything
    gone = [sorted(k) for k in KNOWN_TYPING_CIRCLES if not any(set(c) <= k for c in everything)]
    assert not gone, f"no longer a circle: delete it from KNOWN_TYPING_CIRCLES: {gone}"


def test_the_circle_finder_finds_a_circle() -> None:
    tool = importcycles()
    assert tool.cycles([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("e", "e")]) == [
        ["a", "b", "c"]]
    assert tool.cycles([("a", "b"), ("b", "c")]) == []
