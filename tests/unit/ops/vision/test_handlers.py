"""``/conv`` and ``/pool`` without HTTP: every refusal in prepare (before a compute slot),
the forward pass and the figure in compute."""

from __future__ import annotations

import base64
import io
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from PIL import Image

from schemas.vision import ConvRequest, PoolRequest
from service.api.compute import _tensors
from service.config import Limits
from service.errors import LimitExceeded
from service.limits import Deadline
from service.ops.context import ComputeContext
from service.ops.render.images import figure_layout
from service.ops.render.png import Png
from service.ops.vision.handlers import compute_conv, compute_pool, prepare_conv, prepare_pool
from service.ops.vision.kernels import preset_kernel
from tests.unit.ops.vision.test_imageio import png_header_only

CPU = torch.device("cpu")


def context(**limits: int) -> ComputeContext:
    return ComputeContext(Limits(**limits), CPU)  # type: ignore[arg-type]


def deadline() -> Deadline:
    return Deadline(30.0)


def png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_conv_prepare_then_compute_is_torchs_convolution() -> None:
    x = torch.rand(1, 1, 9, 11, generator=torch.Generator().manual_seed(0))
    body = ConvRequest.model_validate(
        {"input": x.tolist(), "kernels": ["sobel_x", "random"], "kernel_size": 3, "seed": 2}
    )
    ctx = context()
    plan = prepare_conv(ctx, body, None)
    assert ctx.budget.flops > 0  # charged while preparing
    content = compute_conv(plan, deadline())
    assert isinstance(content, dict)
    weight = content["weight"]
    torch.testing.assert_close(weight[0, 0], preset_kernel("sobel_x", 3).float())
    torch.testing.assert_close(content["output"], F.conv2d(x, weight))
    assert content["kernels"] == ["sobel_x", "random"]
    assert content["input_shape"] == [1, 1, 9, 11]
    assert content["conv_shape"] == [1, 2, 7, 9]
    assert content["bias"] is None


def test_a_picture_over_the_pixel_limit_is_refused_in_prepare() -> None:
    bomb = png_header_only(3000, 2000)
    body = ConvRequest.model_validate({"kernels": ["edge"]})
    with pytest.raises(LimitExceeded) as caught:
        prepare_conv(context(max_image_pixels=1 << 20), body, bomb)
    assert caught.value.code == "image_pixels_limit"
    assert caught.value.details["allowed"] == 1 << 20
    assert caught.value.details["requested"] == 3000 * 2000
    pool = PoolRequest.model_validate({"image": base64.b64encode(bomb).decode()})
    with pytest.raises(LimitExceeded) as caught:
        prepare_pool(context(max_image_pixels=1 << 20), pool, None)
    assert caught.value.code == "image_pixels_limit"


def test_the_png_of_the_feature_maps_is_drawn_in_compute() -> None:
    pixels = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    body = ConvRequest.model_validate(
        {"image": png_base64(pixels), "kernels": ["edge", "box"], "kernel_size": 3, "format": "png"}
    )
    plan = prepare_conv(context(), body, None)
    expected = figure_layout([1, 1, 24, 32], [1, 2, 22, 30], max_pixels=1 << 25)
    assert plan.layout == expected
    content = compute_conv(plan, deadline())
    assert isinstance(content, Png)
    assert content.headers == {"X-Panel-Count": "3", "X-Panel-Layout": "1x3"}
    assert Image.open(io.BytesIO(content.data)).size == (expected.width, expected.height)


def test_a_figure_over_the_png_limit_is_refused_in_prepare() -> None:
    body = PoolRequest.model_validate(
        {"input": torch.zeros(2, 3, 40, 40).tolist(), "kind": "max", "format": "png"}
    )
    layout = figure_layout([2, 3, 40, 40], [2, 3, 20, 20], max_pixels=1 << 25)
    with pytest.raises(LimitExceeded) as caught:
        prepare_pool(context(max_png_pixels=layout.width * layout.height - 1), body, None)
    assert caught.value.code == "png_pixels_limit"
    assert caught.value.details["requested"] == layout.width * layout.height
    plan = prepare_pool(context(max_png_pixels=layout.width * layout.height), body, None)
    content = compute_pool(plan, deadline())
    assert isinstance(content, Png)
    assert content.headers["X-Panel-Layout"] == "2x4"


