"""Work queued for the end of a turn of the event loop (``turnbatch``), on a real loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from taskmuxd.proxy.turnbatch import TurnBatch, turn_ends


def _turns(loop: asyncio.AbstractEventLoop) -> list[int]:
    """A count of the loop's turns so far (its selector's polls), kept up to date."""
    count = [0]
    selector = loop._selector  # type: ignore[attr-defined]
    poll = selector.select

    def counted(timeout: float | None = None) -> object:
        count[0] += 1
        return poll(timeout)

    selector.select = counted
    return count


def on_a_loop(main: Callable[[asyncio.AbstractEventLoop, TurnBatch], Awaitable[None]]) -> None:
    """Run ``main`` on a new loop, with a batch of its own for that loop."""
    async def begin() -> None:
        loop = asyncio.get_running_loop()
        await main(loop, TurnBatch(loop))

    asyncio.run(begin())


def test_the_last_callback_of_a_turn_runs_the_work_without_another_turn() -> None:
    async def main(loop: asyncio.AbstractEventLoop, batch: TurnBatch) -> None:
        turns = _turns(loop)
        ran: list[tuple[str, int]] = []
        done = loop.create_future()

        def job() -> None:
            ran.append(("job", turns[0]))

        def callback() -> None:  # (alone in its turn, as a read from the browser)
            with batch:
                with batch:  # (nested: only the outermost runs the work)
                    batch.later(job)
                assert not ran
            ran.append(("after", turns[0]))
            done.set_result(None)

        loop.call_soon(callback)
        await done
        assert ran[0] == ("job", ran[1][1])  # at the end of the callback, in its turn
        assert not batch.jobs and not batch.scheduled

    on_a_loop(main)


def test_with_more_callbacks_in_the_turn_the_last_one_runs_the_work_in_that_turn() -> None:
    async def main(loop: asyncio.AbstractEventLoop, batch: TurnBatch) -> None:
        turns = _turns(loop)
        ran: list[tuple[str, int]] = []
        done = loop.create_future()

        def first() -> None:
            with batch:
                batch.later(lambda: ran.append(("job 1", turns[0])))
            assert not turn_ends(loop) and ran == []  # (second waits to run)
            assert batch.scheduled

        def second() -> None:
            with batch:
                batch.later(lambda: ran.append(("job 2", turns[0])))
            ran.append(("second", turns[0]))
            loop.call_soon(done.set_result, None)

        loop.call_soon(first)
        loop.call_soon(second)
        await done
        turn = ran[-1][1]
        assert ran == [("job 1", turn), ("job 2", turn), ("second", turn)]
        assert not batch.scheduled and not batch.jobs

    on_a_loop(main)


def test_work_waits_for_a_callback_queued_during_the_turn_and_runs_once() -> None:
    async def main(loop: asyncio.AbstractEventLoop, batch: TurnBatch) -> None:
        ran: list[str] = []
        done = loop.create_future()

        def other() -> None:
            ran.append("other")

        def first() -> None:
            loop.call_soon(other)  # (queued during the turn: runs in the next)
            with batch:
                batch.later(lambda: ran.append("job 1"))

        def second() -> None:
            with batch:
                batch.later(lambda: ran.append("job 2"))
            ran.append("second")  # (``other`` still waits: the work was left to call_soon)
            loop.call_soon(loop.call_soon, done.set_result, None)

        loop.call_soon(first)
        loop.call_soon(second)
        await done
        assert ran == ["second", "other", "job 1", "job 2"]

    on_a_loop(main)


def test_a_call_taken_over_by_the_last_callback_is_not_run_again() -> None:
    async def main(loop: asyncio.AbstractEventLoop, batch: TurnBatch) -> None:
        ran: list[str] = []
        done = loop.create_future()

        def callback() -> None:  # (in the same turn as the call, just before it)
            with batch:
                batch.later(lambda: ran.append("b"))
            ran.append("callback")
            loop.call_soon(loop.call_soon, done.set_result, None)

        loop.call_soon(callback)
        batch.later(lambda: ran.append("a"))  # (outside a callback: through call_soon)
        handle = batch.handle
        await done
        assert ran == ["a", "b", "callback"]  # (once each)
        assert handle is not None and handle.cancelled()
        assert not batch.jobs and not batch.scheduled

    on_a_loop(main)


def test_work_queued_outside_a_callback_goes_through_call_soon() -> None:
    async def main(loop: asyncio.AbstractEventLoop, batch: TurnBatch) -> None:
        ran: list[str] = []
        batch.later(lambda: ran.append("a"))
        batch.later(lambda: ran.append("b"))
        assert batch.scheduled and ran == []
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert ran == ["a", "b"] and not batch.scheduled

    on_a_loop(main)


def test_a_failing_job_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    async def main(loop: asyncio.AbstractEventLoop, batch: TurnBatch) -> None:
        ran: list[str] = []

        def broken() -> None:
            raise RuntimeError("broken job")

        with batch:
            batch.later(broken)
            batch.later(lambda: ran.append("after"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert ran == ["after"]

    on_a_loop(main)
    assert "broken job" in caplog.text


def test_a_loop_whose_ready_queue_cannot_be_seen_never_runs_work_early() -> None:
    class Loop:
        def __init__(self) -> None:
            self.soon: list[object] = []

        def call_soon(self, callback: object) -> None:
            self.soon.append(callback)

    loop = Loop()
    assert not turn_ends(loop)  # type: ignore[arg-type]
    batch = TurnBatch(loop)  # type: ignore[arg-type]
    ran: list[str] = []
    with batch:
        batch.later(lambda: ran.append("job"))
    assert ran == [] and loop.soon == [batch.run]
    batch.run()
    assert ran == ["job"]
