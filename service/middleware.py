"""The outermost ASGI layer: request ids, access log, metrics, and what a request's body
may cost: its size, checked early, the time it takes to arrive, and the room it takes
among the bodies held at once."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.routes.docs import PUBLIC_PATHS as DOCS_PUBLIC_PATHS
from service.config import Limits, Settings
from service.errors import ErrorCode, error_response
from service.metrics import Metrics
from service.waits import Started, timed

UNCHARGED_BODY_BYTES = 16 * 1024
"""A body up to this size takes no room among the bodies held at once (its connection's
buffers hold as much)."""

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
    path = scope["path"]
    if not path.isprintable():  # percent-decoded: /x%0a... would write a line of its own
        path = path.encode("unicode_escape").decode("ascii")
    access_log.info("%s %s %s %d %.1fms", request_id, method, path, status, elapsed * 1000)


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
            # As MutableHeaders' item assignment does (any X-Request-ID replaced), on a copy
            # of the list: the response's own stays as it is.
            headers = [item for item in message.get("headers", ()) if item[0] != b"x-request-id"]
            headers.append((b"x-request-id", self.request_id.encode("latin-1")))
            message["headers"] = headers
        await self.send(message)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit.

    An ``HTTPException`` because FastAPI re-raises those from body parsing (anything else
    becomes a 400), so the error handler map renders it.
    """

    def __init__(self, received: int) -> None:
        super().__init__(status_code=413)
        self.received = received


class BodyTimeout(HTTPException):
    """Raised from ``receive`` when a body has not arrived in time (:class:`BodyClock`). An
    ``HTTPException`` for the reason :class:`BodyTooLarge` is; answered 408 with
    ``Connection: close``, since the rest of the body is not coming, or not soon."""

    def __init__(self, clock: BodyClock, received: int, declared: int | None) -> None:
        waited = time.perf_counter() - clock.start
        of = "" if declared is None else f" of {declared:,}"
        super().__init__(
            status_code=408,
            detail=(
                f"the request body did not arrive in time: {received:,} bytes{of} in "
                f"{waited:.1f} s; a body has body_timeout_s ({clock.timeout:g} s) plus a second "
                f"for every body_min_rate ({clock.rate:,}) bytes that arrive"
            ),
            headers={"Connection": "close"},
        )
        self.details = {
            "limit": "body_timeout_s",
            "allowed": clock.timeout,
            "received": received,
            "declared": declared,
        }


class NoRoomForBody(HTTPException):
    """Raised from ``receive`` when a chunked body, charged as it grows, finds no room among
    the bodies held at once within ``queue_timeout_s``: 429 with ``Retry-After``, as for a
    declared body refused before it is read. An ``HTTPException`` for the reason
    :class:`BodyTooLarge` is."""

    def __init__(self, limits: Limits, wanted: int) -> None:
        retry = max(1, math.ceil(limits.queue_timeout_s))
        super().__init__(
            status_code=429,
            detail=(
                f"the server holds {limits.max_inflight_body_bytes:,} bytes of request bodies "
                f"(max_inflight_body_bytes) and no room for this chunked body to grow to "
                f"{wanted:,} came within {limits.queue_timeout_s:g} s; retry after {retry} s"
            ),
            headers={"Retry-After": str(retry), "Connection": "close"},
        )
        self.details = {
            "limit": "max_inflight_body_bytes",
            "allowed": limits.max_inflight_body_bytes,
            "requested": wanted,
        }


