"""Liveness, service information and metrics."""

from __future__ import annotations

import importlib.metadata

import torch
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from schemas.system import DeviceInfo, HealthResponse, InfoResponse
from service import __version__
from service.api.responses import READ_ERRORS
from service.api.routing import ORJSONRoute
from service.deps import devices_of, metrics_of, settings_of

public = APIRouter(route_class=ORJSONRoute, tags=["system"])
router = APIRouter(route_class=ORJSONRoute, tags=["system"], responses=READ_ERRORS)


@public.get("/health", operation_id="health", summary="Liveness")
async def health() -> HealthResponse:
    """`{"status": "ok"}` while the service answers. Never needs an API key."""
    return HealthResponse(status="ok")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@router.get("/info", operation_id="info", summary="Versions, devices and limits")
def info(request: Request) -> InfoResponse:
    """Service and library versions, each device (with CUDA memory), the default device and
    the limits in force."""
    settings, devices = settings_of(request), devices_of(request)
    return InfoResponse(
        name="torchlab",
        version=__version__,
        torch_version=torch.__version__,
        torchvision_version=_version("torchvision"),
        cuda_available=devices.cuda_count > 0,
        cpu_threads=torch.get_num_threads(),
        default_device=str(devices.default),
        devices=[DeviceInfo.model_validate(d) for d in devices.info()],
        limits=settings.limits.model_dump(),
        throughput=request.app.state.calibrations.report(),
        auth_required=bool(settings.api_keys),
    )


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format.",
        }
    },
)
def metrics(request: Request) -> Response:
    """Requests by route and status, latency histograms, refusals by limit, compute in flight
    and queued, in the Prometheus text format. With several server processes on one port
    (`uvicorn --workers N`), the sum over all of them, whichever one answers."""
    return Response(metrics_of(request).exposition(), media_type=CONTENT_TYPE_LATEST)
