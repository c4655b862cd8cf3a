"""Routes of this domain (filled in by the issue that builds them)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.responses import COMPUTE_ERRORS
from service.api.routing import ORJSONRoute

router = APIRouter(route_class=ORJSONRoute, tags=["regression"], responses=COMPUTE_ERRORS)
