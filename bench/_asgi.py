"""Driving an app through its ASGI interface in this process: an HTTP request's scope, one
request's round trip, and the app's lifespan around them.

Shared by ``bench/transport.py``, ``bench/overhead.py`` and ``tests/api/test_slow_bodies.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


def http_scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b""
) -> dict[str, Any]:
    """The scope of ``method path?query`` with ``headers`` (lower-case names), as uvicorn
    gives it: HTTP/1.1 from 127.0.0.1."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def through_app(app: Any, scope: dict[str, Any], pieces: list[bytes]) -> tuple[int, bytes]:
    """One request through ``app``'s ASGI interface, its body in ``pieces`` (one message
    each, as uvicorn hands a body over): its status and its whole body."""
    messages = iter(
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    )
    out: list[bytes | memoryview] = []  # views of the app's memory: one copy, in the join
    status = 0

    async def receive() -> dict[str, Any]:
        message = next(messages, None)
        if message is None:
            await asyncio.Event().wait()  # the body is read: nothing more comes
        assert message is not None
        return message

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            out.append(message.get("body", b""))

    await app(dict(scope), receive, send)
    return status, b"".join(out)


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """``app`` between its lifespan's startup and shutdown."""
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await events.put({"type": "lifespan.startup"})
    running = asyncio.create_task(app({"type": "lifespan"}, events.get, answers.put))
    started = await answers.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"the app did not start: {started}")
    try:
        yield
    finally:
        await events.put({"type": "lifespan.shutdown"})
        await answers.get()
        await running
