"""The FastAPI application: ``uvicorn service.main:app`` starts it with no configuration."""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import torch
from fastapi import FastAPI, Request
from fastapi.telemetry import TelemetryConfig
from starlette.responses import Response
from starlette.types import ASGIApp

from service import __version__
from service.api.forms import add_form_models
from service.api.lane import FastLane
from service.api.routes import (
    activations,
    autograd,
    benchmark,
    data,
    docs,
    images,
    layers,
    regression,
    system,
    tensors,
    v2,
    vision,
)
from service.api.routing import StaticPathIndex, include_routers
from service.calibration import Calibrations
from service.config import Limits, Settings
from service.deps import AppState
from service.device import DeviceManager
from service.errors import ServiceError, install_error_handlers
from service.metrics import Metrics
from service.middleware import ApiKeyMiddleware, ContractCORSMiddleware, RequestContextMiddleware
from service.ops.context import ComputeContext
from service.ops.data.handlers import warm_up_images
from service.ops.tensors.program import warm_up

DESCRIPTION = """
PyTorch's fundamentals over HTTP: tensors, autograd, layers, convolution, pooling,
activations, regression, data loading and a CPU/GPU matrix-multiply benchmark.
The same document as one page: [ReDoc](/redoc). Versions, devices and limits:
[`GET /info`](/info); Prometheus metrics: [`GET /metrics`](/metrics).

**Trying a route.** Open it, press *Try it out*, then *Execute*: the example shown is a valid
request. Routes that take a file (`/conv`, `/pool`, `/data/images`, and a CSV on
`/regress/linear`, `/regress/logistic`, `/data/loader`) offer `multipart/form-data` above
the body: it shows a file picker, and every other field may stay empty or hold a plain
value (`png`) or JSON text (`["edge", "random"]`). With `"format": "png"`, `/activate`,
`/conv`, `/pool`, `/regress/linear`, `/regress/logistic` and `/data/images` answer a
picture, shown here. When the service has API keys, *Authorize* takes either form of key.

**Tensors** go in as a nested list (`[[1, 2], [3, 4]]`: integers become `int64`, any float
`float32`), as `{"data", "shape", "dtype"}`, or in binary as `{"b64", "shape", "dtype"}`:
base64 of the tensor's little-endian C-order bytes. They come back as
`{"shape", "dtype", "data"}`, or as `{"shape", "dtype", "b64"}` with `?encoding=b64` (the
`encoding` parameter). `dtype` names are torch's (`float32`, `int64`, ...) or the Open
Inference Protocol's (`FP32`, `INT64`, ...). Non-finite floats are the strings `"NaN"`,
`"Infinity"`, `"-Infinity"`. This page is JavaScript, which sends `1.0` as `1`: give a
`dtype` to keep such a tensor floating. Every compute request may carry `device` (`auto`,
`cpu`, `cuda`, `cuda:N`) and `seed`; every compute response carries `device` and
`elapsed_ms`.

**Errors** are always `{"error": "...", "code": "stable_code", "details": {...}}`: 400 a
malformed body, 401 a missing or wrong API key, 404 an unknown route, 413 over a limit
(`details` holds the `limit`, the amount `allowed` and the amount `requested`), 415 a body
or file of a kind the route does not take, 422 invalid input (`details` says what and
where), 408 a body that did not arrive in time, 429 every compute slot busy or no room for
the body among those held at once (retry after `Retry-After` seconds), 503 the device out
of memory, 504 over the time limit. The limits (body bytes, elements, FLOPs, time, requests
and bodies in flight) are listed by `GET /info` and checked before memory is allocated.
Every response carries an `X-Request-ID`.
"""