class BodyClock:
    """When a request's body must have arrived by: ``body_timeout_s`` after the request
    began, plus a second for every ``body_min_rate`` bytes that have arrived. A client that
    keeps up that rate is never cut off; one that trickles bytes, or stops, holds its
    connection and what its request has taken for a bounded time."""

    __slots__ = ("rate", "start", "timeout")

    def __init__(self, limits: Limits, start: float) -> None:
        self.start = start
        self.timeout = limits.body_timeout_s
        self.rate = limits.body_min_rate

    def receive(self, receive: Receive, received: int, declared: int | None) -> Awaitable[Message]:
        """``receive()`` for the next piece of a body of which ``received`` bytes have
        arrived, to be awaited: :class:`BodyTimeout` past the deadline. A piece already
        there costs no timer, nor a coroutine of this method's
        (:class:`service.waits.Started`)."""
        started = Started(receive())
        return started if started.done else self._rest(started, received, declared)

    async def _rest(
        self, started: Started[Message], received: int, declared: int | None
    ) -> Message:
        left = self.start + self.timeout + received / self.rate - time.perf_counter()
        try:
            return await timed(started, max(left, 0.0))
        except TimeoutError:
            raise BodyTimeout(self, received, declared) from None


class BodyBudget:
    """The bytes of request bodies held at once (``max_inflight_body_bytes``). A body is
    charged before it is read and released once its request is answered; a charge that
    finds no room waits its turn, first come first served, for up to ``queue_timeout_s``."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self.held = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def charge(self, nbytes: int) -> bool:
        """Take ``nbytes``; false when no room came within the wait."""
        if not self._waiting and self.held + nbytes <= self.capacity:
            self.held += nbytes
            return True
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (nbytes, turn)
        self._waiting.append(entry)
        try:
            async with asyncio.timeout(self.wait_s):
                await turn
        except TimeoutError:
            self._give_up(entry)
            return False
        except BaseException:
            self._give_up(entry)
            raise
        return True

    def release(self, nbytes: int) -> None:
        self.held -= nbytes
        self._grant()

    def _give_up(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        nbytes, turn = entry
        if turn.done() and not turn.cancelled():  # granted as the wait ended: give it back
            self.release(nbytes)
            return
        turn.cancel()  # left in the queue, passed over when its turn comes: no search
        self._grant()  # the ones behind it may fit

    def _grant(self) -> None:
        while self._waiting:
            nbytes, turn = self._waiting[0]
            if turn.done():
                self._waiting.popleft()
                continue
            if self.held + nbytes > self.capacity:
                return
            self._waiting.popleft()
            self.held += nbytes
            turn.set_result(None)


class RequestContextMiddleware:
    """Gives each request an ``X-Request-ID`` (kept if the caller sent a sane one), logs it,
    counts it in the metrics by route template, and enforces what a body may cost: the
    body-size limit (a declared ``Content-Length`` over it is refused before a byte is read,
    and every body, chunked ones too, is counted while it streams in), its deadline
    (:class:`BodyClock`) and its room among the bodies held at once (:class:`BodyBudget`).

    (Starlette's own limiter answers in plain text, outside the contract's error shape.)
    """

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        limits = settings.limits
        self.bodies = BodyBudget(limits.max_inflight_body_bytes, limits.queue_timeout_s)
        self.keys = [key.encode() for key in settings.api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = begin_request(scope, headers.get("x-request-id", ""))
        start = time.perf_counter()
        limits = self.settings.limits
        limit = limits.max_body_bytes
        length = headers.get("content-length", "")
        declared = int(length) if length.isascii() and length.isdigit() else None
        clock = BodyClock(limits, start)
        received = 0
        arrived = False
        charged = 0
        grows = False  # a chunked body: charged as it grows

        async def receive_counted() -> Message:
            nonlocal received, arrived, charged
            if arrived:  # the body is in: a wait for the client to leave, not timed
                return await receive()
            message = await clock.receive(receive, received, declared)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(received)
                if grows and received > max(charged, UNCHARGED_BODY_BYTES):
                    wanted = min(limit, max(received, 2 * charged))
                    if not await self.bodies.charge(wanted - charged):
                        self.metrics.refused.labels("max_inflight_body_bytes").inc()
                        raise NoRoomForBody(limits, wanted)
                    charged = wanted
                    self.metrics.body_bytes.set(self.bodies.held)
                arrived = not message.get("more_body", False)
            return message

        send_with_id = IdentifiedSend(send, request_id)
        try:
            if declared is not None and declared > limit:
                response = error_response(
                    ErrorCode.BODY_SIZE_LIMIT,
                    f"the request body has {declared:,} bytes but the limit "
                    f"max_body_bytes is {limit:,}",
                    {"limit": "max_body_bytes", "allowed": limit, "requested": declared},
                )
                self.metrics.refused.labels("max_body_bytes").inc()
                await response(scope, receive, send_with_id)
                return
            charge = self._charge_of(scope, declared, headers)
            if charge:
                took = await self.bodies.charge(charge)
                self.metrics.body_bytes.set(self.bodies.held)
                if not took:
                    self.metrics.refused.labels("max_inflight_body_bytes").inc()
                    await self._no_room(charge)(scope, receive, send_with_id)
                    return
            charged = charge
            grows = (
                declared is None and "transfer-encoding" in headers and self._keyed(scope, headers)
            )
            await self.app(scope, receive_counted, send_with_id)
        finally:
            if charged:
                self.bodies.release(charged)
                self.metrics.body_bytes.set(self.bodies.held)
            end_request(scope, self.metrics, request_id, send_with_id.status or 500, start)

    def _keyed(self, scope: Scope, headers: Headers) -> bool:
        """Whether the request may go in (it has a key where keys are needed): one without
        is refused before its body is read, and charged nothing."""
        return not self.keys or ApiKeyMiddleware.lets_in(scope, headers, self.keys)

    def _charge_of(self, scope: Scope, declared: int | None, headers: Headers) -> int:
        """What a body with a declared length takes among those held at once, before it is
        read: that length; none for a small one, or one without a key where keys are needed.
        A chunked body is charged as it grows, past its first ``UNCHARGED_BODY_BYTES``, in
        doublings up to ``max_body_bytes``: charging it the most it may grow to, at once,
        let four idle connections that had sent a byte each take every 256 MiB there is."""
        if declared is None or declared <= UNCHARGED_BODY_BYTES:
            return 0
        return declared if self._keyed(scope, headers) else 0

    def _no_room(self, charge: int) -> Response:
        limits = self.settings.limits
        retry = max(1, math.ceil(limits.queue_timeout_s))
        return error_response(
            ErrorCode.TOO_MANY_REQUESTS,
            f"the server holds {limits.max_inflight_body_bytes:,} bytes of request bodies "
            f"(max_inflight_body_bytes) and no room for this one's {charge:,} came within "
            f"{limits.queue_timeout_s:g} s; retry after {retry} s",
            {
                "limit": "max_inflight_body_bytes",
                "allowed": limits.max_inflight_body_bytes,
                "requested": charge,
            },
            {"Retry-After": str(retry)},
        )


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

    @classmethod
    def lets_in(cls, scope: Scope, headers: Headers, keys: list[bytes]) -> bool:
        """Whether a request goes on past the keys: an open path, a CORS preflight, one of
        ``keys`` (or none configured)."""
        return (
            not keys
            or scope["path"] in cls.OPEN_PATHS
            or scope["method"] == "OPTIONS"
            or accepts_key(headers, keys)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.lets_in(scope, Headers(scope=scope), self.keys):
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


class ContractCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, whose refused preflights (an origin, method or header
    not allowed) are 400 ``cors_refused`` in the contract's shape, naming what was refused,
    instead of plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ").split(", ")
        headers = {
            key: value
            for key, value in response.headers.items()
            if key.lower().startswith("access-control-") or key.lower() == "vary"
        }
        hint = " (TORCHLAB_CORS_ORIGINS names the origins allowed)" if "origin" in refused else ""
        return error_response(
            ErrorCode.CORS_REFUSED,
            f"the preflight asks for what this server's CORS policy does not allow: "
            f"{', '.join(refused)}{hint}",
            {
                "refused": refused,
                "origin": request_headers.get("origin", "")[:200],
                "method": request_headers.get("access-control-request-method", "")[:40],
            },
            headers,
        )
