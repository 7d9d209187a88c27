"""``daemon start|stop|restart|status|run``."""

from __future__ import annotations

import os
import sys

from taskmuxctl.context import Context
from taskmuxctl.core import humanize
from taskmuxctl.core.fsutil import read_pid
from taskmuxctl.core.protocol import Code, Method
from taskmuxctl.core.result import Result
from taskmuxctl.core.rpcclient import Client, DaemonUnavailable

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any

# LSB "status" exit codes.
LSB_RUNNING = 0
LSB_DEAD_PIDFILE = 1
LSB_NOT_RUNNING = 3
LSB_UNKNOWN = 4


def _service(ctx: Context) -> dict[str, Any] | None:
    from taskmuxctl.service.control import status as service_status

    return service_status(ctx.paths)


def _with_service(result: Result, service: dict[str, Any] | None) -> Result:
    if service is not None:
        result.data["service"] = service
        result.text = f"{result.text}\n  {'service:':<9} {service['summary']}"
        if service.get("root_code_problem"):
            result.text += (f"\n  {'unsafe:':<9} root runs code a user could change "
                            f"({service['root_code_problem']}); see taskmux doctor")
    return result


def status(ctx: Context, args: Any) -> Result:
    client = Client(ctx.paths, timeout=5.0)
    try:
        with client:
            info = client.call(Method.DAEMON_STATUS)
    except DaemonUnavailable as exc:
        if ctx.died_answering(client):  # killed while its socket still accepted: not running
            exc = DaemonUnavailable(Code.DAEMON_NOT_RUNNING, "stopped", exc.message)
        return _with_service(_not_answering(ctx, exc), _service(ctx))
    lines = [
        f"taskmuxd is running (pid {info['pid']}, version {info['version']}, "
        f"up {humanize.duration(info['uptime'])})",
        f"  socket:   {info['socket']}",
        f"  projects: {info['projects']} registered",
    ]
    for key, section in info.items():
        if isinstance(section, dict) and section.get("summary"):
            lines.append(f"  {key + ':':<9} {section['summary']}")
    return _with_service(Result({"running": True, **info}, "\n".join(lines), LSB_RUNNING),
                         _service(ctx))


def _not_answering(ctx: Context, exc: DaemonUnavailable) -> Result:
    pid = read_pid(ctx.paths.pid_file)
    alive = pid is not None and _exists(pid)
    data: dict[str, Any] = {"running": False, "reason": exc.reason, "socket": ctx.paths.socket,
                            "pid": pid if alive else None}
    if exc.code == Code.DAEMON_NOT_RUNNING and not alive:
        if pid is not None:
            data["stale_pid"] = pid
            text = (f"taskmuxd is not running (it died: pid file {ctx.paths.pid_file} names "
                    f"pid {pid}, which is gone); see {ctx.paths.daemon_log}")
            return Result(data, text, LSB_DEAD_PIDFILE)
        return Result(data, "taskmuxd is not running", LSB_NOT_RUNNING)
    data["running"] = alive
    data["error"] = exc.message
    return Result(data, f"taskmuxd is not answering: {exc.message}", LSB_UNKNOWN)


def _exists(pid: int) -> bool:
    from taskmuxctl.core.daemonctl import alive

    return alive(pid)


def _via_service(data: dict[str, Any], text: str) -> Result:
    ran = data.pop("ran", None) or []
    data["via"] = data.get("manager")
    return Result(data, "\n".join([*(f"ran {cmd}" for cmd in ran), text]))


def start(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.daemonctl import ping, start_daemon
    from taskmuxctl.service import control

    managed = control.start(ctx.paths)
    if managed is not None:
        word = "is already running" if managed["action"] == "already_running" else "started"
        return _via_service(managed, f"taskmuxd {word} under {managed['unit']} "
                                     f"(pid {managed['pid']})")
    info = ping(ctx.paths)
    if info:
        return Result({"pid": info["pid"], "action": "already_running"},
                      f"taskmuxd is already running (pid {info['pid']})")
    pid = start_daemon(ctx.paths)
    return Result({"pid": pid, "action": "started", "log": ctx.paths.daemon_log},
                  f"taskmuxd started (pid {pid}); log: {ctx.paths.daemon_log}")


def stop(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.daemonctl import stop_daemon
    from taskmuxctl.service import control

    managed = control.stop(ctx.paths)
    if managed is not None:
        if managed["action"] == "not_running":
            return _via_service(managed, f"taskmuxd is not running ({managed['unit']})")
        return _via_service(managed, f"taskmuxd stopped ({managed['unit']}, pid "
                                     f"{managed['pid']}); tasks keep running in tmux")
    pid = stop_daemon(ctx.paths)
    if pid is None:
        return Result({"pid": None, "action": "not_running"}, "taskmuxd is not running")
    return Result({"pid": pid, "action": "stopped"},
                  f"taskmuxd stopped (pid {pid}); tasks keep running in tmux")


def restart(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.daemonctl import start_daemon, stop_daemon
    from taskmuxctl.service import control

    managed = control.restart(ctx.paths)
    if managed is not None:
        return _via_service(managed, f"taskmuxd restarted under {managed['unit']} "
                                     f"(pid {managed['pid']})")
    old = stop_daemon(ctx.paths)
    pid = start_daemon(ctx.paths)
    return Result({"pid": pid, "previous_pid": old, "action": "restarted"},
                  f"taskmuxd restarted (pid {pid})")


def run(ctx: Context, args: Any) -> Result:
    argv = [sys.executable, "-m", "taskmuxd", "run"]
    if args.log_file:
        argv += ["--log-file", args.log_file]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    raise AssertionError("unreachable")  # pragma: no cover
