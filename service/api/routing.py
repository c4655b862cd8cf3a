"""The route class every router uses: JSON request bodies parsed by orjson, and large ones
parsed and validated off the event loop."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from service.api.bodies import (
    PROCESS_BODY_BYTES,
    BodyJob,
    BodyResult,
    compact_body,
    model_path,
)
from service.api.forms import INLINE_BODY_BYTES
from service.errors import BODY_ERRORS_KEY, ServiceError


def _parse_and_validate(raw: bytes, model: type[BaseModel]) -> BaseModel | list[dict[str, Any]]:
    data = orjson.loads(raw)  # a JSONDecodeError is FastAPI's 400, as on the loop
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return [
            {**error, "loc": ("body", *error["loc"])}
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]


async def compact_in_worker(request: Request, raw: bytes, model: type[BaseModel]) -> bytes | None:
    """The body with its large tensors in base64, read by a worker process
    (:mod:`service.api.bodies`); ``None`` when it is invalid, its errors left in the scope.
    Without worker processes (``isolate`` off) the body is returned as it is."""
    settings = request.app.state.settings
    if not settings.isolate:
        return raw
    job = BodyJob(raw, model_path(model), settings.limits.max_elements)
    result: BodyResult = await request.app.state.devices.run_body(compact_body, job)
    if result.json_error is not None:
        message, position = result.json_error
        raise json.JSONDecodeError(message, "", position)
    if result.errors is not None:
        request.scope[BODY_ERRORS_KEY] = result.errors
        return None
    assert result.body is not None
    return result.body


class ORJSONRequest(Request):
    """A request whose JSON body is parsed by orjson (several times faster on big tensors).

    A body over :data:`INLINE_BODY_BYTES` is parsed *and validated* in a thread: megabytes
    of JSON (or of tiny elements, or a 20 MB key) never stall the event loop. The validated
    model is handed to FastAPI, which accepts an instance of its own model as it is.
    """

    body_model: type[BaseModel] | None = None

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # Integers beyond 64 bits arrive as floats, as in JavaScript's JSON.parse.
            raw = await self.body()
            if len(raw) > PROCESS_BODY_BYTES and self.body_model is not None:
                try:
                    compact = await compact_in_worker(self, raw, self.body_model)
                except ServiceError as exc:  # the codec's or a busy pool's answer
                    self.scope[BODY_ERRORS_KEY] = exc
                    self._json = None
                    return None
                if compact is None:
                    self._json = None  # the validation errors are in the scope
                    return None
                raw = compact
            if len(raw) <= INLINE_BODY_BYTES:
                self._json = orjson.loads(raw)
            elif self.body_model is None:
                self._json = await run_in_threadpool(orjson.loads, raw)
            else:
                result = await run_in_threadpool(_parse_and_validate, raw, self.body_model)
                if isinstance(result, list):
                    self.scope[BODY_ERRORS_KEY] = result
                    self._json = None  # FastAPI finds no body; the handler map answers
                else:
                    self._json = result
        return self._json


class ORJSONRoute(APIRoute):
    """Hands its handler an :class:`ORJSONRequest`. Routers must be created with it
    (``APIRouter(route_class=ORJSONRoute)``): setting it afterwards changes nothing."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        annotation = self.body_field.field_info.annotation if self.body_field else None
        model = annotation if isinstance(annotation, type) else None
        body_model = model if model is not None and issubclass(model, BaseModel) else None

        async def orjson_handler(request: Request) -> Response:
            wrapped = ORJSONRequest(request.scope, request.receive)
            wrapped.body_model = body_model
            return await handler(wrapped)

        return orjson_handler
