"""The route class every router uses: JSON request bodies parsed by orjson, large ones
parsed and validated off the event loop, and binary ones (the Open Inference Protocol's
binary data extension, :mod:`service.api.binary`) read into tensors before FastAPI sees
their JSON."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.utils import request_params_to_args
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from service.api.binary import (
    FrameReader,
    frame_length,
    json_part_error,
    loads_json_part,
)
from service.api.bodies import (
    PROCESS_BODY_BYTES,
    Bytes,
    Tensors,
    compact_in_worker,
    goes_to_worker,
    place_tensors,
)
from service.api.forms import INLINE_BODY_BYTES
from service.codec import loads_json
from service.errors import BODY_ERRORS_KEY, ServiceError, without_frames


def _parse_and_validate(
    raw: Bytes, model: type[BaseModel], tensors: Tensors = ()
) -> BaseModel | list[dict[str, Any]]:
    data = loads_json(raw)  # a JSONDecodeError is FastAPI's 400, as on the loop
    place_tensors(data, tensors)
    return _validate(data, model)


def _validate(data: Any, model: type[BaseModel]) -> BaseModel | list[dict[str, Any]]:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return [
            {**error, "loc": ("body", *error["loc"])}
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]


class ORJSONRequest(Request):
    """A request whose JSON body is parsed by orjson (several times faster on big tensors).

    A body over :data:`INLINE_BODY_BYTES` is parsed *and validated* in a thread: megabytes
    of JSON (or of tiny elements, or a 20 MB key) never stall the event loop. The validated
    model is handed to FastAPI, which accepts an instance of its own model as it is.
    """

    body_model: type[BaseModel] | None = None

    async def read_frame(self, json_length: int) -> None:
        """Read a binary body: its JSON part parsed (off the loop when large, as any JSON
        body), then its tensors attached as views of the binary part. FastAPI then finds
        the JSON as the body, whatever the ``Content-Type`` said."""
        reader = FrameReader(self, json_length)
        raw: Bytes = await reader.json_text()
        self._body = raw  # type: ignore[assignment]  # the JSON text read so far
        self._headers = Headers(
            raw=[(k, v) for k, v in self.scope["headers"] if k != b"content-type"]
            + [(b"content-type", b"application/json")]
        )
        if len(raw) > PROCESS_BODY_BYTES and self.body_model is not None:
            try:
                # In base64: the binary part's tensors take the placeholders' way in.
                compact = await compact_in_worker(self, raw, self.body_model, tensors_out=False)
            except json.JSONDecodeError as exc:
                raise json_part_error(len(raw), exc.msg, exc.pos) from exc
            if compact is None:
                self._json = None  # the validation errors are in the scope
                return
            raw = compact[0]
        if len(raw) <= INLINE_BODY_BYTES:
            data, refs = loads_json_part(raw)
        else:
            data, refs = await run_in_threadpool(loads_json_part, raw)
        await reader.attach(refs)
        if len(raw) <= INLINE_BODY_BYTES or self.body_model is None:
            self._json = data
            return
        result = await run_in_threadpool(_validate, data, self.body_model)
        if isinstance(result, list):
            self.scope[BODY_ERRORS_KEY] = result
            self._json = None
        else:
            self._json = result

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # Integers beyond 64 bits arrive as floats, as in JavaScript's JSON.parse.
            raw: Bytes = await self.body()
            tensors: Tensors = ()
            if (
                self.body_model is not None
                and len(raw) > PROCESS_BODY_BYTES
                and await goes_to_worker(raw)
            ):
                try:
                    compact = await compact_in_worker(self, raw, self.body_model, tensors_out=True)
                except ServiceError as exc:  # the codec's or a busy pool's answer
                    self.scope[BODY_ERRORS_KEY] = without_frames(exc)
                    self._json = None
                    return None
                if compact is None:
                    self._json = None  # the validation errors are in the scope
                    return None
                raw, tensors = compact
            if len(raw) <= INLINE_BODY_BYTES:
                self._json = loads_json(raw)
                if tensors:
                    place_tensors(self._json, tensors)
            elif self.body_model is None:
                self._json = await run_in_threadpool(loads_json, raw)
            else:
                result = await run_in_threadpool(_parse_and_validate, raw, self.body_model, tensors)
                if isinstance(result, list):
                    self.scope[BODY_ERRORS_KEY] = result
                    self._json = None  # FastAPI finds no body; the handler map answers
                else:
                    self._json = result
        return self._json


_FASTAPI_SCOPE_KEY = "fastapi"
"""Where FastAPI keeps its own state in a scope (an included router's route context, which
its ``APIRoute.matches`` follows)."""

TELEMETRY_SCOPE_KEY = "fastapi.telemetry"
"""In the scope of a request that FastAPI's native OpenTelemetry follows: its router then
picks the route, and names the request's span after it."""