def _customize_openapi(app: FastAPI, settings: Settings) -> None:
    """Add what FastAPI cannot infer: the models of JSON-or-multipart bodies and, when keys
    are configured, the two ways to send one (so the docs page offers "Authorize")."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            add_form_models(schema)
            if settings.api_keys:
                _declare_api_keys(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare_api_keys(schema: dict[str, Any]) -> None:
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <key>`",
        },
        "apiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "`X-API-Key: <key>`",
        },
    }
    for path, item in schema["paths"].items():
        if path not in ApiKeyMiddleware.OPEN_PATHS:
            for operation in item.values():
                operation["security"] = [{"bearer": []}, {"apiKey": []}]


OPENAPI_BODIES = 8
"""Serialized schemas kept, one per ``root_path`` (the server's, set where it starts)."""


class TorchlabApp(FastAPI):
    """FastAPI with :class:`~service.api.lane.FastLane` in front of its layers, unless a
    layer the lane does not stand in for was added (or its router has no
    :class:`~service.api.routing.StaticPathIndex`, which finds the lane's routes); and its
    OpenAPI schema served as bytes written once (:meth:`openapi_body`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = AppState()

    def setup(self) -> None:
        url, self.openapi_url = self.openapi_url, None  # FastAPI's route: ours instead
        try:
            super().setup()
        finally:
            self.openapi_url = url
        if url:
            self.add_route(url, self._openapi_route, include_in_schema=False)

    def openapi_body(self, root_path: str = "") -> bytes:
        """The schema as JSON, with ``root_path`` first among its servers as FastAPI serves
        it; written once. FastAPI encodes the 410 KB schema on every call, 7 ms of the event
        loop each (a burst of 16 held it for 100 ms)."""
        bodies: dict[str, bytes] = self.__dict__.setdefault("_openapi_bodies", {})
        body = bodies.get(root_path)
        if body is None:
            schema = self.openapi()
            urls = {server.get("url") for server in schema.get("servers", [])}
            if root_path and self.root_path_in_servers and root_path not in urls:
                schema = {**schema, "servers": [{"url": root_path}, *schema.get("servers", [])]}
            body = orjson.dumps(schema)
            if len(bodies) < OPENAPI_BODIES:
                bodies[root_path] = body
        return body

    async def _openapi_route(self, request: Request) -> Response:
        root_path = request.scope.get("root_path", "").rstrip("/")
        return Response(self.openapi_body(root_path), media_type="application/json")

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        index = self.router.middleware_stack
        if not isinstance(index, StaticPathIndex) or any(
            m.cls not in LANE_KNOWS for m in self.user_middleware
        ):
            return stack
        state = self.state
        return FastLane(stack, index, self.exception_handlers, state.settings, state.metrics)


NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's native telemetry off (``Settings.opentelemetry`` false)."""

LANE_KNOWS: tuple[object, ...] = (
    RequestContextMiddleware,
    ApiKeyMiddleware,
    ContractCORSMiddleware,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings default to the ``TORCHLAB_*`` environment."""
    settings = settings or Settings()
    # Our loggers at the configured level; other libraries keep theirs (root: warnings).
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("torchlab").setLevel(settings.log_level.upper())
    metrics = Metrics()
    devices = DeviceManager(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm_up()
        # torchvision and scikit-learn take seconds to import; the first /data/images or
        # /datasets call would pay for it.
        importlib.import_module("torchvision.transforms.v2")
        importlib.import_module("sklearn.datasets")
        devices.start()  # CUDA is probed here, never when this module is imported
        for device in devices.available:  # before the first request, not during it
            app.state.calibrations.get(torch.device(device))
        cpu = torch.device("cpu")
        # Under the built-in limits, not this deployment's: it is no caller's request (and a
        # warm-up refused all the same only leaves the first request to pay).
        with contextlib.suppress(ServiceError):
            limits = Limits.model_construct()
            warm_up_images(ComputeContext(limits, cpu, app.state.calibrations.get(cpu)))
        if settings.isolate:
            await devices.start_workers()
        if isinstance(app, TorchlabApp):  # built now, not by the first GET /openapi.json
            app.openapi_body(app.root_path.rstrip("/"))  # (0.4 s of the event loop)
        # Everything loaded so far (torch, scikit-learn, the schemas: about half a million
        # objects) lives as long as the process. Left to the collector, every full
        # collection walks it all (about 270 ms, with /health unanswered); frozen, it is
        # never walked again.
        gc.collect()
        gc.freeze()
        logging.getLogger("torchlab").info(
            "torchlab %s on %s (devices: %s)",
            __version__,
            devices.default,
            ", ".join(devices.available),
        )
        yield
        devices.close()

    app = TorchlabApp(
        title="torchlab",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs and /redoc come from the docs router, with their files served from here.
        docs_url=None,
        redoc_url=None,
        swagger_ui_parameters=docs.SWAGGER_UI_PARAMETERS,
        telemetry=None if settings.opentelemetry else NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.devices = devices
    app.state.calibrations = Calibrations(settings.calibration)

    routers = (
        docs.router,
        system.public,
        system.router,
        benchmark.router,
        tensors.router,
        autograd.router,
        activations.router,
        layers.router,
        vision.router,
        regression.router,
        data.router,
        images.router,
        v2.router,
    )
    include_routers(app, routers)

    install_error_handlers(app)
    _customize_openapi(app, settings)
    if settings.api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
    if settings.cors_origins:
        app.add_middleware(
            ContractCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, settings=settings, metrics=metrics)
    return app


app = create_app()
