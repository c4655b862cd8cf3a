"""What routes take from the app and the request.

Settings and the device manager live on ``app.state`` (built by ``create_app``, replaceable
in tests). Routes read them with :func:`settings_of` and :func:`devices_of` rather than
through ``Depends``: each FastAPI dependency costs tens of microseconds per request, which
is most of a tiny ``/tensor/ops`` call.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request

from schemas.v2 import ResponseEncoding
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
    ResponseEncoding,
    Query(
        description="`json` (default): tensors as nested lists. `b64`: every tensor in the "
        "response as `{shape, dtype, b64}` with base64 of its little-endian C-order bytes. "
        "`binary`: the Open Inference Protocol's binary data extension, an "
        "`application/octet-stream` body of the JSON (its length in the "
        "`Inference-Header-Content-Length` header) with every tensor as `{shape, dtype, "
        "binary_data_size}`, then the tensors' raw bytes in the same order.",
    ),
]
