"""The input of ``/conv`` and ``/pool`` as a batch: tensors and pictures, under the limits."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from schemas.vision import ImageInputRequest
from service.config import Limits
from service.errors import InvalidInput, LimitExceeded
from service.ops.context import ComputeContext
from service.ops.vision.inputs import as_batch, load_input


def test_as_batch_shapes_and_dtypes() -> None:
    assert as_batch(torch.zeros(4, 5, dtype=torch.int64)).shape == (1, 1, 4, 5)
    assert as_batch(torch.zeros(3, 4, 5)).shape == (1, 3, 4, 5)
    assert as_batch(torch.zeros(2, 3, 4, 5, dtype=torch.float64)).dtype == torch.float64
    assert as_batch(torch.zeros(2, 2, dtype=torch.bool)).dtype == torch.float32
    with pytest.raises(InvalidInput):
        as_batch(torch.zeros(1, 2, 3, 4, 5))
    with pytest.raises(InvalidInput):
        as_batch(torch.zeros(5))


def context(**limits: int) -> ComputeContext:
    return ComputeContext(Limits(**limits), torch.device("cpu"))  # type: ignore[arg-type]


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_tensor_an_upload_and_base64_give_the_same_charged_batch() -> None:
    pixels = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7) * 5
    picture = png_bytes(pixels)
    expected = torch.from_numpy(pixels).float().reshape(1, 1, 6, 7)
    given = [
        (ImageInputRequest.model_validate({"input": pixels.tolist()}), None),
        (ImageInputRequest.model_validate({"mode": "L"}), picture),
        (ImageInputRequest.model_validate({"image": base64.b64encode(picture).decode()}), None),
    ]
    for body, upload in given:
        ctx = context()
        x = load_input(ctx, body, upload)
        torch.testing.assert_close(x, expected)
        assert ctx.budget.elements == x.numel()


def test_rgb_pictures_keep_three_channels() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    body = ImageInputRequest.model_validate({"mode": "RGB"})
    x = load_input(context(), body, png_bytes(pixels))
    torch.testing.assert_close(x, torch.from_numpy(pixels).permute(2, 0, 1).float()[None])


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        ({"max_image_pixels": 6 * 7 - 1}, "image_pixels_limit"),
        ({"max_elements": 41}, "elements_limit"),
    ],
)
def test_a_picture_over_the_configured_limits_is_refused(limits: dict[str, int], code: str) -> None:
    picture = png_bytes(np.zeros((6, 7), dtype=np.uint8))
    body = ImageInputRequest.model_validate({})
    with pytest.raises(LimitExceeded) as caught:
        load_input(context(**limits), body, picture)
    assert caught.value.code == code
    assert caught.value.details["requested"] == 6 * 7


@pytest.mark.parametrize("shape", [[1 << 22, 0, 1, 1], [0, 1 << 22, 1, 1], [1, 1, 0, 1 << 22]])
def test_an_input_without_values_is_refused_at_once(shape: list[int]) -> None:
    """torch's shape checks of an empty batch take time that grows with its other sides."""
    ctx = ComputeContext(Limits(), torch.device("cpu"))
    body = ImageInputRequest(input={"b64": "", "shape": shape, "dtype": "float32"})
    start = time.perf_counter()
    with pytest.raises(InvalidInput) as info:
        load_input(ctx, body, None)
    assert info.value.code == "shape_mismatch"
    assert time.perf_counter() - start < 0.1
