"""The FastAPI application: ``uvicorn service.main:app`` starts it with no configuration."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import __version__
from service.api.forms import add_form_models
from service.api.routes import (
    activations,
    autograd,
    benchmark,
    data,
    images,
    layers,
    regression,
    system,
    tensors,
    vision,
)
from service.calibration import Calibrations
from service.config import Settings
from service.device import DeviceManager
from service.errors import install_error_handlers
from service.metrics import Metrics
from service.middleware import ApiKeyMiddleware, RequestContextMiddleware
from service.ops.tensors.program import warm_up

DESCRIPTION = """
PyTorch's fundamentals over HTTP: tensors, autograd, layers, convolution, pooling,
activations, regression, data loading and a CPU/GPU matrix-multiply benchmark.

**Tensors** are sent as a nested list, `{"data", "shape", "dtype"}` or
`{"b64", "shape", "dtype"}`, and come back as `{"shape", "dtype", "data"}` (or `b64` with
`?encoding=b64`). Non-finite floats are the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.

**Errors** are always `{"error", "code", "details"}`. Limits (body bytes, elements, FLOPs,
time, requests in flight) are listed by `GET /info` and checked before memory is allocated.
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
        if settings.isolate:
            await devices.start_workers()
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
    app.state.calibrations = Calibrations(settings.calibration)

    routers = (
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
    )
    for router in routers:
        app.include_router(router)

    install_error_handlers(app)
    _customize_openapi(app, settings)
    if settings.api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
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
