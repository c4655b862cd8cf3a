"""Server-sent events for long work (``Accept: text/event-stream``).

A stream is ``progress`` events while the work runs (``{"done", "total", "unit", ...}``, at
most one every :data:`~service.limits.PROGRESS_INTERVAL_S`), then one ``result`` event whose
data is exactly the JSON body the route answers without streaming, or one ``error`` event
holding the error body with the ``status`` it would have had. A refusal before the work
starts (validation, a limit, a full queue) is an ordinary HTTP error, not a stream.

A client that closes the stream cancels the work: its worker process is stopped (or, with
``isolate`` off, its thread stops at its next deadline check) and the compute slot is freed.
The events are sent as any answer's body is (:class:`PacedEventSourceResponse`): a large
result in pieces, sent from where the worker wrote it, and all of it within the send
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from schemas.common import ErrorResponse
from service.errors import ErrorCode, ServiceError, error_response_of
from service.waits import body_messages, send_timeout, send_within

logger = logging.getLogger("torchlab.events")

EVENT_STREAM = "text/event-stream"

KEEPALIVE_S = 15.0
"""A comment line goes out after this long without an event, so that proxies keep the
connection open while the work is silent (a long benchmark repeat)."""

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No cache may keep a stream, and nginx passes it on unbuffered (``X-Accel-Buffering``)."""

Progress = Callable[[dict[str, Any]], None]
Work = Callable[[Progress], Awaitable[bytes | memoryview]]
"""Runs the work, giving each progress event to its argument; returns the JSON body (a
view of shared memory when large: it is sent from there, piece by piece)."""


def wants_events(request: Request) -> bool:
    """Whether the request's ``Accept`` names ``text/event-stream`` (with a nonzero q)."""
    for item in request.headers.get("accept", "").split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media == EVENT_STREAM and "q=0" not in params and "q=0.0" not in params:
            return True
    return False


def streams(request: Request, *, png: bool = False, binary: bool = False) -> bool:
    """Whether to answer with events; 406 ``not_acceptable`` when the caller asks for events
    and for a result no event can hold (a PNG picture, a binary body)."""
    if not wants_events(request):
        return False
    if png or binary:
        what = 'a PNG picture ("format": "png")' if png else "a binary body (?encoding=binary)"
        raise ServiceError(
            f"the result would be {what}, but progress events carry JSON results; ask for "
            "JSON, or leave text/event-stream out of Accept",
            code=ErrorCode.NOT_ACCEPTABLE,
        )
    return True


EVENTS_DOC = (
    "With `Accept: text/event-stream`: server-sent events. `progress` events "
    '(`{"done", "total", "unit", ...}`, at most one every 100 ms), then one `result` event '
    "whose data is exactly the JSON body answered without streaming, or one `error` event "
    "holding the error body and the `status` it would have had. Closing the stream cancels "
    "the work."
)


def with_events(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route that also streams its progress: ``text/event-stream``
    beside its 200's media types, and the 406 of a result no event can hold."""
    ok = dict(responses.get(200, {}))
    ok["description"] = f"{ok.get('description', 'The result.')} {EVENTS_DOC}"
    ok["content"] = {
        **ok.get("content", {}),
        EVENT_STREAM: {
            "schema": {"type": "string", "description": "`event: <name>` and `data: <JSON>`"},
            "example": 'event: progress\ndata: {"done":1,"total":100,"unit":"epoch",'
            '"loss":0.52}\n\nevent: result\ndata: {...}\n\n',
        },
    }
    refused = {
        "model": ErrorResponse,
        "description": "`Accept: text/event-stream` with a PNG or binary result.",
    }
    return {**responses, 200: ok, 406: refused}


def event(name: str, data: bytes) -> bytes:
    """One event of the stream, ``data`` being JSON (one line: orjson writes no newline)."""
    return format_sse_event(event=name, data_str=data.decode())


async def error_event(request: Request, exc: Exception) -> bytes:
    """The ``error`` event of a failure: the body the app's handler for it answers, and its
    status (an unexpected error is logged and becomes a 500 ``internal_error``)."""
    response = await error_response_of(request, exc)
    body = orjson.loads(response.body)
    return event("error", orjson.dumps({**body, "status": response.status_code}))


def event_stream(request: Request, work: Work, release: Callable[[], None]) -> Response:
    """The stream of ``work``'s progress and outcome; ``release`` runs when it ends (the
    work is over, cancelled if the client left early)."""

    async def events() -> AsyncIterator[bytes | memoryview]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        task = asyncio.ensure_future(work(queue.put_nowait))
        getter: asyncio.Future[dict[str, Any]] | None = None
        try:
            while not task.done():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {task, getter}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    yield event("progress", orjson.dumps(getter.result()))
                    continue
                getter.cancel()
                if not done:
                    yield KEEPALIVE_COMMENT
            while not queue.empty():
                yield event("progress", orjson.dumps(queue.get_nowait()))
            try:
                body = task.result()
            except Exception as exc:
                yield await error_event(request, exc)
            else:
                # event("result", body) without copying a body of up to max_response_bytes
                # (orjson writes no newline, so the JSON is one data line).
                yield b"event: result\ndata: "
                yield body
                yield b"\n\n"
        finally:
            if getter is not None:
                getter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            release()

    return PacedEventSourceResponse(events(), headers=STREAM_HEADERS)


class PacedEventSourceResponse(EventSourceResponse):
    """Events sent as :class:`~service.waits.PacedBodyResponse` sends a body: an
    event larger than :data:`~service.waits.SEND_CHUNK_BYTES` (a result) in pieces, the
    whole event within the send timeout. A client that stops reading, or reads slowly,
    holds at most one piece in the connection's buffer, not the whole result, and is cut
    off at the timeout; the stream then ends, and frees what its work held."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        timeout = send_timeout(scope)

        clock = asyncio.get_running_loop().time

        async def paced(message: Message) -> None:
            # One send timeout for each message (a progress event, the result), timed as a
            # whole as PacedBodyResponse times a body: a client taking a MiB every 29 s had
            # held a 256 MiB result in shared memory for an hour.
            ends = clock() + timeout
            if message["type"] != "http.response.body":
                await send_within(message, send, timeout)
                return
            for piece in body_messages(message["body"], message.get("more_body", False)):
                await send_within(piece, send, ends - clock())

        try:
            await super().__call__(scope, receive, paced)
        except TimeoutError:
            logger.warning("stopped a stream: the client read nothing for %g s", timeout)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
