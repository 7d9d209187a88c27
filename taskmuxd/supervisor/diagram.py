"""The task state diagram (mermaid ``stateDiagram-v2`` text), drawn from the transition table:
the README's copy is checked against it, so the picture cannot drift from the code."""

from __future__ import annotations

from taskmuxd.policy import TRANSITIONS, TaskState, targets_of


def mermaid() -> str:
    """Every transition that changes the state, one arrow per (from, to) pair, labelled with
    the events that take it, in the order of the state and event enums."""
    edges: dict[tuple[TaskState, TaskState], list[str]] = {}
    for (state, kind) in TRANSITIONS:
        for target in targets_of(state, kind):
            if target != state:
                edges.setdefault((state, target), []).append(kind.value)
    rank = {s: i for i, s in enumerate(TaskState)}
    lines = ["stateDiagram-v2", f"    [*] --> {TaskState.STOPPED.value}"]
    for (src, dst) in sorted(edges, key=lambda e: (rank[e[0]], rank[e[1]])):
        lines.append(f"    {src.value} --> {dst.value}: {', '.join(edges[(src, dst)])}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(), end="")
