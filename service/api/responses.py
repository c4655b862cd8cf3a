"""Response helpers shared by the routers."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from schemas.common import ErrorResponse
from service.codec import dumps


class FastJSONResponse(JSONResponse):
    """JSON written by orjson straight from numpy arrays (no pydantic pass over the data)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return dumps(content)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed body (not JSON).",
        401: "Missing or wrong API key (when keys are configured).",
        415: "A body that is not JSON: send `Content-Type: application/json`.",
        413: "Over a limit: body size, elements, FLOPs or steps. `details` names the limit "
        "and the requested amount.",
        422: "Well-formed but invalid: shape mismatch, unknown name or op, a torch error, "
        "a device not available here.",
        429: "Too many requests in flight on the device; retry after `Retry-After` seconds.",
        503: "The device ran out of memory (freed again); retry smaller or elsewhere.",
        504: "Over the request time limit.",
    }
    return {status: {"model": ErrorResponse, "description": text[status]} for status in statuses}


PNG_MEDIA_TYPE = "image/png"


def json_or_png(model: type[Any], what: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI for a 200 that is JSON (``model``) or, with ``"format": "png"``, a picture."""
    return {
        200: {
            "description": f'JSON, or with `"format": "png"` a PNG image: {what}.',
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                PNG_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


def png_response(data: bytes, headers: dict[str, str] | None = None) -> Response:
    """A PNG picture as the response."""
    return Response(data, media_type=PNG_MEDIA_TYPE, headers=headers)


COMPUTE_ERRORS = _errors(400, 401, 413, 415, 422, 429, 503, 504)
READ_ERRORS = _errors(401)
