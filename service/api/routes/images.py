"""``POST /data/images``: labelled pictures through a ``torchvision.transforms.v2`` pipeline
and a ``DataLoader`` (chapter 7.2)."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.images import MAX_IMAGES, DataImagesRequest, DataImagesResponse
from service.api.compute import compute_context, run_compute
from service.api.events import streams, with_events
from service.api.forms import json_or_form_body, parse_body
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse, png_or_json
from service.api.routing import ORJSONRoute
from service.api.uploads import read_file
from service.deps import EncodingDep, settings_of
from service.ops.data.handlers import compute_data_images, prepare_data_images

router = APIRouter(route_class=ORJSONRoute, tags=["images"], responses=COMPUTE_ERRORS)

UPLOADS = {
    "images": "Pictures (PNG, JPEG, BMP, GIF, WebP or TIFF), one file each, in the class "
    "`images` unless `labels` names one per file.",
    "archive": "A zip in ImageFolder layout: `class_name/file.png`.",
}

_PNG_DOC = "`torchvision.utils.make_grid` of the first batch, each picture labelled with its class"


@router.post(
    "/data/images",
    operation_id="data_images",
    summary="Image datasets, torchvision transforms and a DataLoader batch",
    response_model=DataImagesResponse,
    response_class=FastJSONResponse,
    responses=with_events(png_or_json(DataImagesResponse, _PNG_DOC, panels=True, uploads=True)),
    openapi_extra=json_or_form_body(DataImagesRequest, UPLOADS, frozenset({"images"})),
)
async def data_images(request: Request, encoding: EncodingDep = "json") -> Response:
    """A set of labelled pictures — built in (`digits`, `sample_images`), uploaded (`images`)
    or a zip in `ImageFolder` layout (`archive`) — each sent through the `transforms` (a
    list of allow-listed `torchvision.transforms.v2` classes with their parameters) under
    `seed`, then a `DataLoader` of `batch_size`.

    JSON: `classes`, `class_to_idx`, `counts` per class, the first batch's shape and dtype
    (and with `include_data` its tensors), and the per-channel `mean` and `std` over the set
    (what `Normalize` wants). `"format": "png"`: a grid of the transformed first batch with
    each picture's class. Zip archives are read in memory with their sizes and names checked
    before anything is decompressed.
    """
    settings = settings_of(request)
    body, files = await parse_body(
        request, DataImagesRequest, settings, {"images": MAX_IMAGES, "archive": 1}
    )
    stream = streams(request, png=body.format == "png", binary=encoding == "binary")
    limit = settings.limits.max_body_bytes
    uploads = [
        await read_file(f, "max_body_bytes", limit, "images") for f in files.get("images", [])
    ]
    archives = [
        await read_file(f, "max_body_bytes", limit, "archive") for f in files.get("archive", [])
    ]
    prepare = partial(
        prepare_data_images, body=body, uploads=uploads, archive=next(iter(archives), None)
    )
    return await run_compute(
        request,
        compute_context(request, body.device),
        prepare,
        compute_data_images,
        encoding=encoding,
        body_bytes=sum(len(upload.data) for upload in uploads + archives) if files else None,
        prepare_on_loop=False,  # decoding pictures and zips, even small ones, takes time
        # Decoding pictures, uploaded or in base64: in a body worker, stopped at the
        # deadline, a body slot held (a 16 KB TIFF in JSON decoded for 52 s in a thread).
        prepare_in_worker=bool(uploads or archives or body.images or body.archive),
        stream=stream,
    )
