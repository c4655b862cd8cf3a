"""``POST /conv`` and ``POST /pool``: a tensor or a picture in (JSON or an upload), the
convolution or pooling on the request's device, tensors or a PNG of feature maps out
(chapters 6.1 and 6.2)."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.vision import ConvRequest, ConvResponse, PoolRequest, PoolResponse
from service.api.compute import compute_context, run_compute
from service.api.forms import json_or_form_body
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse, png_or_json
from service.api.routing import ORJSONRoute
from service.api.uploads import IMAGE_DOC, IMAGE_FIELD, read_picture_input
from service.deps import EncodingDep, settings_of
from service.ops.vision.handlers import compute_conv, compute_pool, prepare_conv, prepare_pool

router = APIRouter(route_class=ORJSONRoute, tags=["vision"], responses=COMPUTE_ERRORS)

_PNG_DOC = (
    "one row per sample: the input and each output channel side by side at their own pixel "
    "size (maps under 128 pixels tall enlarged by a whole factor, nearest neighbour), each "
    "scaled to 0–255 and labelled above; panels 8 pixels apart, each at least 64 pixels wide "
    "under a 20-pixel label strip"
)


@router.post(
    "/conv",
    operation_id="conv",
    summary="2-D convolution of a picture or a tensor",
    response_model=ConvResponse,
    response_class=FastJSONResponse,
    responses=png_or_json(ConvResponse, _PNG_DOC, panels=True, uploads=True),
    openapi_extra=json_or_form_body(ConvRequest, {IMAGE_FIELD: IMAGE_DOC}),
)
async def convolution(request: Request, encoding: EncodingDep = "json") -> Response:
    """`torch.nn.functional.conv2d` of the input with the `kernels` (presets such as the
    tutorial's `edge`, seeded `random` ones, or explicit kernels), then `activation` and
    `pool` when given.

    The input is a tensor (`input`), a base64 picture (`image`) or, as `multipart/form-data`,
    an uploaded `image` file with the other fields as form fields (`kernels` =
    `["edge", "random"]`). The tutorial's case: a 512×768 grayscale photo with
    `kernels: ["edge", "random"]` gives [1, 2, 508, 764], and with
    `pool: {"kernel_size": 2, "stride": 2}` [1, 2, 254, 382]. JSON returns the `output`
    and the `weight` used; `"format": "png"` the input and each feature map side by side.
    Shapes are checked by torch's rules and every output and FLOP charged to the limits
    before the convolution runs.
    """
    body, upload = await read_picture_input(request, ConvRequest, settings_of(request))
    ctx = compute_context(request, body.device)
    prepare = partial(prepare_conv, body=body, upload=upload)
    return await run_compute(
        request,
        ctx,
        prepare,
        compute_conv,
        encoding=encoding,
        prepare_on_loop=not _has_picture(body, upload),
        prepare_in_worker=_has_picture(body, upload),
    )


@router.post(
    "/pool",
    operation_id="pool",
    summary="Max, average, adaptive or Lp pooling of a picture or a tensor",
    response_model=PoolResponse,
    response_class=FastJSONResponse,
    responses=png_or_json(PoolResponse, _PNG_DOC, panels=True, uploads=True),
    openapi_extra=json_or_form_body(PoolRequest, {IMAGE_FIELD: IMAGE_DOC}),
)
async def pooling(request: Request, encoding: EncodingDep = "json") -> Response:
    """`torch.nn.functional`'s pooling of the input: `max` (`max_pool2d`, the tutorial's
    `nn.MaxPool2d(2, stride=2)`), `avg`, `adaptive_avg` (`nn.AdaptiveAvgPool2d`),
    `adaptive_max` or `lp` (`nn.LPPool2d`), with torch's parameters and defaults.

    The input is given as for `/conv`: a tensor, a base64 picture or an uploaded `image`
    file. `"format": "png"` returns the input and each pooled channel side by side.
    """
    body, upload = await read_picture_input(request, PoolRequest, settings_of(request))
    ctx = compute_context(request, body.device)
    prepare = partial(prepare_pool, body=body, upload=upload)
    return await run_compute(
        request,
        ctx,
        prepare,
        compute_pool,
        encoding=encoding,
        prepare_on_loop=not _has_picture(body, upload),
        prepare_in_worker=_has_picture(body, upload),
    )


def _has_picture(body: ConvRequest | PoolRequest, upload: bytes | None) -> bool:
    """Whether a picture is to be decoded: in a body worker, stopped at the deadline, never
    on the event loop nor in a thread of the server, however small its file (a lossless
    WebP of 1.3 KB holds 33 million pixels, 0.45 s of decoding)."""
    return upload is not None or body.image is not None
