"""The part of ``main`` that sends a command to ``--host``: refuse it, run it whole over
ssh, or let it go on to its handler (whose daemon connection then goes through ssh)."""

from __future__ import annotations

import os

from taskmuxctl.core.protocol import Code, RpcError
from taskmuxctl.core.result import EXIT_USAGE, CommandError, render_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.spec import Cmd


def run_remote(cmd: Cmd, args: Any, host: str, tokens: list[str], flags: set[str],
               prog: str) -> int | None:
    """An exit status when the command is done (refused or run over ssh); None when its
    handler should run here, talking to the remote daemon."""
    from taskmuxctl import remote
    from taskmuxctl.core import sshchannel
    from taskmuxctl.core.paths import Paths

    as_json = "--json" in flags
    try:
        target = sshchannel.parse_target(host)
        why = remote.refusal(cmd, args, host)
        if why is not None:
            raise CommandError(why, Code.USAGE, {"host": host, "command": " ".join(cmd.path)},
                               exit_code=EXIT_USAGE)
        if "--no-daemon-start" in flags:
            os.environ["TASKMUX_NO_DAEMON_START"] = "1"  # read by the ssh channel
        if not remote.over_ssh(cmd, args):
            return None
        words = [*sorted(flags), *tokens]
        paths = Paths.from_env()
        return sshchannel.run(paths, target, words, tty=cmd.path in remote.WITH_TERMINAL)
    except RpcError as exc:
        return render_error(exc, as_json, prog)
    except KeyboardInterrupt:
        return 130
