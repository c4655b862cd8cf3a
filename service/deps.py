"""What routes take from the app and the request.

Settings and the device manager live on ``app.state`` (built by ``create_app``, replaceable
in tests). Routes read them with :func:`settings_of` and :func:`devices_of` rather than
through ``Depends``: each FastAPI dependency costs tens of microseconds per request, which
is most of a tiny ``/tensor/ops`` call.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request

from schemas.common import Encoding
from service.config import Settings
from service.device import DeviceManager
from service.metrics import Metrics


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def devices_of(request: Request) -> DeviceManager:
    devices: DeviceManager = request.app.state.devices
    return devices


def metrics_of(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


EncodingDep = Annotated[
    Encoding,
    Query(
        description="`json` (default): tensors as nested lists. `b64`: every tensor in the "
        "response as `{shape, dtype, b64}` with base64 of its little-endian C-order bytes.",
    ),
]
