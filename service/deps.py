"""What routes take from the app and the request.

Settings and the device manager live on ``app.state`` (built by ``create_app``, replaceable
in tests). Routes read them with :func:`settings_of` and :func:`devices_of` rather than
through ``Depends``: each FastAPI dependency costs tens of microseconds per request, which
is most of a tiny ``/tensor/ops`` call.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from starlette.datastructures import State

from schemas.v2 import ResponseEncoding
from service.config import Settings
from service.device import DeviceManager
from service.metrics import Metrics


class AppState(State):
    """The app's ``state``, its values also plain attributes of the object: read without
    ``State.__getattr__`` (a Python call for each of the handful a request reads, a
    microsecond and a half of a tiny request). Set and deleted as a ``State``'s are, by
    attribute or by item."""

    def __setattr__(self, key: str, value: Any) -> None:
        super().__setattr__(key, value)
        object.__setattr__(self, key, value)

    def __delattr__(self, key: str) -> None:
        super().__delattr__(key)
        object.__delattr__(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.__setattr__(key, value)

    def __delitem__(self, key: str) -> None:
        self.__delattr__(key)


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
