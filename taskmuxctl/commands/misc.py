"""``version`` and ``completion``."""

from __future__ import annotations

from taskmuxctl import __version__
from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Method, RpcError
from taskmuxctl.core.result import Result
from taskmuxctl.core.rpcclient import Client, DaemonUnavailable

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any


def version(ctx: Context, args: Any) -> Result:
    daemon: str | None = None
    try:
        with Client(ctx.paths, timeout=2.0) as client:
            daemon = client.call(Method.DAEMON_VERSION)["version"]
    except (DaemonUnavailable, RpcError):
        if ctx.paths.host:  # asked about another machine: say why there is no answer
            raise

    text = f"taskmuxctl {__version__}"
    if daemon is not None:
        text += f"\ntaskmuxd {daemon}" + ("" if daemon == __version__ else "  (differs: restart "
                                           "the daemon with `taskmuxctl daemon restart`)")
    return Result({"version": __version__, "daemon_version": daemon}, text)


SHELL_RC = {"bash": "~/.bashrc", "zsh": "~/.zshrc", "fish": "~/.config/fish/config.fish"}


def completion(ctx: Context, args: Any) -> Result:
    from argcomplete.shell_integration import shellcode

    code = shellcode(["taskmuxctl", "taskmux"], shell=args.shell)
    rc = SHELL_RC[args.shell]
    if args.shell == "fish":
        how = f"taskmuxctl completion fish | source   # add this line to {rc}"
    else:
        how = f'eval "$(taskmuxctl completion {args.shell})"   # add this line to {rc}'
    return Result({"shell": args.shell, "code": code, "rc_file": rc, "usage": how},
                  f"# {how}\n{code}")


def autocomplete(prog: str) -> None:
    import argcomplete

    from taskmuxctl.parse import build_parser

    argcomplete.autocomplete(build_parser(prog))
