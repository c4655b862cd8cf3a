"""``POST /conv`` and ``POST /pool``: a tensor or a picture in (JSON or an upload), the
convolution or pooling on the request's device, tensors or a PNG of feature maps out
(chapters 6.1 and 6.2)."""

from __future__ import annotations

import time
from typing import TypeVar

import torch
from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.common import Tensor
from schemas.vision import (
    ConvRequest,
    ConvResponse,
    ImageInputRequest,
    PoolParams,
    PoolRequest,
    PoolResponse,
)
from service.api.forms import json_or_form_body
from service.api.responses import (
    COMPUTE_ERRORS,
    FastJSONResponse,
    png_or_json,
    png_response,
)
from service.api.routing import ORJSONRoute
from service.api.uploads import IMAGE_DOC, IMAGE_FIELD, read_picture_input
from service.codec import decode_tensor, dumps, encode_tensor
from service.config import Settings
from service.deps import EncodingDep, devices_of, settings_of
from service.limits import Budget, Deadline
from service.ops.nn.activations import BoundActivation, bind
from service.ops.render.images import FeatureLayout, feature_maps_png, figure_layout
from service.ops.vision.conv import (
    ConvSpec,
    KernelInput,
    PoolSpec,
    as_batch,
    build_weight,
    check_kernel_name,
    conv_forward,
    plan_conv,
    plan_pool,
    pool_forward,
)
from service.ops.vision.imageio import decode_base64, image_tensor

router = APIRouter(route_class=ORJSONRoute, tags=["vision"], responses=COMPUTE_ERRORS)

M = TypeVar("M", bound=ImageInputRequest)

_PNG_DOC = (
    "one row per sample: the input and each output channel side by side at their own pixel "
    "size (maps under 128 pixels tall enlarged by a whole factor, nearest neighbour), each "
    "scaled to 0–255 and labelled above; panels 8 pixels apart, each at least 64 pixels wide "
    "under a 20-pixel label strip"
)


def _load_input(
    body: ImageInputRequest, upload: bytes | None, settings: Settings, budget: Budget
) -> torch.Tensor:
    """The input as ``[N, C, H, W]`` float, decoded (pictures after their header passed
    the limits) and charged."""
    if body.input is not None:
        raw = decode_tensor(
            body.input.root, max_elements=settings.limits.max_elements, where="input"
        )
        x = as_batch(raw)
    else:
        data = upload if upload is not None else decode_base64(body.image or "", "image")
        x = image_tensor(data, body.mode, "image", max_elements=settings.limits.max_elements)
    budget.charge_tensor(x.numel(), "the input")
    return x


def _pool_spec(params: PoolParams) -> PoolSpec:
    def pair(value: int | list[int] | None) -> int | tuple[int, int] | None:
        return tuple(value) if isinstance(value, list) else value  # type: ignore[return-value]

    output_size = params.output_size
    return PoolSpec(
        kind=params.kind,
        kernel_size=pair(params.kernel_size),
        stride=pair(params.stride),
        padding=pair(params.padding),
        dilation=pair(params.dilation),
        ceil_mode=params.ceil_mode,
        count_include_pad=params.count_include_pad,
        output_size=tuple(output_size) if isinstance(output_size, list) else output_size,  # type: ignore[arg-type]
        norm_type=params.norm_type,
    )


def _kernel(value: str | Tensor, index: int, settings: Settings) -> KernelInput:
    if isinstance(value, str):
        return value
    if isinstance(value.root, str):
        check_kernel_name(value.root, index)
    return decode_tensor(
        value.root, max_elements=settings.limits.max_elements, where=f"kernels[{index}]"
    )


def _activation(body: ConvRequest) -> BoundActivation | None:
    if body.activation is None:
        return None
    if isinstance(body.activation, str):
        return bind([(body.activation, {})], {})[0]
    return bind([(body.activation.function, body.activation.params)], {})[0]


def _panel_headers(layout: FeatureLayout) -> dict[str, str]:
    return {
        "X-Panel-Count": str(layout.panels),
        "X-Panel-Layout": f"{layout.rows}x{layout.columns}",
    }


