"""``doctor``: check the installation and say how to fix what is wrong."""

from __future__ import annotations

from taskmuxctl.context import Context
from taskmuxctl.core.result import EXIT_FAILURE, EXIT_OK, Result

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any

LABELS = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}


def doctor(ctx: Context, args: Any) -> Result:
    from taskmuxctl.doctor.checks import FAIL, WARN, run_checks
    from taskmuxctl.doctor.gather import gather

    checks = run_checks(gather(ctx.paths))
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    lines = []
    for check in checks:
        lines.append(f"{LABELS[check.status]:<5} {check.name:<14} {check.summary}")
        if check.hint and check.status in (FAIL, WARN):
            lines.append(f"{'':<20}fix: {check.hint}")
    verdict = "everything checked is fine" if not failed else \
        f"{failed} check{'s' if failed != 1 else ''} failed"
    if warned:
        verdict += f", {warned} warning{'s' if warned != 1 else ''}"
    lines.append(verdict)
    data = {"healthy": not failed, "failed": failed, "warnings": warned,
            "checks": [c.to_dict() for c in checks]}
    return Result(data, "\n".join(lines), EXIT_FAILURE if failed else EXIT_OK)
