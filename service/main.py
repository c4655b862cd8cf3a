"""The FastAPI application: ``uvicorn service.main:app`` starts it with no configuration."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from service import __version__
from service.api.routes import benchmark, system, tensors
from service.config import Settings
from service.device import DeviceManager
from service.errors import install_error_handlers
from service.metrics import Metrics
from service.middleware import RequestContextMiddleware
from service.ops.program import warm_up

DESCRIPTION = """
PyTorch's fundamentals over HTTP: tensors, autograd, layers, convolution, pooling,
activations, regression, data loading and a CPU/GPU matrix-multiply benchmark.

**Tensors** are sent as a nested list, `{"data", "shape", "dtype"}` or
`{"b64", "shape", "dtype"}`, and come back as `{"shape", "dtype", "data"}` (or `b64` with
`?encoding=b64`). Non-finite floats are the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.

**Errors** are always `{"error", "code", "details"}`. Limits (body bytes, elements, FLOPs,
time, requests in flight) are listed by `GET /info` and checked before memory is allocated.
"""


class ORJSONRequest(Request):
    """A request whose JSON body is parsed by orjson (several times faster on big tensors)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class ORJSONRoute(APIRoute):
    """Routes that hand their handlers an :class:`ORJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(ORJSONRequest(request.scope, request.receive))

        return orjson_handler


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings default to the ``TORCHLAB_*`` environment."""
    settings = settings or Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    metrics = Metrics()
    devices = DeviceManager(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm_up()
        devices.start()
        logging.getLogger("torchlab").info(
            "torchlab %s on %s (devices: %s)",
            __version__,
            devices.default,
            ", ".join(devices.available),
        )
        yield
        devices.close()

    app = FastAPI(
        title="torchlab",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.router.route_class = ORJSONRoute
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.devices = devices

    for module in (system, tensors, benchmark):
        for router in ([module.public] if hasattr(module, "public") else []) + [module.router]:
            router.route_class = ORJSONRoute
            app.include_router(router)

    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, settings=settings, metrics=metrics)
    return app


app = create_app()