def test_pool_prepare_then_compute_is_torchs_pooling() -> None:
    x = torch.rand(2, 3, 9, 10, generator=torch.Generator().manual_seed(3))
    body = PoolRequest.model_validate(
        {"input": x.tolist(), "kind": "avg", "kernel_size": [2, 3], "stride": 1}
    )
    content = compute_pool(prepare_pool(context(), body, None), deadline())
    assert isinstance(content, dict)
    torch.testing.assert_close(content["output"], F.avg_pool2d(x, (2, 3), 1))
    assert content["input_shape"] == [2, 3, 9, 10]


def test_plans_hold_everything_compute_needs_and_pickle() -> None:
    x = torch.rand(1, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    body = ConvRequest.model_validate(
        {
            "input": x.tolist(),
            "kernels": ["laplacian", "random"],
            "kernel_size": 3,
            "seed": 1,
            "activation": {"function": "LeakyReLU", "params": {"negative_slope": 0.1}},
            "pool": {"kind": "max", "kernel_size": 2},
        }
    )
    plan = prepare_conv(context(), body, None)
    copy = pickle.loads(pickle.dumps(plan))
    here, there = compute_conv(plan, deadline()), compute_conv(copy, deadline())
    assert isinstance(here, dict)
    assert isinstance(there, dict)
    torch.testing.assert_close(there["output"], here["output"], rtol=0, atol=0)
    expected = F.max_pool2d(F.leaky_relu(F.conv2d(x, here["weight"]), 0.1), 2)
    torch.testing.assert_close(here["output"], expected)
    pool = pickle.loads(pickle.dumps(prepare_pool(context(), PoolRequest(input=body.input), None)))
    assert isinstance(compute_pool(pool, deadline()), dict)


def _examples(model: type[ConvRequest] | type[PoolRequest]) -> list[dict[str, object]]:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    return list(extra["examples"])  # type: ignore[arg-type]


X64 = torch.rand(2, 4, 12, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
WIRE64 = {"data": X64.flatten().tolist(), "shape": list(X64.shape), "dtype": "float64"}


@pytest.mark.parametrize(
    "body",
    [
        *_examples(ConvRequest),
        {"input": WIRE64, "kernels": ["random"] * 4, "groups": 2},
        {"input": X64.tolist(), "kernels": ["edge"], "bias": True, "dilation": 2, "stride": 3},
        {
            "input": X64.tolist(),
            "kernels": ["random", "random"],
            "bias": True,
            "bias_values": [0.5, -1.0],
            "padding": "same",
            "pool": {"kind": "adaptive_max", "output_size": [3, 2]},
        },
    ],
)
def test_a_convolutions_plan_knows_its_answers_tensors(body: dict[str, object]) -> None:
    # The response is sized from the plan before the work (and not again after it): the
    # plan's shapes and dtypes must be the answer's.
    plan = prepare_conv(context(), ConvRequest.model_validate(body), None)
    content = compute_conv(plan, deadline())
    if isinstance(content, Png):
        assert plan.answer is None  # a figure is sized once drawn
    else:
        assert plan.answer == [(tuple(t.shape), t.dtype) for t in _tensors(content, [])]


@pytest.mark.parametrize(
    "body",
    [
        *_examples(PoolRequest),
        {"input": WIRE64, "kind": "max", "kernel_size": 3, "padding": 1},
    ],
)
def test_a_poolings_plan_knows_its_answers_tensors(body: dict[str, object]) -> None:
    plan = prepare_pool(context(), PoolRequest.model_validate(body), None)
    content = compute_pool(plan, deadline())
    if isinstance(content, Png):
        assert plan.answer is None
    else:
        assert plan.answer == [(tuple(t.shape), t.dtype) for t in _tensors(content, [])]
