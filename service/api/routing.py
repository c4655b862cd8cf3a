"""The route class every router uses: JSON request bodies parsed by orjson."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from service.api.forms import INLINE_BODY_BYTES


class ORJSONRequest(Request):
    """A request whose JSON body is parsed by orjson (several times faster on big tensors)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # Integers beyond 64 bits arrive as floats, as in JavaScript's JSON.parse.
            raw = await self.body()
            if len(raw) > INLINE_BODY_BYTES:  # megabytes: parse off the event loop
                self._json = await run_in_threadpool(orjson.loads, raw)
            else:
                self._json = orjson.loads(raw)
        return self._json


class ORJSONRoute(APIRoute):
    """Hands its handler an :class:`ORJSONRequest`. Routers must be created with it
    (``APIRouter(route_class=ORJSONRoute)``): setting it afterwards changes nothing."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(ORJSONRequest(request.scope, request.receive))

        return orjson_handler
