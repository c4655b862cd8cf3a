"""The outermost ASGI layer: request ids, access log, metrics, and the early body-size check."""

from __future__ import annotations

import hmac
import itertools
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.routes.docs import PUBLIC_PATHS as DOCS_PUBLIC_PATHS
from service.config import Settings
from service.errors import ErrorCode, error_response
from service.metrics import Metrics

access_log = logging.getLogger("torchlab.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


_next_id = itertools.count(uuid.uuid4().int >> 64 << 64).__next__
"""Request ids: 32 hex digits, a random half per process then a counter (a fresh uuid4
per request costs a system call)."""


def begin_request(scope: Scope, offered: str) -> str:
    """The request's id (the caller's ``X-Request-ID`` when sane), kept in its state."""
    request_id = offered if _REQUEST_ID.match(offered) else f"{_next_id():032x}"
    scope.setdefault("state", {})["request_id"] = request_id
    return request_id


def end_request(scope: Scope, metrics: Metrics, request_id: str, status: int, start: float) -> None:
    """Count an answered request in the metrics by its route's template, and log it."""
    route = scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    elapsed = time.perf_counter() - start
    method = scope["method"]
    metrics.count_request(method, template, status, elapsed)
    access_log.info("%s %s %s %d %.1fms", request_id, method, scope["path"], status, elapsed * 1000)


class IdentifiedSend:
    """``send`` that puts the request id in the response's headers and keeps its status
    (0 until the response starts)."""

    def __init__(self, send: Send, request_id: str) -> None:
        self.send = send
        self.request_id = request_id
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            MutableHeaders(scope=message)["X-Request-ID"] = self.request_id
        await self.send(message)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit.

    An ``HTTPException`` because FastAPI re-raises those from body parsing (anything else
    becomes a 400), so the error handler map renders it.
    """

    def __init__(self, received: int) -> None:
        super().__init__(status_code=413)
        self.received = received


class RequestContextMiddleware:
    """Gives each request an ``X-Request-ID`` (kept if the caller sent a sane one), logs it,
    counts it in the metrics by route template, and enforces the body-size limit: a declared
    ``Content-Length`` over it is refused before a byte is read, and every body (chunked
    ones too) is counted while it streams in.

    (Starlette's own limiter answers in plain text, outside the contract's error shape.)
    """

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = begin_request(scope, headers.get("x-request-id", ""))
        start = time.perf_counter()
        received = 0
        limit = self.settings.limits.max_body_bytes

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(received)
            return message

        send_with_id = IdentifiedSend(send, request_id)
        try:
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                response = error_response(
                    ErrorCode.BODY_SIZE_LIMIT,
                    f"the request body has {int(length):,} bytes but the limit "
                    f"max_body_bytes is {limit:,}",
                    {"limit": "max_body_bytes", "allowed": limit, "requested": int(length)},
                )
                self.metrics.refused.labels("max_body_bytes").inc()
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_counted, send_with_id)
        finally:
            end_request(scope, self.metrics, request_id, send_with_id.status or 500, start)


class ApiKeyMiddleware:
    """Refuses (401) every request without one of the configured keys, before its body is
    read, except the health probes (``/health`` and the Open Inference Protocol's
    ``/v2/health/live`` and ``/v2/health/ready``, which orchestrators call without a key), the
    docs pages and CORS preflights.

    A key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; every configured
    key is compared in constant time.
    """

    OPEN_PATHS = frozenset(
        {"/health", "/v2/health/live", "/v2/health/ready", "/openapi.json", *DOCS_PUBLIC_PATHS}
    )

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self.OPEN_PATHS
            or scope["method"] == "OPTIONS"
            or accepts_key(Headers(scope=scope), self.keys)
        ):
            await self.app(scope, receive, send)
            return
        response = error_response(
            ErrorCode.UNAUTHORIZED,
            "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


def accepts_key(headers: Headers, keys: list[bytes]) -> bool:
    """Whether the request carries one of ``keys`` (each compared in constant time)."""
    offered = headers.get("x-api-key")
    if offered is None:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        offered = credentials.strip()
    matched = False
    for key in keys:  # no early exit: the time taken does not depend on which key
        matched |= hmac.compare_digest(offered.encode(), key)
    return matched
