"""Lifecycle hooks: shell commands run around start and stop, off the event loop, with a
deadline. Order: global before → task before → the action → task after → global after."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from typing import Literal

from taskmuxctl.core.errors import TaskError
from taskmuxctl.core.protocol import Code
from taskmuxd import privacy

HOOK_TIMEOUT = 120.0
OUTPUT_LIMIT = 8000


class HookFailed(TaskError):
    default_code = Code.HOOK_FAILED


# The hooks of taskmux.toml (``config.Hooks``' fields).
HookName = Literal["before_start", "after_start", "before_stop", "after_stop"]


@dataclass(frozen=True)
class HookRun:
    which: HookName
    scope: str  # "project" or the task's name
    command: str


async def run_hook(hook: HookRun, env: dict[str, str], cwd: str,
                   timeout: float = HOOK_TIMEOUT) -> str:
    """Run one hook; return its output. Raise HookFailed (with the output) on failure."""
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", hook.command, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True, umask=privacy.child_umask())
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise HookFailed(f"{hook.which} hook of {hook.scope} did not finish within "
                         f"{timeout:.0f}s: {hook.command}",
                         {"hook": hook.which, "scope": hook.scope, "timeout": timeout}) from None
    text = out.decode(errors="replace")[-OUTPUT_LIMIT:]
    if proc.returncode != 0:
        raise HookFailed(
            f"{hook.which} hook of {hook.scope} failed (exit {proc.returncode}): "
            f"{hook.command}\n{text.rstrip()}",
            {"hook": hook.which, "scope": hook.scope, "exit_code": proc.returncode,
             "output": text})
    return text
