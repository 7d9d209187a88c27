"""Import circles among taskmux's modules, found from grimp's import graph.

An import counts as *typing* when every import of that pair sits under ``if TYPE_CHECKING:``
(it never runs); every other import (at module level or inside a function) is *runtime*.
``python tools/importcycles.py`` prints the strongly connected components of both graphs
(runtime only, and runtime plus typing); ``tests/test_layers.py`` asserts there are none.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterable

import grimp

PACKAGES = ("taskmuxd", "taskmuxctl")


def _typing_lines(path: str) -> set[int]:
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def _source(root: str, module: str) -> str:
    base = os.path.join(root, *module.split("."))
    return base + ".py" if os.path.isfile(base + ".py") else os.path.join(base, "__init__.py")


def import_edges(root: str = ".") -> dict[tuple[str, str], bool]:
    """Every (importer, imported) pair of modules → True when some import of it runs."""
    sys.path.insert(0, os.path.abspath(root))
    try:
        graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    finally:
        sys.path.pop(0)
    typing_cache: dict[str, set[int]] = {}
    edges = {}
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            details = graph.get_import_details(importer=importer, imported=imported)
            if importer not in typing_cache:
                typing_cache[importer] = _typing_lines(_source(root, importer))
            lines = typing_cache[importer]
            edges[(importer, imported)] = any(d["line_number"] not in lines for d in details)
    return edges


def cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    succ: dict[str, list[str]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(succ):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            nexts = succ[node]
            if i < len(nexts):
                work.append((node, i + 1))
                nxt = nexts[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(found)


def main() -> int:
    edges = import_edges()
    runtime = cycles(pair for pair, runs in edges.items() if runs)
    everything = cycles(edges)
    print(f"{len(edges)} imports between modules, "
          f"{sum(1 for runs in edges.values() if not runs)} of them for typing only")
    print(f"circles through runtime imports: {len(runtime)}")
    for comp in runtime:
        print("  " + " ↔ ".join(comp))
    print(f"circles counting typing-only imports too: {len(everything)}")
    for comp in everything:
        print("  " + " ↔ ".join(comp))
    return 1 if everything else 0


if __name__ == "__main__":
    sys.exit(main())
