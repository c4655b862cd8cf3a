"""Uploaded files: read under a byte limit, and the one-input rule of picture routes.

Every route that takes a file reads it here; the bytes go to ``ops`` (which decode pictures,
CSV text and zips under their own limits).
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from starlette.datastructures import UploadFile

from schemas.datasets import CSV_FIELD
from schemas.vision import ImageInputRequest
from service.api.forms import parse_body
from service.config import Settings
from service.errors import ErrorCode, InvalidInput, LimitExceeded
from service.ops.data.tables import Upload

M = TypeVar("M", bound=ImageInputRequest)

CHUNK_BYTES = 1 << 20

CSV_DOC = (
    "A CSV file (UTF-8, comma-separated) with a header row naming the columns; `target` "
    "names the target column (default: the last). Every cell must be a number, except class "
    "labels in the target column of a classification."
)

IMAGE_FIELD = "image"
IMAGE_DOC = (
    "A picture: PNG, JPEG, BMP, GIF, WebP or TIFF (instead of `input` or a base64 "
    "`image`). Grayscale [1, 1, H, W] float32 in [0, 255] by default; `mode` RGB keeps three "
    "channels."
)


async def read_file(upload: UploadFile, limit: str, allowed: int, what: str) -> Upload:
    """The file's bytes, read in chunks; past ``allowed`` bytes a 413 naming ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(CHUNK_BYTES):
        size += len(chunk)
        if size > allowed:
            raise LimitExceeded(limit, allowed, size, what)
        chunks.append(chunk)
    return Upload(b"".join(chunks), upload.filename or "")


async def read_csv_upload(files: dict[str, list[UploadFile]], settings: Settings) -> Upload | None:
    """The uploaded CSV (``file``), if any, up to ``max_csv_bytes`` (413 past it)."""
    uploads = files.get(CSV_FIELD)
    if not uploads:
        return None
    limits = settings.limits
    if limits.max_csv_bytes < limits.max_body_bytes:
        limit, allowed = "max_csv_bytes", limits.max_csv_bytes
    else:
        limit, allowed = "max_body_bytes", limits.max_body_bytes
    upload = await read_file(uploads[0], limit, allowed, "the CSV")
    return Upload(upload.data, upload.filename or "csv")


async def read_picture_input(
    request: Request, model: type[M], settings: Settings
) -> tuple[M, bytes | None]:
    """The body and the uploaded picture's bytes, with exactly one input given: ``input``
    (a tensor), ``image`` (base64) or an uploaded ``image`` file."""
    body, files = await parse_body(request, model, settings, {IMAGE_FIELD: 1})
    uploads = files.get(IMAGE_FIELD, [])
    data = None
    if uploads:
        limits = settings.limits
        data = (
            await read_file(uploads[0], "max_body_bytes", limits.max_body_bytes, "the image")
        ).data
    given = sum(value is not None for value in (body.input, body.image, data))
    if given > 1:
        raise InvalidInput(
            "give one input: `input` (a tensor), `image` (base64) or an uploaded `image` file",
            code=ErrorCode.AMBIGUOUS_INPUT,
        )
    if given == 0:
        raise InvalidInput(
            "no input: give `input` (a tensor), `image` (base64) or upload an `image` file",
            code=ErrorCode.MISSING_INPUT,
        )
    return body, data
