"""Waits on the client, timed only when they wait, and responses sent that way.

A send to the client or a receive from it usually completes at once: the server's write
buffer has room, the body has arrived. Scheduling and cancelling a timer for each would
cost a tenth of a tiny request's time on the event loop, so a wait is run up to its first
suspension (:class:`Started`), and only the rest of it, if any, is timed.
:class:`PacedBodyResponse` sends every response of the app so, error bodies too: a client
that stops reading holds nothing the request took (a compute slot, room among the bodies
held at once) past the send timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator, Iterator
from functools import partial
from typing import Any, Generic, TypeVar

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

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


def within(awaitable: Awaitable[T], timeout: float | Callable[[], float]) -> Awaitable[T]:
    """``awaitable``, given up (``TimeoutError``) once it has waited ``timeout`` seconds.
    It runs at once up to its first wait: one that does not wait gets no timer, nor a
    coroutine of its own (awaiting what is returned gives its result). ``timeout`` may be
    a function that gives it: called only when the awaitable waits."""
    started = Started(awaitable)
    if started.done:
        return started
    return timed(started, timeout() if callable(timeout) else timeout)


async def timed(started: Started[T], timeout: float) -> T:
    """The rest of ``started``, given up (``TimeoutError``) once it has waited ``timeout``
    seconds more."""
    async with asyncio.timeout(timeout):
        return await started


logger = logging.getLogger("torchlab.responses")

SEND_CHUNK_BYTES = 1 << 20
"""Bodies go out in pieces of this size, so that a client that stops reading holds at most
one piece in the connection's buffer, not the whole body."""


class PacedBodyResponse(Response):
    """A response sent as its start, then its body in pieces, all within the send timeout
    (``Limits.send_timeout_s``) of the start: a client that stops reading, or reads a
    little at a time, is cut off instead of holding the body in memory, or the compute
    slot the response holds, for long (one that pipelines requests and reads nothing
    leaves the next response waiting to start). Timed as a whole, not piece by piece: a
    client taking a MiB every 29 s held a 512 MiB answer, and the slot past its lease,
    for four hours. ``on_sent`` runs once the body is sent or given up (it releases what
    the response held, such as a compute slot)."""

    on_sent: Callable[[], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.body
        try:
            # Timed from the first send that waits: those before it took no time (and so,
            # most often, the whole response: no timer, not even the timeout looked up).
            await within(self._send(body, send), partial(send_timeout, scope))
        except TimeoutError:
            logger.warning(
                "stopped sending a %d-byte response: the client had not taken it in %g s",
                len(body),
                send_timeout(scope),
            )
            return
        finally:
            if self.on_sent is not None:
                self.on_sent()
        if self.background is not None:
            await self.background()

    async def _send(self, body: bytes | memoryview, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        start["headers"] = self.raw_headers
        await send(start)
        if type(body) is bytes and len(body) <= SEND_CHUNK_BYTES:  # one piece, as is
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        for message in body_messages(body):
            await send(message)


def body_messages(body: bytes | memoryview, more_body: bool = False) -> Iterator[Message]:
    """The ``http.response.body`` messages of ``body``: in pieces of
    :data:`SEND_CHUNK_BYTES`, the last one with ``more_body``.

    A view's pieces (an answer in the shared memory a worker wrote it to) go out as copies:
    the server keeps what the client has not taken yet, and a view of it would keep the
    whole answer's memory for as long as the connection lasts, past the send timeout too.
    """
    if len(body) <= SEND_CHUNK_BYTES:
        piece = bytes(body) if isinstance(body, memoryview) else body
        yield {"type": "http.response.body", "body": piece, "more_body": more_body}
        return
    for start in range(0, len(body), SEND_CHUNK_BYTES):
        end = start + SEND_CHUNK_BYTES
        last = end >= len(body)
        piece = bytes(body[start:end])  # of bytes, the slice is the copy
        yield {"type": "http.response.body", "body": piece, "more_body": more_body or not last}


def send_within(message: Message, send: Send, timeout: float) -> Awaitable[None]:
    """``send(message)``, given up (``TimeoutError``) after ``timeout`` seconds of waiting
    for the client. While the client reads, a send does not wait (the server waits only
    once its write buffer is full), and so gets no timer (:func:`within`)."""
    return within(send(message), timeout)


def send_timeout(scope: Scope) -> float:
    """The app's ``send_timeout_s`` (30 s outside the app)."""
    app = scope.get("app")
    settings = getattr(getattr(app, "state", None), "settings", None)
    return float(settings.limits.send_timeout_s) if settings is not None else 30.0
