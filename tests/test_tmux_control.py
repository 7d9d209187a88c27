"""The tmux door's control-mode connection: what tmux writes parsed into typed replies and
notifications, arguments that arrive as they were sent, commands without a tmux process per
command, and the server killed under it (heard at once, then connected again)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from taskmuxd.tmux import (
    DeadPane,
    PanesDead,
    ServerGone,
    Tmux,
    TmuxError,
    TmuxEvent,
    WindowClosed,
    parse_dead,
)
from taskmuxd.tmuxcontrol import (
    Exit,
    Notification,
    Parser,
    Reply,
    SessionsChanged,
    SubscriptionChanged,
    WindowClose,
    command_line,
    quote,
)
from tests.helpers import WAIT_FLOOR, DaemonProcess, call, run_json
from tests.projects import status, write_project

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def test_blocks_and_notifications_are_typed() -> None:
    p = Parser()
    lines = ["%begin 1 10 0", "%end 1 10 0",  # the attach command itself
             "%sessions-changed",
             "%begin 2 11 1", "p1\x1f@0", "%end 1 11 1", "%end 2 11 0", "%end 2 11 1",
             "%begin 3 12 1", "can't find session: nope", "%error 3 12 1",
             "%window-close @4", "%unlinked-window-close @5", "%session-changed $1 p1",
             "%exit detached"]
    events = [e for e in (p.feed(line) for line in lines) if e is not None]
    assert events == [
        Reply(True, (), mine=False),
        SessionsChanged(),
        # Lines that look like the end of another block are output of this one.
        Reply(True, ("p1\x1f@0", "%end 1 11 1", "%end 2 11 0")),
        Reply(False, ("can't find session: nope",)),
        WindowClose("@4"), WindowClose("@5"), Notification("session-changed", ("$1", "p1")),
        Exit("detached")]


def test_subscription_changes_are_typed_with_the_value_whole() -> None:
    p = Parser()
    assert p.feed("%subscription-changed taskmux-dead $0 - - - : %2.@2.18108. %5.@4.9.1 ") \
        == SubscriptionChanged("taskmux-dead", "$0", "-", "-", "-", "%2.@2.18108. %5.@4.9.1 ")
    # Fields tmux may add before the colon are skipped; a value keeps its own " : ".
    assert p.feed("%subscription-changed n $1 @2 0 %3 future : a : b") == \
        SubscriptionChanged("n", "$1", "@2", "0", "%3", "a : b")
    assert p.feed("%subscription-changed n $1 - - - :") == \
        SubscriptionChanged("n", "$1", "-", "-", "-", "")
    assert p.feed("%subscription-changed broken") == \
        Notification("subscription-changed", ("broken",))


def test_dead_panes_are_parsed_and_bounded() -> None:
    assert parse_dead("%2.@2.18108. %5.@4.9.1 junk %6.@5.x.-1 ") == PanesDead((
        DeadPane("%2", "@2", 18108, None), DeadPane("%5", "@4", 9, 1),
        DeadPane("%6", "@5", None, -1)))
    assert parse_dead("") == PanesDead(())
    assert len(parse_dead("%1.@1.2.0 " * 20_000).panes) == 10_000


def test_every_argument_is_quoted_with_tmux_escapes() -> None:
    assert quote('a "b" $c \\d') == '"a \\"b\\" \\$c \\\\d"'
    assert quote("x\ny\x1f") == '"x\\ny\\037"'
    assert command_line([["new-window", "-n", "a b"], ["set-option", "x", "y;z"]]) == \
        '"new-window" "-n" "a b" ; "set-option" "x" "y;z"'


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


async def tmux_cli(socket: str, *args: str) -> int:
    done = await asyncio.to_thread(subprocess.run, ["tmux", "-L", socket, *args],
                                   capture_output=True)
    return done.returncode


async def until(cond: Callable[[], bool], timeout: float = WAIT_FLOOR) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true in time")


@needs_tmux
def test_commands_go_over_one_connection(tmux_socket: str) -> None:
    async def main() -> None:
        t = Tmux(tmux_socket)
        await t.start()
        assert not t.connected  # no server yet, and connecting did not start one
        assert await tmux_cli(tmux_socket, "has-session") != 0
        # The first session is made by a process; the connection follows at once.
        await t.run(["new-session", "-d", "-s", "one", "sleep 600"])
        assert await t.connect()
        before = t.processes
        odd = "it's \"q\" $HOME \\ ; {x} ~ %1 \x1f end"
        assert await t.run(["display-message", "-p", odd]) == odd + "\n"
        made = await t.run(["new-window", "-d", "-a", "-t", "=one:{end}", "-P", "-F",
                            "#{window_id}", "sleep 600"],
                           ["set-option", "-w", "-t", "=one:{end}", "@taskmux_task", "w"])
        assert made is not None and made.startswith("@")
        windows = await t.windows("one")
        assert [w.task for w in windows] == ["", "w"]
        assert await t.has_session("one") and not await t.has_session("nope")
        with pytest.raises(TmuxError, match="can't find"):
            await t.run(["kill-window", "-t", "=nope:1"])
        # A failed command ends its line: the one after it did not run.
        with pytest.raises(TmuxError):
            await t.run(["kill-window", "-t", "=nope:1"], ["kill-session", "-t", "=one"])
        assert await t.has_session("one")
        assert t.processes == before  # none of the above ran a tmux process
        await t.close()

    run(main())


@needs_tmux
def test_the_server_killed_under_it_is_heard_at_once_and_reconnected(tmux_socket: str) -> None:
    async def main() -> None:
        t = Tmux(tmux_socket)
        changed = asyncio.Event()
        t.on_event = lambda _event: changed.set()
        await t.start()
        await t.run(["new-session", "-d", "-s", "one", "sleep 600"])
        assert await t.connect()
        changed.clear()
        await t.run(["new-session", "-d", "-s", "two", "sleep 600"])
        await asyncio.wait_for(changed.wait(), 10)  # %sessions-changed
        changed.clear()
        assert await tmux_cli(tmux_socket, "kill-server") == 0
        await asyncio.wait_for(changed.wait(), 10)  # heard at once...
        await until(lambda: not t.connected)  # ...and the connection is over
        assert not await t.has_session("one") and await t.windows() == []
        await t.run(["new-session", "-d", "-s", "three", "sleep 600"])
        assert await t.connect() and t.connects == 2
        before = t.processes
        assert await t.has_session("three")
        assert t.processes == before
        await t.close()
        assert not t.connected
        # Closing the connection detached it: the server and its session are untouched.
        assert await tmux_cli(tmux_socket, "has-session", "-t", "=three") == 0

    run(main())


async def tmux_out(socket: str, *args: str) -> str:
    done = await asyncio.to_thread(subprocess.run, ["tmux", "-L", socket, *args],
                                   capture_output=True, text=True, check=True)
    return done.stdout.strip()


@needs_tmux
def test_notifications_become_supervision_events(tmux_socket: str) -> None:
    """A window closed from outside, a pane whose process died, the server killed by its pid:
    each arrives typed, and the connection comes back (subscribed again) on a new server."""
    async def main() -> None:
        t = Tmux(tmux_socket)
        events: list[TmuxEvent] = []
        t.on_event = events.append
        await t.start()
        await t.run(["new-session", "-d", "-s", "one", "sleep 600"])
        await t.run(["set-option", "-g", "remain-on-exit", "on"])
        assert await t.connect()
        wid = (await t.run(["new-window", "-d", "-t", "=one:", "-P", "-F", "#{window_id}",
                            "sleep 600"]) or "").strip()
        assert await tmux_cli(tmux_socket, "kill-window", "-t", wid) == 0
        await until(lambda: WindowClosed(wid) in events)

        # A pane's process dies: the dead-pane subscription lists it, with its pid.
        other = (await t.run(["new-window", "-d", "-t", "=one:", "-P", "-F",
                              "#{window_id} #{pane_id} #{pane_pid}", "sleep 600"]) or "")
        wid2, pane, pid = other.split()
        os.kill(int(pid), signal.SIGKILL)
        dead = DeadPane(pane, wid2, int(pid), None)
        await until(lambda: any(isinstance(e, PanesDead) and dead in e.panes for e in events))

        # The server killed under the connection (by its pid): heard at once.
        server = int(await tmux_out(tmux_socket, "display-message", "-p", "#{pid}"))
        events.clear()
        os.kill(server, signal.SIGTERM)  # its panes get their hang-up: nothing is left
        await until(lambda: ServerGone() in events)
        assert not t.connected
        # A new server: the first session's process connects again, and the subscription is
        # made again (it reports the dead panes of the new server in full).
        await t.run(["new-session", "-d", "-s", "two", "sleep 600"])
        await t.run(["set-option", "-g", "remain-on-exit", "on"])
        assert await t.connect() and t.connects == 2
        info = await tmux_out(tmux_socket, "display-message", "-p", "-t", "=two:",
                              "#{window_id} #{pane_id} #{pane_pid}")
        wid3, pane3, pid3 = info.split()
        os.kill(int(pid3), signal.SIGTERM)
        await until(lambda: any(isinstance(e, PanesDead) and
                                DeadPane(pane3, wid3, int(pid3), None) in e.panes
                                for e in events))
        await t.close()

    run(main())


@needs_tmux
def test_the_daemon_runs_no_tmux_process_per_launch_restart_or_status(
        daemon: DaemonProcess, env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(f"{tmp_path}/p", """
        name = "quiet"
        [tasks.a]
        command = "sleep 600"
        [tasks.b]
        command = "sleep 600"
        [tasks.c]
        command = "sleep 600"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    sup = call(daemon.socket, "daemon.status")["supervision"]
    assert sup["tmux_control"] is True, sup
    before = sup["tmux_processes"]
    code, out = run_json(["restart"], env, cwd=proj)
    assert code == 0 and [r["action"] for r in out["results"]] == ["restarted"] * 3, out
    code, out = run_json(["stop", "b"], env, cwd=proj)
    assert code == 0, out
    code, out = run_json(["start", "b"], env, cwd=proj)
    assert code == 0, out
    assert {t["state"] for t in status(env, proj)["tasks"]} == {"running"}
    assert call(daemon.socket, "daemon.status")["supervision"]["tmux_processes"] == before


def test_a_client_that_met_a_dying_server_asks_again(tmp_path: str) -> None:
    """tmux says "server exited unexpectedly" when its client reached a server on its way
    out: nothing ran, so the command is asked again (a new server answers); any other failure
    is reported at once. The seam: a stand-in tmux binary that fails twice, then answers."""
    calls = os.path.join(str(tmp_path), "calls")
    fake = os.path.join(str(tmp_path), "tmux")
    with open(fake, "w", encoding="utf-8") as fh:
        fh.write(f"""#!/bin/sh
echo x >> {calls}
n=$(wc -l < {calls})
case "$*" in *refuse*) echo "unknown command: refuse" >&2; exit 1;; esac
if [ "$n" -le 2 ]; then echo "server exited unexpectedly" >&2; exit 1; fi
echo answered
""")
    os.chmod(fake, 0o755)

    async def main() -> None:
        t = Tmux("unused", binary=fake)
        assert await t.run(["new-session", "-d"]) == "answered\n"
        assert _count(calls) == 3
        with pytest.raises(TmuxError, match="unknown command"):
            await t.run(["refuse"])
        assert _count(calls) == 4  # asked once: not a dying server

    run(main())


def _count(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        return len(fh.read().split())