def _answer(content: bytes | tuple[bytes, dict[str, str]]) -> Response:
    if isinstance(content, tuple):
        return png_response(*content)
    return FastJSONResponse(content)


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
    settings, devices = settings_of(request), devices_of(request)
    body, upload = await read_picture_input(request, ConvRequest, settings)
    device = devices.resolve(body.device)
    activation = _activation(body)
    pool = None if body.pool is None else _pool_spec(body.pool)
    padding = body.padding
    spec = ConvSpec(
        kernel_size=body.kernel_size,
        sigma=body.sigma,
        stride=tuple(body.stride) if isinstance(body.stride, list) else body.stride,  # type: ignore[arg-type]
        padding=tuple(padding) if isinstance(padding, list) else padding,  # type: ignore[arg-type]
        dilation=tuple(body.dilation) if isinstance(body.dilation, list) else body.dilation,  # type: ignore[arg-type]
        groups=body.groups,
        bias=body.bias,
    )
    png = body.format == "png"

    def compute(deadline: Deadline) -> bytes | tuple[bytes, dict[str, str]]:
        budget = Budget.from_settings(settings)
        x = _load_input(body, upload, settings, budget)
        kernels = [_kernel(k, i, settings) for i, k in enumerate(body.kernels)]
        bias_values = (
            None
            if body.bias_values is None
            else decode_tensor(
                body.bias_values.root,
                max_elements=settings.limits.max_elements,
                where="bias_values",
            )
        )
        weight = build_weight(
            kernels,
            spec,
            int(x.shape[1]),
            x.dtype,
            seed=body.seed,
            bias_values=bias_values,
            budget=budget,
        )
        plan = plan_conv(
            x.shape, x.dtype, weight.weight.shape, spec, budget, activation=activation, pool=pool
        )
        layout = figure_layout(x.shape, plan.output_shape) if png else None
        deadline.check()
        start = time.perf_counter()
        result = conv_forward(
            x, weight, spec, activation=activation, pool=pool, device=device, deadline=deadline
        )
        devices.synchronize(device)
        elapsed_ms = (time.perf_counter() - start) * 1000
        if layout is not None:
            png_bytes = feature_maps_png(x, result.output, weight.labels, layout)
            return png_bytes, _panel_headers(layout)
        return dumps(
            {
                "output": encode_tensor(result.output, encoding),
                "weight": encode_tensor(weight.weight, encoding),
                "bias": None if weight.bias is None else encode_tensor(weight.bias, encoding),
                "kernels": weight.labels,
                "input_shape": list(x.shape),
                "conv_shape": result.conv_shape,
                "device": str(device),
                "elapsed_ms": elapsed_ms,
            }
        )

    return _answer(await devices.run(compute, [device]))


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
    settings, devices = settings_of(request), devices_of(request)
    body, upload = await read_picture_input(request, PoolRequest, settings)
    device = devices.resolve(body.device)
    spec = _pool_spec(body)
    png = body.format == "png"

    def compute(deadline: Deadline) -> bytes | tuple[bytes, dict[str, str]]:
        budget = Budget.from_settings(settings)
        x = _load_input(body, upload, settings, budget)
        output_shape = plan_pool(spec, x.shape, x.dtype, budget)
        layout = figure_layout(x.shape, output_shape) if png else None
        deadline.check()
        start = time.perf_counter()
        output = pool_forward(x, spec, device=device)
        devices.synchronize(device)
        elapsed_ms = (time.perf_counter() - start) * 1000
        if layout is not None:
            labels = [f"{spec.label} [{c}]" for c in range(int(output.shape[1]))]
            return feature_maps_png(x, output, labels, layout), _panel_headers(layout)
        return dumps(
            {
                "output": encode_tensor(output, encoding),
                "input_shape": list(x.shape),
                "device": str(device),
                "elapsed_ms": elapsed_ms,
            }
        )

    return _answer(await devices.run(compute, [device]))