DirectCall = Callable[[ORJSONRequest], Coroutine[Any, Any, Response | None]]


class ORJSONRoute(APIRoute):
    """Hands its handler an :class:`ORJSONRequest`. Routers must be created with it
    (``APIRouter(route_class=ORJSONRoute)``): setting it afterwards changes nothing."""

    body_model: type[BaseModel] | None
    direct: DirectCall | None
    """The route's direct call (:func:`_direct_call`), for :mod:`service.api.lane`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        annotation = self.body_field.field_info.annotation if self.body_field else None
        model = annotation if isinstance(annotation, type) else None
        body_model = model if model is not None and issubclass(model, BaseModel) else None

        has_body = self.body_field is not None
        self.body_model = body_model
        self.direct = _direct_call(self, body_model)

        async def orjson_handler(request: Request) -> Response:
            wrapped = ORJSONRequest(request.scope, request.receive)
            wrapped.body_model = body_model
            if has_body:
                json_length = frame_length(wrapped.headers)
                if json_length is not None:
                    await wrapped.read_frame(json_length)
            return await handler(wrapped)

        return orjson_handler


def _direct_call(route: APIRoute, body_model: type[BaseModel] | None) -> DirectCall | None:
    """The common cases of a route that returns a :class:`Response` and takes the request,
    optional query parameters and either one JSON model or path parameters (the route then
    reads its own body), without FastAPI's general machinery (which costs more than a tiny
    request's own work): a JSON body valid for the model, or path parameters valid for
    theirs, go straight to the endpoint with the query parameters' defaults. An invalid
    body or parameter gets ``None`` and goes the general way, which words its errors
    exactly as before. ``None`` for a route of another shape. :mod:`service.api.lane`
    decides which requests may be called so (a small body, no query string)."""
    dependant = route.dependant
    call = dependant.call
    with_body = body_model is not None and len(dependant.body_params) == 1
    with_path = body_model is None and not dependant.body_params and bool(dependant.path_params)
    if (
        not (with_body or with_path)
        or call is None
        or route._embed_body_fields
        or dependant.request_param_name is None
        or (with_body and dependant.path_params)
        or dependant.header_params
        or dependant.cookie_params
        or dependant.dependencies
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or any(field.field_info.is_required() for field in dependant.query_params)
        or not inspect.iscoroutinefunction(call)
    ):
        return None
    try:
        returns = typing.get_type_hints(call).get("return")
    except (NameError, TypeError):  # a hint that cannot be resolved here
        return None
    if not (isinstance(returns, type) and issubclass(returns, Response)):
        return None
    request_name = dependant.request_param_name
    defaults = {field.name: field.field_info.get_default() for field in dependant.query_params}

    if with_path:
        fields = dependant.path_params
        # Plain strings (no constraint, no alias) are taken as they come, as FastAPI's
        # validation would take them; any other parameter is validated by FastAPI's code.
        plain = all(
            field.field_info.annotation is str
            and not field.field_info.metadata
            and field.alias == field.name
            for field in fields
        )

        async def direct_with_path(request: ORJSONRequest) -> Response | None:
            if plain:
                values = dict(request.path_params)
            else:
                values, errors = request_params_to_args(fields, request.path_params)
                if errors:  # FastAPI's way words them
                    return None
            response: Response = await call(**defaults, **values, **{request_name: request})
            return response

        return direct_with_path

    assert body_model is not None
    body_name = dependant.body_params[0].name

    async def direct(request: ORJSONRequest) -> Response | None:
        raw = getattr(request, "_body", None)
        try:
            if isinstance(raw, bytes) and len(raw) <= INLINE_BODY_BYTES:
                # Read whole, and small (the lane's case): what json() would do, at once.
                data = request._json = loads_json(raw)
            else:
                data = await request.json()
            body = body_model.model_validate(data)
        except ValueError:  # not JSON, or not valid (ValidationError): FastAPI's way words it
            return None
        response: Response = await call(**defaults, **{body_name: body, request_name: request})
        return response

    return direct


def routes_by_segments(routes: Sequence[BaseRoute]) -> dict[int, list[BaseRoute]]:
    """The routes that may match a path of each number of ``/``, in their order: an APIRoute
    of that many, and every other route (another kind, or one with a parameter that may hold
    a ``/``, may match a path of any length)."""
    anywhere = {
        id(route)
        for route in routes
        if not isinstance(route, APIRoute)
        or any(isinstance(c, PathConvertor) for c in route.param_convertors.values())
    }
    lengths = {route.path.count("/") for route in routes if isinstance(route, APIRoute)}
    return {
        length: [
            route
            for route in routes
            if id(route) in anywhere
            or (isinstance(route, APIRoute) and route.path.count("/") == length)
        ]
        for length in lengths
    }


def match_by_segments(
    by_segments: dict[int, list[BaseRoute]], scope: Scope
) -> tuple[BaseRoute, Scope] | None:
    """The route the router would take for a path with parameters (the first to match it in
    full, with its child scope), found among the routes of its length; ``None`` when none
    matches in full."""
    path = scope["path"]
    # A route whose pattern misses the path is no match (Starlette's ``Route.matches``, and
    # FastAPI's where no included router's context is in the scope): the pattern is tried
    # first, without the matching's own cost (about 2 µs a route).
    plain = _FASTAPI_SCOPE_KEY not in scope
    for candidate in by_segments.get(path.count("/"), ()):
        if plain and isinstance(candidate, Route) and not candidate.path_regex.match(path):
            continue
        match, child_scope = candidate.matches(scope)
        if match is Match.FULL:
            return candidate, child_scope
    return None


class StaticPathIndex:
    """The app router's front: a request for a path without parameters goes straight to its
    route by a dictionary lookup, and one for a path with parameters is matched only against
    the routes of as many segments (in the router's order: the first that matches wins, as
    in the router). Any other (a method the path does not take, no such path, a path no
    indexed route matches) goes through the router's own matching, which answers it as
    before. FastAPI's matching tries each route's pattern in turn, which on a tiny request
    cost more than the route's own work (32 patterns before ``/v2/models/{name}/infer``)."""

    def __init__(self, router: APIRouter) -> None:
        self.router = router
        self.index: dict[str, dict[str, APIRoute]] = {}
        for route in router.routes:
            if isinstance(route, APIRoute) and not route.param_convertors:
                methods = self.index.setdefault(route.path, {})
                for method in route.methods or ():
                    methods.setdefault(method, route)  # the first route of a path wins
        self.by_segments = routes_by_segments(router.routes)

    def find(self, scope: Scope) -> tuple[APIRoute, Scope] | None:
        """The route the router would give an HTTP request to, with what it adds to the
        scope; ``None`` where the router's own way must answer."""
        if scope.get("root_path") or TELEMETRY_SCOPE_KEY in scope:
            return None
        route = self.index.get(scope["path"], {}).get(scope["method"])
        if route is not None:
            return route, {"endpoint": route.endpoint, "path_params": {}, "route": route}
        found = match_by_segments(self.by_segments, scope)
        if found is not None and isinstance(found[0], APIRoute):  # else the router's way
            return found[0], found[1]
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.find(scope) if scope["type"] == "http" else None
        if found is None:
            if scope["type"] == "http" and scope["method"] == "HEAD":
                await self._head(scope, receive, send)
                return
            await self.router.app(scope, receive, send)
            return
        scope.setdefault("router", self.router)
        scope.update(found[1])
        await found[0].handle(scope, receive, send)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        """HEAD is GET without the body (RFC 9110 9.3.2), on every GET route: the server
        leaves the body out, as the method in its own copy of the scope is still HEAD."""
        asked = {**scope, "method": "GET"}
        try:
            await self(asked, receive, send)
        finally:
            if "route" in asked:  # the route the request is counted by
                scope["route"] = asked["route"]


def include_routers(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Add every route of ``routers`` to the app's own router, then index the paths without
    parameters. The routers are plain (no prefix, dependencies or lifespan of their own:
    their tags and responses are already on their routes), so the routes are the same as
    ``include_router`` would give, without a nested router to match through on every
    request."""
    for router in routers:
        assert not router.prefix and not router.dependencies and not router.on_startup
        app.router.routes.extend(router.routes)
    app.router.middleware_stack = StaticPathIndex(app.router)
