"""``taskmuxd``: run the daemon in the foreground (for a terminal or a service manager)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from typing import TYPE_CHECKING

from taskmuxctl import __version__
from taskmuxctl.core import diskspace
from taskmuxctl.core.paths import Paths
from taskmuxd.daemonlock import AlreadyRunning, InstanceLock

if TYPE_CHECKING:
    from taskmuxctl.core.settings import Settings
    from taskmuxd.privileges import Target

EXIT_ALREADY_RUNNING = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG: the unit file stops restarting on it
MAX_CONFIG_BYTES = 1024 * 1024
START_AGAIN = "then start the daemon again"
EXIT_CANT_WRITE = 73  # EX_CANTCREAT: the state directory cannot be written (a service retries)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskmuxd", description="The taskmux daemon: one per machine and user.")
    parser.add_argument("--version", action="version", version=f"taskmuxd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--log-file", help="log to this file (rotated) instead of stderr")
    run.add_argument("--detach", action="store_true",
                     help="run in the background: check the settings and the lock, then fork, "
                     "print the daemon's pid and return")
    run.add_argument("--user", metavar="NAME",
                     help="started as root: bind the proxy and DNS ports, then run as this "
                     "user for good (default: the user who ran sudo)")
    sub.add_parser("version", help="print the version and check that every module loads")
    return parser


def main(argv: list[str] | None = None) -> int:
    # Loading the daemon's modules and models allocates some 75,000 objects that live as long
    # as it does; the collector walked them again and again meanwhile (a tenth of the start's
    # CPU). It stays off until READY, where they are frozen (Daemon.run), or for good in a
    # one-shot `version`.
    gc.disable()
    args = build_parser().parse_args(argv)
    if args.command == "version":
        return _version()
    if args.command != "run":
        build_parser().print_help(sys.stderr)
        return EXIT_USAGE
    return run(log_file=args.log_file, detach=args.detach, user=args.user)


def _version() -> int:
    """Print the version after importing every module of both packages, so a broken install
    fails here (the update's preflight relies on that). ``__main__`` modules are skipped:
    importing one runs its program."""
    import pkgutil

    import taskmuxctl
    import taskmuxd

    for package in (taskmuxd, taskmuxctl):
        for mod in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if mod.name.rsplit(".", 1)[-1] != "__main__":
                __import__(mod.name)
    print(__version__)
    return 0


def run(log_file: str | None = None, detach: bool = False, user: str | None = None) -> int:
    """Check what can be checked at once, take the lock, then serve (``taskmuxd.boot``):
    the control socket answers before the settings model and the subsystems are loaded."""
    from taskmuxd import ownenv

    ownenv.quiet_pydantic()  # before the first pydantic model is built
    from taskmuxctl.core import settingsfile
    from taskmuxctl.core.errors import SettingsError
    from taskmuxd import boot, fdlimit, logs, privacy, privileges
    from taskmuxd.notify import Notifier

    logs.configure("info", None)
    # Before anything opens a descriptor: the proxy's and DNS server's caps are shares of it.
    fdlimit.raise_soft_limit()
    try:
        target = privileges.target_user(user)
    except privileges.PrivilegeError as exc:
        print(f"taskmuxd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    paths = privileges.state_paths(target) if target else Paths.from_env()
    problem = paths.socket_path_problem()
    if problem:
        print(f"taskmuxd: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if target is not None:
        return _run_as_root_for(target, paths, log_file, detach)
    # As the user: the file is read (an unreadable file or bad TOML ends the start here);
    # its values are checked against the model in the second phase, off the way to the first
    # answer, unless detaching: then the caller waits for the full check's verdict.
    settings: Settings | None = None
    try:
        raw = settingsfile.read(paths.config)
        if detach:
            from taskmuxctl.core.settings import validate

            settings = validate(raw, paths.config)
    except SettingsError as exc:
        print(f"taskmuxd: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    lock = InstanceLock(paths)
    if os.geteuid() == 0:
        logging.getLogger("taskmuxd").warning(
            "running as root, so tasks would run as root too: start it with --user NAME "
            "(or through sudo) to run as a user")
    privacy.make_private()
    code = _claim(paths, lock, None)
    if code:
        return code
    privacy.tighten(paths)
    logs.configure("info", log_file)
    logs.set_level(settings.log_level if settings else settingsfile.log_level(raw))
    if detach:
        _detach(log_file)
        if lock.write_pid():
            logging.getLogger("taskmuxd").warning("%s; running without it", lock.pid_problem)
    try:
        return asyncio.run(boot.run(paths, Notifier(), raw, settings, None, lock))
    finally:
        lock.release()


def _run_as_root_for(target: Target, paths: Paths, log_file: str | None, detach: bool) -> int:
    """Started as root for a user: read root's configuration and the user's settings (as
    the user, as hostile input, checked in full) to learn the ports, bind them within what
    root allows, write what needs root, then drop before touching the state directory.
    SECURITY.md."""
    from taskmuxctl.core.errors import SettingsError
    from taskmuxd import boot, listeners, logs, privacy, privileges, rootconfig
    from taskmuxd.notify import Notifier
    from taskmuxd.rootwork import before_drop

    try:
        root = rootconfig.load()
    except rootconfig.RootConfigError as exc:
        print(f"taskmuxd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    problem = _own_code_problem()
    if problem:
        print(f"taskmuxd: refusing to run as root: {problem}, so a user could change "
              "what root runs. Install taskmux where only root can change it and point "
              "the service there, or run a per-user service (`taskmuxctl daemon install "
              "--user-unit` as the user)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = _load_settings(paths, target)
    except SettingsError as exc:
        print(f"taskmuxd: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    lock = InstanceLock(paths)
    bound = listeners.bind_all(settings, root.bind_problem)
    before_drop(settings, paths, bound, target, root)
    try:
        privileges.drop(target)
    except privileges.PrivilegeError as exc:
        print(f"taskmuxd: {exc}", file=sys.stderr)
        bound.close()
        return EXIT_USAGE
    privacy.make_private()
    code = _claim(paths, lock, target.name)
    if code:
        bound.close()
        return code
    privacy.tighten(paths)
    logs.configure("info", log_file)
    logs.set_level(settings.log_level)
    if detach:
        _detach(log_file)
        if lock.write_pid():
            logging.getLogger("taskmuxd").warning("%s; running without it", lock.pid_problem)
    try:
        return asyncio.run(boot.run(paths, Notifier(), {}, settings, bound, None))
    finally:
        bound.close()
        lock.release()


def _own_code_problem() -> str | None:
    """Why this very program is code a user could change (run as root, it must not be)."""
    import taskmuxctl
    import taskmuxd
    from taskmuxctl.core.system.rootfiles import code_problem

    packages = [os.path.dirname(os.path.abspath(m.__file__ or "")) for m in (taskmuxd,
                                                                             taskmuxctl)]
    return code_problem([sys.executable, os.path.abspath(sys.argv[0])], packages)


def _load_settings(paths: Paths, target: Target | None) -> Settings:
    """The settings in ``config.toml``. Started as root for a user, the file is the user's:
    read with the user's identity, never through a link, only a regular file of theirs of at
    most MAX_CONFIG_BYTES (a FIFO or /dev/zero cannot stall or flood root)."""
    from taskmuxctl.core import settings as settings_mod
    from taskmuxctl.core.errors import SettingsError
    from taskmuxctl.core.system import rootfiles
    from taskmuxd import privileges

    if target is None:
        return settings_mod.load(paths.config)
    try:
        with privileges.as_user(target):
            raw = rootfiles.read_user_file(paths.config, MAX_CONFIG_BYTES, (target.uid, 0))
    except FileNotFoundError:
        return settings_mod.Settings()
    except OSError as exc:
        raise SettingsError(f"{paths.config}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{paths.config}: not UTF-8 text") from None
    return settings_mod.parse(text, paths.config)


def _claim(paths: Paths, lock: InstanceLock, user: str | None) -> int:
    """Create the state directory and take the instance lock; an exit code on failure."""
    try:
        paths.ensure()
    except PermissionError as exc:
        who = user or "the daemon's user"
        print(f"taskmuxd: cannot use the state directory {paths.home}: {exc.strerror}; it "
              f"must belong to {who} (`sudo chown -R {who}: {paths.home}`)", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"taskmuxd: {diskspace.describe(exc, paths.home, START_AGAIN)}", file=sys.stderr)
        return EXIT_CANT_WRITE
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"taskmuxd: {exc}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    except OSError as exc:
        print(f"taskmuxd: {diskspace.describe(exc, paths.lock_file, START_AGAIN)}",
              file=sys.stderr)
        return EXIT_CANT_WRITE
    if lock.pid_problem:  # a full disk: run all the same (the pid file is informational)
        print(f"taskmuxd: {lock.pid_problem}; running without it", file=sys.stderr)
    return 0


def _detach(log_file: str | None) -> None:
    """Fork into the background. The parent prints the child's pid and exits at once (the
    caller reaps it, so the daemon is nobody's child); the child, holding the inherited lock,
    starts a new session, lets go of the caller's pipes and carries on."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    out = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if log_file else devnull
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in {devnull, out}:
        os.close(fd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
