"""The daemon's subsystems get the narrow things they use, never the ``Daemon``: no module but
the start (``taskmuxd.boot``) imports ``taskmuxd.daemon``, and none of the daemon's parts sits
in an import circle. Every import counts, at the top, under ``TYPE_CHECKING`` or inside a
function: a circle broken only by one of those is still a circle."""

from __future__ import annotations

import ast
import functools
import os

from tests.helpers import REPO

PACKAGES = ("taskmuxd", "taskmuxctl")
# The daemon's wiring and what it wires: none of these may be in a circle.
NO_CIRCLE = ("taskmuxd.daemon", "taskmuxd.boot", "taskmuxd.handlers.daemon",
             "taskmuxd.handlers.network", "taskmuxd.handlers.projects", "taskmuxd.projects.panes",
             "taskmuxd.projects.manager", "taskmuxd.updater", "taskmuxd.diskwatch",
             "taskmuxd.dashboard.app", "taskmuxd.dashboard.site", "taskmuxd.eventstream",
             "taskmuxd.sampler", "taskmuxd.daemonstatus", "taskmuxd.rpc.dispatch",
             "taskmuxd.rpc.early", "taskmuxd.rpc.registration", "taskmuxd.rpc.params",
             "taskmuxd.rpc.ctlsocket", "taskmuxd.daemonlock", "taskmuxctl.core.pidlock",
             "taskmuxctl.core.protocol", "taskmuxctl.core.rpctypes", "taskmuxctl.mcp.stdioserver",
             # Project and the modules carved out of it (they see it as a ProjectView).
             "taskmuxd.projects.project", "taskmuxd.projects.projectview",
             "taskmuxd.projects.task", "taskmuxd.projects.taskstart", "taskmuxd.projects.stopping",
             "taskmuxd.projects.readiness", "taskmuxd.projects.probeactions",
             "taskmuxd.projects.taskport")


def _modules(root: str) -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(root, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    mod = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                    found[mod.removesuffix(".__init__")] = path
    return found


@functools.cache
def import_graph(root: str = REPO) -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its text."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for name in targets:
                while name and name not in mods:
                    name = name.rpartition(".")[0]  # noqa: PLW2901 - the nearest module
                if name and name != mod:
                    graph[mod].add(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root, first in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(first)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(component)
    return out


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [{"a", "b", "c"}]


def test_only_the_start_imports_the_daemon() -> None:
    graph = import_graph()
    importers = sorted(m for m, targets in graph.items() if "taskmuxd.daemon" in targets)
    assert importers == ["taskmuxd.boot"]


def test_no_part_of_the_daemons_wiring_is_in_an_import_circle() -> None:
    graph = import_graph()
    assert set(NO_CIRCLE) <= set(graph), sorted(set(NO_CIRCLE) - set(graph))
    caught = [sorted(c) for c in circles(graph) if c & set(NO_CIRCLE)]
    assert not caught, caught
