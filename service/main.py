"""The FastAPI application: ``uvicorn service.main:app`` starts it with no configuration."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

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
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.devices = devices

    for router in (system.public, system.router, tensors.router, benchmark.router):
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
