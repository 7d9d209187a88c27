"""``jobs.Changed``: every waiter re-checks its predicate once per turn of the loop that
fired (however many fires it had), a timeout answers with the predicate, a predicate's error
is its own waiter's, and a cancelled waiter leaves the others waiting."""

from __future__ import annotations

import asyncio

from taskmuxd.jobs import Changed


def test_waiters_wake_on_fire_and_a_cancelled_one_leaves_the_others() -> None:
    async def main() -> None:
        changed = Changed()
        state = {"n": 0}
        waiters = [asyncio.create_task(changed.wait_for(lambda k=k: state["n"] >= k, 10))
                   for k in (1, 2, 3)]
        quitter = asyncio.create_task(changed.wait_for(lambda: False, 10))
        await asyncio.sleep(0)
        quitter.cancel()
        for n in (1, 2, 3):
            await asyncio.sleep(0)
            state["n"] = n
            changed.fire()
        assert await asyncio.gather(*waiters) == [True, True, True]
        assert quitter.cancelled()

    asyncio.run(main())


def test_a_timeout_answers_with_the_predicate() -> None:
    async def main() -> None:
        changed = Changed()
        assert await changed.wait_for(lambda: False, 0.01) is False
        assert await changed.wait_for(lambda: True, 0) is True

    asyncio.run(main())


def test_the_fires_of_one_turn_are_checked_once() -> None:
    async def main() -> None:
        changed = Changed()
        state = {"n": 0, "checks": 0}

        def reached() -> bool:
            state["checks"] += 1
            return state["n"] >= 100

        waiter = asyncio.create_task(changed.wait_for(reached, 10))
        await asyncio.sleep(0)
        assert state["checks"] == 1  # on entry
        for n in range(1, 101):  # a hundred reports handled in one turn
            state["n"] = n
            changed.fire()
        assert await waiter is True
        assert state["checks"] == 2

    asyncio.run(main())


def test_a_predicate_that_raises_raises_in_its_waiter_only() -> None:
    async def main() -> None:
        changed = Changed()
        state = {"n": 0}

        def broken() -> bool:
            if state["n"]:
                raise KeyError("gone")
            return False

        bad = asyncio.create_task(changed.wait_for(broken, 10))
        good = asyncio.create_task(changed.wait_for(lambda: state["n"] > 0, 10))
        await asyncio.sleep(0)
        state["n"] = 1
        changed.fire()
        assert await good is True
        try:
            await bad
        except KeyError:
            pass
        else:
            raise AssertionError("the predicate's error was lost")

    asyncio.run(main())
