"""Waits on the client, timed only when they wait.

A send to the client or a receive from it usually completes at once: the server's write
buffer has room, the body has arrived. Scheduling and cancelling a timer for each would
cost a tenth of a tiny request's time on the event loop, so a wait is run up to its first
suspension (:class:`Started`), and only the rest of it, if any, is timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Started(Generic[T]):
    """An awaitable, run up to its first wait when this is made. ``done`` (with ``value``,
    its result) when it completed without waiting; otherwise awaiting this awaits the rest
    of it: what the event loop sends or throws in (a timeout's cancellation) goes on to it,
    as ``yield from`` does, and its result comes back."""

    __slots__ = ("done", "steps", "value", "waiting_on")

    def __init__(self, awaitable: Awaitable[T]) -> None:
        self.steps: Generator[Any, Any, T] = awaitable.__await__()
        try:
            self.waiting_on = self.steps.send(None)
            self.done = False
        except StopIteration as finished:
            self.value: T = finished.value
            self.done = True

    def __await__(self) -> Generator[Any, Any, T]:
        if self.done:
            return self.value
        steps, waiting_on = self.steps, self.waiting_on
        while True:
            try:
                value = yield waiting_on
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:  # handed to the awaitable, as `yield from` does
                try:
                    waiting_on = steps.throw(exc)
                except StopIteration as finished:
                    result: T = finished.value
                    return result
                continue
            try:
                waiting_on = steps.send(value)
            except StopIteration as finished:
                result = finished.value
                return result


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """``await awaitable``, given up (``TimeoutError``) once it has waited ``timeout``
    seconds; one that does not wait gets no timer."""
    started = Started(awaitable)
    if started.done:
        return started.value
    async with asyncio.timeout(timeout):
        return await started
