"""What a request's body may hold: the budget of bodies held at once, and waits on the client
timed only when they wait (:func:`service.waits.within`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from service.middleware import BodyBudget, BodyClock, BodyTimeout
from service.waits import within
from tests.conftest import make_settings


def test_within_gives_the_result_and_times_only_a_wait(timers: list[float]) -> None:
    async def at_once() -> str:
        return "here"

    async def later() -> str:
        await asyncio.sleep(0.01)
        return "came"

    async def never() -> str:
        await asyncio.sleep(10)
        return "never"

    async def run() -> list[str]:
        got = [await within(at_once(), 1.0), await within(later(), 1.0)]
        with pytest.raises(TimeoutError):
            await within(never(), 0.02)
        with pytest.raises(TimeoutError):
            await within(never(), 0.0)  # no time left: any wait is too long
        return got

    assert asyncio.run(run()) == ["here", "came"]
    assert timers == [1.0, 0.02, 0.0]  # none for the one that did not wait


def test_a_body_charge_takes_room_and_gives_it_back() -> None:
    async def run() -> None:
        budget = BodyBudget(100, wait_s=0.05)
        assert await budget.charge(60)
        assert await budget.charge(40)
        assert budget.held == 100
        assert not await budget.charge(1)  # no room came within the wait
        assert budget.held == 100
        budget.release(60)
        assert await budget.charge(50)
        assert budget.held == 90

    asyncio.run(run())


def test_waiting_charges_get_room_in_their_turn() -> None:
    async def run() -> list[int]:
        budget = BodyBudget(100, wait_s=5.0)
        assert await budget.charge(100)
        order: list[int] = []

        async def wait_for(nbytes: int) -> None:
            assert await budget.charge(nbytes)
            order.append(nbytes)

        first = asyncio.create_task(wait_for(70))
        await asyncio.sleep(0)
        second = asyncio.create_task(wait_for(20))  # would fit beside the first: waits behind
        await asyncio.sleep(0.01)
        assert order == []
        budget.release(100)
        await asyncio.gather(first, second)
        assert budget.held == 90
        return order

    assert asyncio.run(run()) == [70, 20]


def test_a_charge_that_gives_up_lets_the_ones_behind_it_in() -> None:
    async def run() -> None:
        budget = BodyBudget(100, wait_s=5.0)
        assert await budget.charge(50)
        big = asyncio.create_task(budget.charge(80))
        await asyncio.sleep(0)
        small = asyncio.create_task(budget.charge(30))
        await asyncio.sleep(0.01)
        assert not small.done()  # behind the big one
        big.cancel()  # its client left
        assert await small
        assert budget.held == 80
        with pytest.raises(asyncio.CancelledError):
            await big

    asyncio.run(run())


def test_a_charge_granted_as_its_wait_is_cancelled_is_given_back() -> None:
    async def run() -> None:
        budget = BodyBudget(100, wait_s=5.0)
        assert await budget.charge(100)
        waiting = asyncio.create_task(budget.charge(60))
        await asyncio.sleep(0)
        budget.release(100)  # grants the waiting charge ...
        waiting.cancel()  # ... which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert budget.held == 0

    asyncio.run(run())


def test_the_body_clock_gives_a_second_for_every_min_rate_bytes() -> None:
    limits = make_settings(body_timeout_s=0.05, body_min_rate=1000).limits

    async def run() -> None:
        async def late() -> dict[str, Any]:
            await asyncio.sleep(0.1)
            return {"type": "http.request", "body": b"x", "more_body": False}

        clock = BodyClock(limits, time.perf_counter())
        # 100 bytes in: 0.05 s + 0.1 s, time enough for a piece 0.1 s away
        assert (await clock.receive(late, 100, 200))["body"] == b"x"
        clock = BodyClock(limits, time.perf_counter())
        with pytest.raises(BodyTimeout) as caught:
            await clock.receive(late, 0, 200)
        assert caught.value.status_code == 408
        assert caught.value.headers == {"Connection": "close"}
        assert caught.value.details == {
            "limit": "body_timeout_s",
            "allowed": 0.05,
            "received": 0,
            "declared": 200,
        }

    asyncio.run(run())


def test_a_charge_that_gave_up_behind_others_is_passed_over_in_its_turn() -> None:
    async def run() -> None:
        budget = BodyBudget(100, wait_s=5.0)
        assert await budget.charge(100)
        first = asyncio.create_task(budget.charge(50))
        await asyncio.sleep(0)
        gone = asyncio.create_task(budget.charge(50))
        await asyncio.sleep(0)
        last = asyncio.create_task(budget.charge(50))
        await asyncio.sleep(0.01)
        gone.cancel()  # behind a waiting one: left where it is
        with pytest.raises(asyncio.CancelledError):
            await gone
        budget.release(100)
        assert await first
        assert await last
        assert budget.held == 100
        assert not budget._waiting

    asyncio.run(run())
