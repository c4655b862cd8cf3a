"""Response helpers shared by the routers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import JSONResponse

from schemas.common import ErrorResponse
from service.api.binary import BINARY_MEDIA_TYPE, BinaryBody, body_view
from service.codec import dumps
from service.errors import FRAME_HEADER
from service.waits import PacedBodyResponse

_JSON_TYPE = b"application/json"


class FastJSONResponse(PacedBodyResponse, JSONResponse):
    """JSON written by orjson straight from numpy arrays (no pydantic pass over the data)."""

    media_type = "application/json"

    def __init__(
        self,
        content: Any = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        plain = headers is None and media_type is None
        if plain and type(content) is bytes and status_code == 200:
            # What Response.__init__ makes of it, without its general path (render, then
            # the header checks), which costs a tiny request more than its encoding.
            self.status_code, self.background, self.body = 200, background, content
            length = b"%d" % len(content)
            self.raw_headers = [(b"content-length", length), (b"content-type", _JSON_TYPE)]
            return
        super().__init__(content, status_code, headers, media_type, background)

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes | memoryview):
            return content  # type: ignore[return-value]  # memoryview: sent as it is
        return dumps(content)


class PngResponse(PacedBodyResponse):
    media_type = "image/png"


class BinaryResponse(PacedBodyResponse):
    """A framed body of the binary data extension (:mod:`service.api.binary`), sent from
    where the worker process wrote it (shared memory), a copied piece at a time
    (:func:`~service.waits.body_messages`)."""

    media_type = BINARY_MEDIA_TYPE

    def __init__(self, body: BinaryBody) -> None:
        self.framed = body  # keeps the shared memory mapped until the body is sent
        super().__init__(body_view(body), headers={FRAME_HEADER: str(body.json_length)})

    def render(self, content: Any) -> Any:
        return content


BINARY_RESPONSE_DOC: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
"""The 200 body with ``?encoding=binary``, in the OpenAPI document."""
FRAME_HEADER_DOC = {
    "description": "In a binary answer (`?encoding=binary`, or a V2 output asked for in "
    "binary): the length in bytes of the body's JSON part; the tensors' raw bytes follow it.",
    "schema": {"type": "integer", "minimum": 0},
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed body (not JSON).",
        401: "Missing or wrong API key (when keys are configured).",
        408: "The body did not arrive in time: `body_timeout_s`, plus a second for every "
        "`body_min_rate` bytes that arrived. The connection is closed.",
        415: "A body that is not JSON: send `Content-Type: application/json`.",
        413: "Over a limit: body size, elements, FLOPs or steps. `details` names the limit "
        "and the requested amount.",
        422: "Well-formed but invalid: shape mismatch, unknown name or op, a torch error, "
        "a device not available here.",
        429: "Too many requests in flight on the device, or no room for the body among those "
        "held at once (`max_inflight_body_bytes`); retry after `Retry-After` seconds.",
        503: "The device ran out of memory (freed again); retry smaller or elsewhere.",
        504: "Over the request time limit.",
    }
    return {status: {"model": ErrorResponse, "description": text[status]} for status in statuses}


PNG_MEDIA_TYPE = "image/png"

PANEL_HEADERS = {
    "X-Panel-Count": {
        "description": 'With `"format": "png"`: the number of panels.',
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-Panel-Layout": {
        "description": 'With `"format": "png"`: the grid, `<rows>x<columns>`.',
        "schema": {"type": "string", "pattern": r"^\d+x\d+$"},
    },
}


def png_or_json(
    model: type[Any], what: str, *, panels: bool = False, uploads: bool = False
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that answers JSON (``model``) or, with
    ``"format": "png"``, a picture: the compute errors (with what uploads add to 413 and 415
    when ``uploads``) and the 200 in both media types (with the panel headers when
    ``panels``)."""
    ok: dict[str, Any] = {
        "description": f'JSON, or with `"format": "png"` a PNG image: {what}.',
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
            PNG_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
    if panels:
        ok["headers"] = PANEL_HEADERS
    return {**COMPUTE_ERRORS, **(UPLOAD_ERRORS if uploads else {}), 200: ok}


def png_response(
    data: bytes | bytearray | memoryview, headers: dict[str, str] | None = None
) -> PngResponse:
    """A PNG picture as the response."""
    return PngResponse(data, media_type=PNG_MEDIA_TYPE, headers=headers)


COMPUTE_ERRORS = _errors(400, 401, 408, 413, 415, 422, 429, 503, 504)
READ_ERRORS = _errors(401)

UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {
        **COMPUTE_ERRORS[413],
        "description": "Over a limit: body size, elements, FLOPs, a picture's pixels (checked "
        "from its header, before decoding), the PNG's pixels, or a zip's entries and sizes "
        "(checked before decompressing). `details` names the limit and the requested amount.",
    },
    415: {
        **COMPUTE_ERRORS[415],
        "description": "The body is neither JSON nor multipart/form-data, or an uploaded or "
        "base64 file is not an allowed picture (PNG, JPEG, BMP, GIF, WebP, TIFF) or not a zip.",
    },
}
