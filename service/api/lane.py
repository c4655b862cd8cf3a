"""The fast lane: the app's outermost layer, which answers a small ``POST`` to a route with
a direct call (:func:`service.api.routing._direct_call`) without the framework's
per-request layers: plain JSON to a route of one JSON model, any body to a route with path
parameters that reads its own (``POST /v2/models/{name}/infer``: tritonclient's sync client
sends no ``Content-Type``).

Every request passes through a stack of ASGI layers (Starlette's error and exception
middleware, FastAPI's telemetry, body-limit and exit-stack middleware, ours, the router),
each an ``await`` and a closure or two. On a tiny request that stack costs more than the
work itself. The lane does what those layers do for such a request, in one place:

- the request id, the access log and the metrics (:func:`service.middleware.begin_request`,
  :func:`~service.middleware.end_request`), and the API keys when configured;
- the body, read whole (its declared length is at most :data:`INLINE_BODY_BYTES`, far
  under ``max_body_bytes``), within its time (:class:`~service.middleware.BodyClock`);
- an error raised by the route answered by the app's handler for it; an unexpected one is
  the 500 the app gives, then re-raised for the server to log, as Starlette's
  ``ServerErrorMiddleware`` does.

Any other request goes through the whole stack, as does one the lane declines after
reading its body (not JSON, or invalid for the model: FastAPI words those errors), with the
body replayed. So is every request when CORS is configured and the request has an
``Origin`` (the CORS layer adds headers), or when a layer was added to the app that the
lane does not know of, or when FastAPI's OpenTelemetry follows the request
(``Settings.opentelemetry``): its router names the request's span after the route.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.forms import INLINE_BODY_BYTES
from service.api.routing import (
    TELEMETRY_SCOPE_KEY,
    DirectCall,
    ORJSONRequest,
    ORJSONRoute,
    StaticPathIndex,
)
from service.config import Settings
from service.metrics import Metrics
from service.middleware import (
    BodyClock,
    BodyTimeout,
    IdentifiedSend,
    accepts_key,
    begin_request,
    end_request,
)

_PLAIN_JSON = frozenset({b"application/json", b"application/json; charset=utf-8"})


class _Declined(Exception):
    """The route declined the body: it goes through the whole stack."""


class FastLane:
    """See the module. ``index``: the app router's :class:`~service.api.routing.StaticPathIndex`;
    a ``POST`` it finds a route with a direct call for is answered here. ``handlers``: the
    app's exception handlers (``app.exception_handlers``)."""

    def __init__(
        self,
        stack: ASGIApp,
        index: StaticPathIndex,
        handlers: dict[Any, Any],
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.stack = stack
        self.index = index
        self.settings = settings
        self.metrics = metrics
        self.handlers = handlers
        self.keys = [key.encode() for key in settings.api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope["query_string"]
            and TELEMETRY_SCOPE_KEY not in scope
        ):
            found = self._route(scope)
            if found is not None and (taken := self._takes(scope, found[0])) is not None:
                await self._answer(found, taken, scope, receive, send)
                return
        await self.stack(scope, receive, send)

    def _route(self, scope: Scope) -> tuple[ORJSONRoute, DirectCall, Scope] | None:
        """The route the router would take, when it has a direct call, with its child scope."""
        found = self.index.find(scope)
        if found is None:
            return None
        route, child = found
        if not isinstance(route, ORJSONRoute) or route.direct is None:
            return None
        return route, route.direct, child

    def _takes(self, scope: Scope, route: ORJSONRoute) -> tuple[int, str] | None:
        """The body's declared length and the ``X-Request-ID`` offered (``""`` for none)
        when the lane takes the request, else ``None``."""
        content_type = length = offered = None
        for name, value in scope["headers"]:  # the first of a repeated header, as Starlette
            if name == b"content-type":
                content_type = value if content_type is None else content_type
            elif name == b"content-length":
                length = value if length is None else length
            elif name == b"x-request-id":
                offered = value if offered is None else offered
            elif name == b"inference-header-content-length" or (
                name == b"origin" and self.settings.cors_origins
            ):
                return None
        if (
            # A route that reads its own body takes any type; a JSON model, JSON.
            (route.body_model is None or content_type in _PLAIN_JSON)
            and length is not None
            and length.isdigit()
            and int(length) <= INLINE_BODY_BYTES
            and (not self.keys or accepts_key(Headers(scope=scope), self.keys))
        ):
            return int(length), "" if offered is None else offered.decode("latin-1")
        return None

    async def _answer(
        self,
        found: tuple[ORJSONRoute, DirectCall, Scope],
        taken: tuple[int, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        declared, offered = taken
        read: list[Message] = []
        chunks: list[bytes] = []
        received = 0
        clock = BodyClock(self.settings.limits, time.perf_counter())
        while True:
            try:
                message = await clock.receive(receive, received, declared)
            except BodyTimeout as exc:  # the stack answers it, as any error of the body
                await self.stack(scope, _replay(read, _raising(exc)), send)
                return
            read.append(message)
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                received += len(chunks[-1])
            # Gone, or more than it declared: the stack sees it so (and counts its bytes).
            if message["type"] != "http.request" or received > INLINE_BODY_BYTES:
                await self.stack(scope, _replay(read, receive), send)
                return
            if not message.get("more_body", False):
                break

        route, direct, child = found
        request_id = begin_request(scope, offered)
        start = time.perf_counter()
        scope.update(child)
        request = ORJSONRequest(scope, receive)
        request._body = b"".join(chunks)
        request.body_model = route.body_model
        send_with_id = IdentifiedSend(send, request_id)
        try:
            try:
                response = await direct(request)
                if response is None:
                    raise _Declined
            except _Declined:
                for key in child:
                    scope.pop(key, None)
                await self.stack(scope, _replay(read, receive), send)
                return
            except Exception as exc:
                await self._error(request, exc, send_with_id)
                return
            await response(scope, receive, send_with_id)
        finally:
            if send_with_id.status:
                end_request(scope, self.metrics, request_id, send_with_id.status, start)

    async def _error(self, request: ORJSONRequest, exc: Exception, send: Send) -> None:
        """Answer ``exc`` with the app's handler for it; one that only the handler for
        ``Exception`` takes is re-raised after its 500, for the server to log."""
        handled = next((cls for cls in type(exc).__mro__ if cls in self.handlers), None)
        if handled is None:
            raise exc
        response: Response = self.handlers[handled](request, exc)
        if inspect.isawaitable(response):
            response = await response
        await response(request.scope, request.receive, send)
        if handled is Exception:
            raise exc


def _replay(read: list[Message], receive: Receive) -> Receive:
    """``receive`` that first gives the messages already read."""
    pending = list(read)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def _raising(exc: Exception) -> Receive:
    """``receive`` that raises ``exc``."""

    async def raising() -> Message:
        raise exc

    return raising
