"""The one dependency order: start goes forward through it, stop backward, restore forward,
and ``taskmux check`` prints it. Pure functions of ``name -> {dependency: condition}``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def levels(deps: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tasks in levels: each depends only on earlier ones. Linear in tasks plus dependencies;
    a cycle (the config refuses one) raises ValueError."""
    needs = {n: {d for d in ds if d in deps} for n, ds in deps.items()}
    waiting = {n: len(ds) for n, ds in needs.items()}
    dependents: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in needs.items():
        for d in ds:
            dependents[d].append(n)
    level = sorted(n for n, count in waiting.items() if count == 0)
    out: list[list[str]] = []
    placed = 0
    while level:
        out.append(level)
        placed += len(level)
        following = []
        for n in level:
            for d in dependents[n]:
                waiting[d] -= 1
                if waiting[d] == 0:
                    following.append(d)
        level = sorted(following)
    if placed != len(deps):
        raise ValueError(f"dependency cycle among {sorted(n for n, c in waiting.items() if c)}")
    return out


def within(order: list[list[str]], names: Iterable[str]) -> list[list[str]]:
    """``order`` kept to ``names``, empty levels dropped."""
    wanted = set(names)
    return [lv for lv in ([n for n in level if n in wanted] for level in order) if lv]


def stop_levels(order: list[list[str]], names: Iterable[str]) -> list[list[str]]:
    """Dependents before what they depend on: the start order backward."""
    return list(reversed(within(order, names)))


def closure(deps: Mapping[str, Iterable[str]], names: Iterable[str]) -> set[str]:
    """``names`` and everything they depend on, transitively."""
    out: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in out or n not in deps:
            continue
        out.add(n)
        todo.extend(deps[n])
    return out


def restarted_with(restarts: Mapping[str, Iterable[str]], names: Iterable[str]) -> dict[str, str]:
    """The dependents a restart of ``names`` restarts too: those whose ``depends_on`` entry on
    a restarted task says ``restart = true``, transitively. ``restarts`` maps a task to the
    dependencies it restarts with; the answer maps each dependent to the task that brought it
    in."""
    by_dep: dict[str, list[str]] = {}
    for n, ds in restarts.items():
        for d in ds:
            by_dep.setdefault(d, []).append(n)
    start = set(names)
    out: dict[str, str] = {}
    todo = sorted(start)
    while todo:
        d = todo.pop(0)
        for n in sorted(by_dep.get(d, [])):
            if n not in start and n not in out:
                out[n] = d
                todo.append(n)
    return out
