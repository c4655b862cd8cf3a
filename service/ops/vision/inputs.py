"""The input of ``/conv`` and ``/pool`` as an ``[N, C, H, W]`` batch: a tensor, or a picture
decoded under the pixel and element limits."""

from __future__ import annotations

import torch

from schemas.vision import ImageInputRequest
from service.errors import ErrorCode, InvalidInput
from service.ops.context import ComputeContext
from service.ops.vision.imageio import decode_base64, image_tensor


def as_batch(x: torch.Tensor, where: str = "input") -> torch.Tensor:
    """``[H, W]``, ``[C, H, W]`` or ``[N, C, H, W]`` as ``[N, C, H, W]`` in the compute dtype:
    float64 stays, anything else becomes float32."""
    if x.ndim == 2:
        x = x.unsqueeze(0).unsqueeze(0)
    elif x.ndim == 3:
        x = x.unsqueeze(0)
    elif x.ndim != 4:
        raise InvalidInput(
            f"{where} must be [H, W], [C, H, W] or [N, C, H, W], got shape {list(x.shape)}",
            details={"shape": list(x.shape)},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.to(dtype)


def load_input(ctx: ComputeContext, body: ImageInputRequest, upload: bytes | None) -> torch.Tensor:
    """The request's input as ``[N, C, H, W]``, charged to the budget: ``input``, or the
    uploaded or base64 picture, its header checked against ``max_image_pixels`` and its
    size against ``max_elements`` before a pixel is decoded. An input without values is a
    422 ``shape_mismatch``."""
    if body.input is not None:
        x = as_batch(ctx.decode(body.input.root, "input"))
    else:
        data = upload if upload is not None else decode_base64(body.image or "", "image")
        x = image_tensor(
            data,
            body.mode,
            "image",
            max_elements=ctx.limits.max_elements,
            max_pixels=ctx.limits.max_image_pixels,
        )
    if x.numel() == 0:
        # Torch's shape checks of an empty batch take time that grows with its other
        # dimensions ([2**25, 0, 1, 1] takes seconds), and there is nothing to convolve.
        raise InvalidInput(
            f"the input has shape {list(x.shape)}, which holds no values; every dimension of "
            "[N, C, H, W] must be at least 1",
            details={"shape": list(x.shape)},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    ctx.budget.charge_tensor(x.numel(), "the input")
    return x
