"""Commands that carry this machine's daemon to another one: ``dial-stdio``."""

from __future__ import annotations

from taskmuxctl.context import Context
from taskmuxctl.core.protocol import PROTOCOL_VERSION, Code
from taskmuxctl.core.result import CommandError, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The exit status when the caller speaks another protocol version (the caller's ssh
# transport recognises it and says which side to update).
EXIT_PROTOCOL = 3


def dial_stdio(ctx: Context, args: Any) -> Result:
    wanted = args.protocol
    if wanted is not None and wanted != PROTOCOL_VERSION:
        raise CommandError(
            f"protocol mismatch: the caller speaks taskmux protocol {wanted}, this machine's "
            f"taskmux speaks {PROTOCOL_VERSION}; update the older of the two taskmux installs",
            Code.DAEMON_PROTOCOL, {"protocol": PROTOCOL_VERSION, "wanted": wanted},
            exit_code=EXIT_PROTOCOL)
    from taskmuxctl.dialstdio import bridge

    client = ctx.daemon()
    sock = client.detach()
    try:
        bridge(sock)
    finally:
        sock.close()
    return Result({}, "")
