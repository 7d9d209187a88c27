"""``update [--check] [--to VERSION] [--rollback] [--channel URL] [--auto] [--timeout S]``,
and ``update --mark-bad VERSION [--reason TEXT]``."""

from __future__ import annotations

import sys

from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.result import EXIT_USAGE, CommandError, Result

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any

# One line per step on stderr, for people watching (the JSON on stdout is for programs).
STEP_TEXT = {
    "update_checking": "checking {channel}",
    "update_available": "{reason}",
    "update_reusing": "{version} is already installed in {path}",
    "update_verified": "verified {version}: signature (key {key}), size, sha256",
    "update_installing": "installing into {path}",
    "update_preflight_passed": "preflight passed: {version}'s programs load and report "
                               "{version}",
    "update_switched": "switched current: {previous} -> {current}",
    "update_restarting": "restarting the daemon",
    "update_restarted": "the daemon is restarting onto {version} ({mode})",
    "update_probation": "watching {version}: it must stay up {seconds:g}s",
    "update_confirmed": "the daemon answers as {version}",
    "update_rollback": "switched current back: {previous} -> {current}",
}


class ProgressBar:
    """A download progress bar on a terminal (stderr), redrawn at most ten times a second."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = width * done // max(total, 1)
        self.stream.write(f"\r  downloading [{'#' * filled}{'.' * (width - filled)}] "
                          f"{done * 100 // max(total, 1):3d}%  {done / 1e6:.1f}/"
                          f"{total / 1e6:.1f} MB")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _steps(event: str, details: dict[str, Any]) -> None:
    text = STEP_TEXT.get(event)
    if text is not None:
        try:
            sys.stderr.write("  " + text.format(**details) + "\n")
        except (KeyError, IndexError):
            sys.stderr.write(f"  {event}\n")


def _options(ctx: Context, args: Any) -> Any:
    from taskmuxctl.core.update import DEFAULT_RELEASE_URL, apply
    from taskmuxctl.core.update.keys import trusted_keys

    extra = ctx.setting("trusted_keys", [])
    try:
        keys = trusted_keys(list(extra) if isinstance(extra, list) else [])
    except ValueError as exc:
        raise CommandError(f"trusted_keys in {ctx.paths.config}: {exc}",
                           Code.SETTINGS_INVALID) from None
    release_url = ctx.setting("release_url", DEFAULT_RELEASE_URL)
    opts = apply.Options(channel=apply.channel_for(str(release_url), args.channel, args.to),
                         keys=keys, to=args.to, auto=args.auto)
    probation = ctx.setting("update_probation", opts.probation)
    if isinstance(probation, int | float) and not isinstance(probation, bool) and \
            0 <= probation <= 600:
        opts.probation = float(probation)
    if args.auto and ctx.setting("auto_update", False) == "wave":
        delay = ctx.setting("update_wave_delay", 86400.0)
        ok = isinstance(delay, int | float) and not isinstance(delay, bool) and delay >= 0
        opts.wave_delay = float(delay) if ok else 86400.0
    if args.timeout is not None:
        if args.timeout <= 0:
            raise CommandError("--timeout must be a positive number of seconds", Code.USAGE,
                               exit_code=EXIT_USAGE)
        opts.download_timeout = args.timeout
    if not ctx.as_json and sys.stderr.isatty():
        opts.progress = ProgressBar(sys.stderr)
    return opts


MAX_REASON = 500


def update(ctx: Context, args: Any) -> Result:
    if args.rollback and (args.check or args.to or args.channel or args.auto):
        raise CommandError("--rollback takes no other option", Code.USAGE, exit_code=EXIT_USAGE)
    if args.mark_bad is not None:
        return _mark_bad(ctx, args)
    if args.reason is not None:
        raise CommandError("--reason goes with --mark-bad", Code.USAGE, exit_code=EXIT_USAGE)
    if args.to is not None:
        from taskmuxctl.core.update.release import is_version

        if not is_version(args.to):
            raise CommandError(f"--to {args.to!r} is not a version (like 1.2.3)", Code.USAGE,
                               exit_code=EXIT_USAGE)
    from taskmuxctl.core.update import apply, progress

    if args.auto:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    elif not ctx.as_json:
        progress.add_sink(_steps)
    ctx.paths.ensure()
    progress.add_sink(progress.event_log_sink(ctx.paths.events))
    opts = _options(ctx, args)
    if args.check:
        found = apply.check(ctx.paths, opts)
        code = apply.EXIT_UPDATE_AVAILABLE if found["available"] else 0
        if found["available"]:
            text = (f"update available: {found['current']} -> {found['offered']} "
                    "(`taskmuxctl update` installs it)")
        else:
            text = f"up to date: {found['current']} ({found['reason']})"
        return Result(dict(found), text, code)
    if args.rollback:
        done = apply.rollback(ctx.paths, opts)
        return Result(done, f"rolled back to {done['to']}; pinned there until the next "
                            "`taskmuxctl update`")
    done = apply.update(ctx.paths, opts)
    if done["action"] == "updated":
        text = f"updated {done['from']} -> {done['to']} in {done['seconds']:.1f}s"
        if not done["confirmed"]:
            text += " (the daemon was not running; it starts the new version next time)"
    else:
        text = f"up to date: {done['reason']}"
    return Result(done, text)


def _mark_bad(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.update.release import is_version

    if args.rollback or args.check or args.to or args.channel or args.auto:
        raise CommandError("--mark-bad takes no other option but --reason", Code.USAGE,
                           exit_code=EXIT_USAGE)
    if not is_version(args.mark_bad):
        raise CommandError(f"--mark-bad {args.mark_bad!r} is not a version (like 1.2.3)",
                           Code.USAGE, exit_code=EXIT_USAGE)
    reason = " ".join(str(args.reason or "marked bad by hand").split())[:MAX_REASON]
    from taskmuxctl.core.update import apply, progress

    ctx.paths.ensure()
    progress.add_sink(progress.event_log_sink(ctx.paths.events))
    done = apply.mark_bad(ctx.paths, args.mark_bad, reason)
    return Result(done, f"{args.mark_bad} is marked bad here: auto-update skips it, `update` "
                        f"refuses it (`update --to {args.mark_bad}` still installs it)")
