"""``taskmuxctl`` (also installed as ``taskmux``): the thin, fast client.

``main`` parses argv against the table in ``spec``, runs the command's handler, and renders
what it returns; it returns the exit status. Nothing beyond the standard library is imported
here: a handler imports what it needs when it runs.
"""

from __future__ import annotations

import os
import sys

from taskmuxctl.core.protocol import Code, RpcError
from taskmuxctl.core.result import EXIT_USAGE, CommandError, render, render_error
from taskmuxctl.parse import fast, split_globals


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name in ("taskmux", "taskmuxctl") else "taskmux"


def main(argv: list[str] | None = None) -> int:
    prog = _prog()
    if "_ARGCOMPLETE" in os.environ:  # pragma: no cover - exercised through the shell
        from taskmuxctl.commands.misc import autocomplete

        autocomplete(prog)
        return 0
    words = sys.argv[1:] if argv is None else list(argv)
    host: str | None = None
    if "--host" in words or any(w.startswith("--host=") for w in words) \
            or os.environ.get("TASKMUX_HOST"):
        from taskmuxctl.remote import split_host

        words, host = split_host(words)
    tokens, flags = split_globals(words)
    as_json = "--json" in flags
    if not tokens and not flags and sys.stdin.isatty() and sys.stdout.isatty():
        tokens = ["top"]  # bare `taskmux` on a terminal: the live view
    parsed = fast(tokens)
    if parsed is None:
        from taskmuxctl.parse import UsageError, slow

        try:
            parsed = slow(tokens, prog)
        except UsageError as exc:
            if as_json:
                return render_error(CommandError(str(exc), Code.USAGE, exit_code=EXIT_USAGE),
                                    True, prog)
            sys.stderr.write(f"{exc.usage.rstrip()}\n{prog}: error: {exc}\n")
            return EXIT_USAGE
    cmd, args = parsed
    if host is None and os.environ.get("TASKMUX_HOST") and cmd.path != ("dial-stdio",):
        host = os.environ["TASKMUX_HOST"]
    if host is not None:
        from taskmuxctl.remote_cli import run_remote

        done = run_remote(cmd, args, host, tokens, flags, prog)
        if done is not None:
            return done

    from taskmuxctl.context import Context
    from taskmuxctl.core.noplugins import skip_plugin_search
    from taskmuxctl.core.paths import Paths

    skip_plugin_search()

    paths = Paths.from_env()
    paths.host = host
    ctx = Context(paths, as_json, "--no-daemon-start" in flags, prog)
    module, func = cmd.handler.split(":")
    handler = getattr(__import__(module, fromlist=[func]), func)
    try:
        result = handler(ctx, args)
    except RpcError as exc:
        return render_error(exc, as_json, prog)
    except OSError as exc:
        from taskmuxctl.core import diskspace

        if not diskspace.is_full(exc):
            raise
        return render_error(CommandError(diskspace.describe(exc, then=diskspace.AGAIN),
                                         Code.DISK_FULL,
                                         {"path": exc.filename}), as_json, prog)
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()
    return render(result, as_json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
