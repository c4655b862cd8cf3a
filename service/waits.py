"""Waits on the client, timed only when they wait.

A send to the client or a receive from it usually completes at once: the server's write
buffer has room, the body has arrived. Scheduling and cancelling a timer for each would
cost a tenth of a tiny request's time on the event loop, so :func:`within` runs the
awaitable up to its first wait, and only then times the rest of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """``await awaitable``, given up (``TimeoutError``) once it has waited ``timeout``
    seconds; one that does not wait needs no timer and gets none."""
    steps = awaitable.__await__()
    try:
        waiting_on = steps.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    async with asyncio.timeout(timeout):
        return await _Resumed(steps, waiting_on)


class _Resumed(Awaitable[T]):
    """Awaits the rest of a coroutine that has already yielded ``waiting_on`` (what
    ``yield from`` does for a coroutine started elsewhere): what the event loop sends or
    throws in (the timeout's cancellation) goes on to the coroutine, and its result comes
    back."""

    def __init__(self, steps: Generator[Any, Any, T], waiting_on: Any) -> None:
        self.steps = steps
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, T]:
        steps, waiting_on = self.steps, self.waiting_on
        while True:
            try:
                value = yield waiting_on
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:  # handed to the coroutine, as `yield from` does
                try:
                    waiting_on = steps.throw(exc)
                except StopIteration as done:
                    result: T = done.value
                    return result
                continue
            try:
                waiting_on = steps.send(value)
            except StopIteration as done:
                result = done.value
                return result
