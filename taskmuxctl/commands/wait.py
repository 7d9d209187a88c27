"""``taskmux wait``: block until tasks meet a condition, for scripts, CI and agents.

It polls the project's status (a few times a second; each call is cheap) and judges each task
with ``judge``: met, not yet, or never without someone acting (a ``fatal`` task, one stopped,
a one-shot that failed). It exits 0 once every task meets the condition, and non-zero with the
reason when one cannot or the timeout passes.
"""

from __future__ import annotations

import time

from taskmuxctl.core.protocol import Code, Method
from taskmuxctl.core.result import CommandError, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.context import Context

POLL = 0.05  # seconds between looks at the status (one call costs about a millisecond)
EXIT_TIMEOUT = 124  # as timeout(1)


def _done(t: dict[str, Any]) -> bool:
    """Ended with a success: a completed one-shot, or any task that exited 0 by itself."""
    if t.get("completed"):
        return True
    last = t.get("last_exit") or {}
    return t.get("state") == "exited" and last.get("signal") is None and last.get("code") == 0


def judge(t: dict[str, Any], condition: str) -> tuple[bool | None, str]:
    """(True, _) met; (None, why) not yet; (False, why) it cannot be without someone acting."""
    state = t.get("state")
    if condition == "completed":
        if _done(t):
            return True, "completed"
    elif t.get("completed"):  # a one-shot that is done counts as up
        return True, "completed"
    elif state == "running" and (condition == "running" or t.get("healthy") is True):
        return True, condition
    if state == "fatal":
        return False, "is fatal (it kept failing); see `taskmux logs " + str(t["name"]) + "`"
    if state == "stopped" and not t.get("auto_start", True) and not t.get("manually_stopped"):
        return False, "is stopped and not auto_start: start it first"
    if state == "stopped" and t.get("manually_stopped"):
        return False, "was stopped by you: start it first"
    if state == "exited":
        return False, f"exited ({_exit_text(t)}) and its restart_policy does not restart it"
    if state == "running" and t.get("healthy") is False:
        return None, "is unhealthy: " + str(t.get("last_health_failure") or "probe failing")
    waiting = t.get("waiting_for") or []
    if waiting:
        return None, f"is {state}, waiting for {', '.join(waiting)}"
    return None, f"is {state}"


def _exit_text(t: dict[str, Any]) -> str:
    last = t.get("last_exit") or {}
    if last.get("signal") is not None:
        return f"signal {last['signal']}"
    return f"exit {last.get('code')}"


def _condition(t: dict[str, Any], condition: str) -> str:
    """``ready`` (what ``start --wait`` waits for): a one-shot completed, any other task
    healthy (running, when it has no probe)."""
    if condition != "ready":
        return condition
    return "completed" if t.get("type") == "oneshot" else "healthy"


def wait(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.whichproject import project_params

    return wait_until(ctx, project_params(getattr(args, "project", None)),
                      list(args.tasks or []), args.condition, args.timeout)


def wait_until(ctx: Context, params: dict[str, Any], names: list[str], condition: str,
               timeout: float) -> Result:
    """Block until every task of ``names`` (default: the auto_start ones) meets
    ``condition`` (healthy, running, completed, or ready: see ``_condition``); a
    CommandError with the reason when one cannot, or when ``timeout`` seconds pass first
    (exit 124). ``start --wait`` uses it too."""
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        out = ctx.call(Method.PROJECT_STATUS, params)
        tasks = {t["name"]: t for t in out["tasks"]}
        unknown = [n for n in names if n not in tasks]
        if unknown:
            raise CommandError(f"no task {', '.join(unknown)} in {out['project']}; tasks: "
                               f"{', '.join(sorted(tasks)) or '(none)'}", Code.TASK_NOT_FOUND,
                               {"tasks": unknown})
        wanted = names or sorted(n for n, t in tasks.items() if t.get("auto_start", True)
                                 and not t.get("manually_stopped"))
        verdicts = {n: judge(tasks[n], _condition(tasks[n], condition)) for n in wanted}
        for n, (ok, _why) in list(verdicts.items()):
            down = [d for d in tasks[n].get("waiting_for") or []
                    if tasks.get(d, {}).get("state") == "fatal"]
            if ok is None and down:
                verdicts[n] = (False, f"waits for {', '.join(down)}, which is fatal")
        failed = {n: why for n, (ok, why) in verdicts.items() if ok is False}
        if failed:
            lines = "; ".join(f"{n} {why}" for n, why in sorted(failed.items()))
            raise CommandError(f"cannot be {condition}: {lines}", Code.TASK_FAILED,
                               {"condition": condition, "failed": failed})
        pending = {n: why for n, (ok, why) in verdicts.items() if ok is None}
        if not pending:
            return Result({"project": out["project"], "condition": condition,
                           "tasks": wanted},
                          f"{', '.join(wanted) or 'no tasks'}: {condition}")
        if time.monotonic() >= deadline:
            lines = "; ".join(f"{n} {why}" for n, why in sorted(pending.items()))
            raise CommandError(f"not {condition} after {timeout:g}s: {lines}",
                               Code.WAIT_TIMEOUT, {"condition": condition,
                                                   "pending": pending},
                               exit_code=EXIT_TIMEOUT)
        time.sleep(min(POLL, max(deadline - time.monotonic(), 0.0)))
