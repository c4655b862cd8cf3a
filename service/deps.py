"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from schemas.common import Encoding
from service.config import Settings
from service.device import DeviceManager
from service.errors import Unauthorized
from service.metrics import Metrics


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_devices(request: Request) -> DeviceManager:
    devices: DeviceManager = request.app.state.devices
    return devices


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
DevicesDep = Annotated[DeviceManager, Depends(get_devices)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EncodingDep = Annotated[
    Encoding,
    Query(
        description="`json` (default): tensors as nested lists. `b64`: every tensor in the "
        "response as `{shape, dtype, b64}` with base64 of its little-endian C-order bytes.",
    ),
]

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`.")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <key>`.")


async def require_api_key(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> None:
    """Refuse the request (401) unless it carries one of the configured keys.

    Does nothing when no keys are configured. Every key is compared in constant time.
    """
    if not settings.api_keys:
        return
    offered = api_key if api_key is not None else (bearer.credentials if bearer else None)
    if offered is None:
        raise Unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    matched = False
    for key in settings.api_keys:
        matched |= hmac.compare_digest(offered.encode(), key.encode())
    if not matched:
        raise Unauthorized("the API key is not valid", headers={"WWW-Authenticate": "Bearer"})


Authorized = Depends(require_api_key)
