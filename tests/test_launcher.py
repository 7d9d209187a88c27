"""Launching runners into tmux windows: launches that reach the launcher in different turns
of the loop (their write-ahead records became durable in different batches) still share one
session; none of them tries to create it a second time."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from taskmuxd.projects.windowbatch import Launcher
from taskmuxd.tmux import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def test_launches_in_separate_turns_share_one_session(tmux_socket: str, tmp_path: str) -> None:
    async def main() -> None:
        tmux = Tmux(tmux_socket)
        launcher = Launcher(tmux, "proj")

        async def one(n: int) -> str:
            for _ in range(n):  # each launch arrives in a later turn than the one before
                await asyncio.sleep(0)
            return await launcher.launch(f"t{n}", f"{tmp_path}/missing-{n}.json",
                                         str(tmp_path), None, f"marker-{n}")

        ids = await asyncio.gather(*(one(n) for n in range(4)))
        windows = await tmux.windows("proj")
        assert sorted(w.window_id for w in windows) == sorted(ids)
        assert sorted(w.task for w in windows) == ["t0", "t1", "t2", "t3"]

    asyncio.run(main())


def test_a_first_start_on_a_new_server_goes_over_the_control_connection(
        tmux_socket: str, tmp_path: str) -> None:
    """Many launches at once with no tmux server yet: the session is made by one tmux
    process, the control connection is up before the others, and they go over it."""
    async def main() -> None:
        tmux = Tmux(tmux_socket)
        await tmux.start()  # as the daemon does: no server yet, so no connection
        launcher = Launcher(tmux, "proj")
        names = [f"t{n:02d}" for n in range(40)]
        ids = await asyncio.gather(*(launcher.launch(name, f"{tmp_path}/missing-{name}.json",
                                                     str(tmp_path), None, f"marker-{name}")
                                     for name in names))
        # list-windows (no server yet), then the new-session with the first chunk: no more.
        assert tmux.processes == 2 and tmux.connected
        windows = await tmux.windows("proj")
        assert sorted(w.window_id for w in windows) == sorted(ids)
        assert sorted(w.task for w in windows) == names
        await tmux.close()

    asyncio.run(main())


def test_many_launches_over_the_control_connection_each_get_their_own_window(
        tmux_socket: str, tmp_path: str) -> None:
    """Launches in several chunks, written to the control connection at once (no round trip
    between chunks): each launch gets the window marked with its own task, in order."""
    async def main() -> None:
        tmux = Tmux(tmux_socket)
        await tmux.start()
        launcher = Launcher(tmux, "proj")
        first = await launcher.launch("first", f"{tmp_path}/missing.json", str(tmp_path), None,
                                      "marker-first")
        assert await tmux.connect()  # made once the first launch's window is there
        processes = tmux.processes
        names = [f"task-with-a-longer-name-{n:03d}" for n in range(90)]  # several chunks
        ids = await asyncio.gather(*(launcher.launch(name, f"{tmp_path}/missing-{name}.json",
                                                     str(tmp_path), None, f"marker-{name}")
                                     for name in names))
        assert tmux.processes == processes  # all of them over the connection
        windows = await tmux.windows("proj")
        assert {w.window_id: w.task for w in windows} == {first: "first",
                                                           **dict(zip(ids, names, strict=True))}
        await tmux.close()

    asyncio.run(main())
