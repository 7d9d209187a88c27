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
