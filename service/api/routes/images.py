"""``POST /data/images``: labelled pictures through a ``torchvision.transforms.v2`` pipeline
and a ``DataLoader`` (chapter 7.2)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.images import MAX_IMAGES, DataImagesRequest, DataImagesResponse
from service.api.forms import json_or_form_body, parse_body
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse, png_or_json, png_response
from service.api.routing import ORJSONRoute
from service.codec import DTYPE_NAMES, dumps, encode_tensor
from service.deps import EncodingDep, devices_of, settings_of
from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline
from service.ops.data.images import (
    ImageSet,
    apply_pipeline,
    archive_images,
    build_pipeline,
    builtin_images,
    channel_stats,
    class_labels,
    first_batch,
    plan_pipeline,
    uploaded_images,
)
from service.ops.render.images import batch_grid_png, grid_layout
from service.ops.vision.imageio import decode_base64

router = APIRouter(route_class=ORJSONRoute, tags=["images"], responses=COMPUTE_ERRORS)

DEFAULT_COLUMNS = 8
"""Pictures per row of the PNG grid (``make_grid``'s ``nrow`` default)."""

UPLOADS = {
    "images": "Pictures (PNG, JPEG, BMP, GIF, WebP or TIFF), one file each, in the class "
    "`images` unless `labels` names one per file.",
    "archive": "A zip in ImageFolder layout: `class_name/file.png`.",
}

_PNG_DOC = "`torchvision.utils.make_grid` of the first batch, each picture labelled with its class"


def _count(value: object) -> int:
    return 0 if value is None else 1


@router.post(
    "/data/images",
    operation_id="data_images",
    summary="Image datasets, torchvision transforms and a DataLoader batch",
    response_model=DataImagesResponse,
    response_class=FastJSONResponse,
    responses=png_or_json(DataImagesResponse, _PNG_DOC, panels=True, uploads=True),
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
    settings, devices = settings_of(request), devices_of(request)
    body, files = await parse_body(
        request, DataImagesRequest, settings, {"images": MAX_IMAGES, "archive": 1}
    )
    uploads = [(upload.filename or "", await upload.read()) for upload in files.get("images", [])]
    archive_upload = await files["archive"][0].read() if files.get("archive") else None
    sources = (
        _count(body.dataset)
        + _count(body.images)
        + _count(body.archive)
        + (1 if uploads else 0)
        + _count(archive_upload)
    )
    if sources != 1:
        raise InvalidInput(
            "give one source of pictures: `dataset`, `images` (base64 or uploaded files) or "
            "`archive` (base64 or an uploaded zip)"
            + (f"; {sources} were given" if sources else ""),
            code=ErrorCode.AMBIGUOUS_INPUT if sources else ErrorCode.MISSING_INPUT,
        )
    if body.labels is not None and not (body.images or uploads):
        raise InvalidInput("labels name the classes of `images`", code=ErrorCode.INVALID_INPUT)
    device = devices.resolve(body.device)
    specs = (
        None
        if body.transforms is None
        else [{"name": spec.name, **(spec.model_extra or {})} for spec in body.transforms]
    )
    png = body.format == "png"

    def load(budget: Budget, deadline: Deadline) -> ImageSet:
        if body.dataset is not None:
            return builtin_images(body.dataset, body.mode, budget, body.max_images)
        mode = body.mode or "RGB"
        if body.archive is not None or archive_upload is not None:
            data = archive_upload
            if data is None:
                data = decode_base64(body.archive or "", "archive")
            return archive_images(data, mode, budget, max_images=body.max_images, deadline=deadline)
        files_given = uploads or [
            ("", decode_base64(text, f"images[{i}]")) for i, text in enumerate(body.images or [])
        ]
        labels = body.labels
        if body.max_images is not None:
            files_given = files_given[: body.max_images]
            labels = None if labels is None else labels[: body.max_images]
        return uploaded_images(files_given, labels, mode, budget, deadline)

    def compute(deadline: Deadline) -> bytes | tuple[bytes, dict[str, str]]:
        budget = Budget.from_settings(settings)
        pipeline = build_pipeline(specs)
        image_set = load(budget, deadline)
        plan_pipeline(image_set.images, pipeline, budget)
        start = time.perf_counter()
        tensors = apply_pipeline(
            image_set.images,
            pipeline,
            seed=body.seed,
            max_elements=settings.limits.max_elements,
            deadline=deadline,
        )
        mean, std = channel_stats(tensors, device)
        batch = first_batch(
            tensors,
            image_set.targets,
            body.batch_size,
            shuffle=body.shuffle,
            drop_last=body.drop_last,
            seed=body.seed,
        )
        devices.synchronize(device)
        elapsed_ms = (time.perf_counter() - start) * 1000
        if png:
            _, _, height, width = batch.x.shape
            layout = grid_layout(
                int(batch.x.shape[0]), int(height), int(width), body.columns or DEFAULT_COLUMNS
            )
            picture = batch_grid_png(batch.x, class_labels(image_set.classes, batch.y), layout)
            headers = {
                "X-Panel-Count": str(layout.count),
                "X-Panel-Layout": f"{layout.rows}x{layout.columns}",
            }
            return picture, headers
        shapes = {tuple(int(s) for s in t.shape) for t in tensors}
        content: dict[str, Any] = {
            "source": image_set.source,
            "n_images": len(tensors),
            "classes": image_set.classes,
            "class_to_idx": image_set.class_to_idx,
            "counts": image_set.counts(),
            "skipped": image_set.skipped[:100],
            "n_skipped": len(image_set.skipped),
            "transforms": [step.label for step in pipeline],
            "image_shape": list(next(iter(shapes))) if len(shapes) == 1 else None,
            "batch_size": body.batch_size,
            "n_batches": batch.n_batches,
            "batch": {
                "x_shape": list(batch.x.shape),
                "x_dtype": DTYPE_NAMES.get(batch.x.dtype, str(batch.x.dtype)),
                "y_shape": list(batch.y.shape),
                "y_dtype": DTYPE_NAMES.get(batch.y.dtype, str(batch.y.dtype)),
                "targets": [int(t) for t in batch.y.tolist()],
                "x": encode_tensor(batch.x, encoding) if body.include_data else None,
                "y": encode_tensor(batch.y, encoding) if body.include_data else None,
            },
            "mean": mean,
            "std": std,
            "device": str(device),
            "elapsed_ms": elapsed_ms,
        }
        return dumps(content)

    content = await devices.run(compute, [device])
    if isinstance(content, tuple):
        return png_response(*content)
    return FastJSONResponse(content)
