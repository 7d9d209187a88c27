"""``jobs.Changed``: every waiter re-checks its predicate on each ``fire``, a timeout answers
with the predicate, and a cancelled waiter leaves the others waiting."""

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
