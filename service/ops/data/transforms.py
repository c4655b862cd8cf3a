"""``torchvision.transforms.v2`` pipelines (tutorial chapter 7.2): allow-listed classes built
from a request's parameters and checked against their signatures, each picture's size after
the pipeline predicted and charged to the budget before anything runs, then the pipeline
applied under a seed.

torchvision is imported on first use (it takes seconds), not with this module.
"""

from __future__ import annotations

import inspect
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import torch
from PIL import Image

from schemas.images import TransformName
from service.codec import parse_dtype
from service.errors import ErrorCode, InvalidInput, LimitExceeded, OpError
from service.limits import Budget, Deadline

TRANSFORMS: tuple[str, ...] = get_args(TransformName)
"""The ``torchvision.transforms.v2`` classes a pipeline may use (the schema names them)."""
DEFAULT_TRANSFORMS: tuple[dict[str, Any], ...] = (
    {"name": "ToImage"},
    {"name": "ToDtype", "dtype": "float32", "scale": True},
)
"""The pipeline when none is given: the classic ``ToTensor()``, float32 in [0, 1]."""
MAX_TRANSFORM_SIDE = 1 << 16
"""Largest size, padding or kernel size a transform parameter may name."""

Shape = tuple[int, int, int]
"""A picture's ``(C, H, W)``."""

# Rough FLOPs per output element of one transform: resampling ones read several inputs.
_RESAMPLING = {
    "Resize",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomAffine",
    "RandomPerspective",
}
_SIZE_PARAMS = {"size", "max_size", "padding", "kernel_size"}
# What torchvision raises for parameter values it does not take.
_TORCHVISION_ERRORS = (
    TypeError,
    ValueError,
    RuntimeError,
    KeyError,
    IndexError,
    AttributeError,
    ArithmeticError,
)

# torchvision's random transforms draw from torch's global generator: one pipeline at a time
# runs under a forked, seeded generator state, so that requests never share random draws.
_RNG_LOCK = threading.Lock()


@dataclass(frozen=True)
class BuiltTransform:
    """A constructed transform and how it was asked for."""

    name: str
    params: dict[str, Any]
    transform: Any

    @property
    def label(self) -> str:
        shown = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{self.name}({shown})"


def _bad_param(where: str, message: str, code: ErrorCode, **details: object) -> InvalidInput:
    return InvalidInput(f"{where}: {message}", code=code, details=dict(details))


def _check_sizes(name: str, value: object, where: str) -> None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if (
            isinstance(item, int | float)
            and not isinstance(item, bool)
            and (item > MAX_TRANSFORM_SIDE or item < 0)
        ):
            raise _bad_param(
                where,
                f"{name} must be between 0 and {MAX_TRANSFORM_SIDE}, got {item}",
                ErrorCode.INVALID_PARAM,
                param=name,
            )


def build_transform(spec: Mapping[str, Any], index: int) -> BuiltTransform:
    """One allow-listed ``torchvision.transforms.v2`` class with ``spec``'s parameters,
    checked against its signature: an unknown name is a 422 ``unknown_param``, a required
    one left out ``missing_param``, a value torchvision refuses ``invalid_param``."""
    from torchvision.transforms import v2  # noqa: PLC0415 (torchvision imports in seconds)

    name = spec.get("name")
    where = f"transforms[{index}]"
    if name not in TRANSFORMS:
        raise _bad_param(
            where,
            f"unknown transform {str(name)[:64]!r}; allowed: {', '.join(TRANSFORMS)}",
            ErrorCode.UNKNOWN_TRANSFORM,
            allowed=list(TRANSFORMS),
        )
    cls = getattr(v2, name)
    signature = inspect.signature(cls)
    accepted = {
        key: param
        for key, param in signature.parameters.items()
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    }
    params = {key: value for key, value in spec.items() if key != "name"}
    for key in params:
        if key not in accepted:
            takes = ", ".join(accepted) or "no parameters"
            raise _bad_param(
                where,
                f"{name} has no parameter {key[:64]!r}; it takes {takes}",
                ErrorCode.UNKNOWN_PARAM,
                param=key[:64],
                allowed=list(accepted),
            )
    for key, param in accepted.items():
        if param.default is inspect.Parameter.empty and key not in params:
            raise _bad_param(
                where,
                f"{name} needs the parameter {key!r} (torchvision has no default for it)",
                ErrorCode.MISSING_PARAM,
                param=key,
            )
    kwargs: dict[str, Any] = {}
    for key, value in params.items():
        if key in _SIZE_PARAMS:
            _check_sizes(key, value, where)
        if key == "dtype":
            kwargs[key] = parse_dtype(value, f"{where}.dtype")
        elif key == "inplace":
            kwargs[key] = False  # the source pictures are shared; never modify them
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    try:
        transform = cls(**kwargs)
    except _TORCHVISION_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _bad_param(
            where, f"{name}: {message}", ErrorCode.INVALID_PARAM, transform=name
        ) from exc
    return BuiltTransform(name, params, transform)


def build_pipeline(specs: Sequence[Mapping[str, Any]] | None) -> list[BuiltTransform]:
    """The transforms of a request, in order; :data:`DEFAULT_TRANSFORMS` for ``None``."""
    chosen = DEFAULT_TRANSFORMS if specs is None else specs
    return [build_transform(spec, index) for index, spec in enumerate(chosen)]


def _pad_sides(padding: Any) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of torchvision's padding forms."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    values = [int(v) for v in padding]
    if len(values) == 1:
        return values[0], values[0], values[0], values[0]
    if len(values) == 2:
        return values[0], values[1], values[0], values[1]
    return values[0], values[1], values[2], values[3]


def _resized(height: int, width: int, size: Any, max_size: int | None) -> tuple[int, int]:
    """torchvision's Resize output size (``size`` a list of one or two, or ``None``)."""
    if size is not None and len(size) == 2:
        return int(size[0]), int(size[1])
    short, long = min(height, width), max(height, width)
    if size is None:
        new_short, new_long = int((max_size or long) * short / max(long, 1)), max_size or long
    else:
        new_short = int(size[0])
        new_long = int(new_short * long / max(short, 1))
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_long, new_short) if height > width else (new_short, new_long)


def predict_shape(step: BuiltTransform, shape: Shape) -> tuple[Shape, int]:
    """``(C, H, W)`` after ``step`` (an upper bound for ``RandomRotation`` with ``expand``,
    exact for every other), and the largest intermediate it allocates, in elements."""
    c, h, w = shape
    t = step.transform
    name = step.name
    out = shape
    peak = c * h * w
    if name == "Resize":
        out = (c, *_resized(h, w, t.size, t.max_size))
    elif name in ("CenterCrop", "RandomResizedCrop"):
        out = (c, int(t.size[0]), int(t.size[1]))
    elif name == "RandomCrop":
        left, top, right, bottom = _pad_sides(t.padding) if t.padding else (0, 0, 0, 0)
        padded = (h + top + bottom, w + left + right)
        if t.pad_if_needed:
            padded = (max(padded[0], int(t.size[0])), max(padded[1], int(t.size[1])))
        peak = max(peak, c * padded[0] * padded[1])
        out = (c, int(t.size[0]), int(t.size[1]))
    elif name == "Pad":
        left, top, right, bottom = _pad_sides(t.padding)
        out = (c, h + top + bottom, w + left + right)
    elif name == "RandomRotation" and t.expand:
        side = math.ceil(math.hypot(h, w)) + 1
        out = (c, side, side)
    elif name == "Grayscale":
        out = (int(t.num_output_channels), h, w)
    numel = out[0] * out[1] * out[2]
    return out, max(peak, numel)


def transform_flops(step: BuiltTransform, numel: int) -> float:
    """Rough FLOPs of one transform producing ``numel`` elements."""
    if step.name == "GaussianBlur":
        kh, kw = (int(k) for k in step.transform.kernel_size)
        return float(numel) * 2 * (kh + kw)
    if step.name in _RESAMPLING:
        return float(numel) * 32
    return float(numel) * 4


def predicts_exactly(pipeline: Sequence[BuiltTransform]) -> bool:
    """Whether :func:`predict_shape` gives every step's exact output size (not a bound)."""
    return not any(step.name == "RandomRotation" and step.transform.expand for step in pipeline)


def _size_of(image: Image.Image) -> Shape:
    return len(image.getbands()), image.height, image.width


def plan_pipeline(
    images: Sequence[Image.Image], pipeline: Sequence[BuiltTransform], budget: Budget
) -> list[Shape]:
    """Charge every picture's predicted output and the pipeline's FLOPs; a 413 when one
    picture, any intermediate or the whole set would be over the limits. Returns each
    picture's predicted ``(C, H, W)`` after the pipeline."""
    cache: dict[Shape, tuple[Shape, float, int]] = {}
    shapes: list[Shape] = []
    for number, image in enumerate(images):
        start = _size_of(image)
        if start not in cache:
            shape, peak, flops = start, math.prod(start), 0.0
            for index, step in enumerate(pipeline):
                try:
                    shape, step_peak = predict_shape(step, shape)
                except _TORCHVISION_ERRORS as exc:
                    raise _bad_param(
                        f"transforms[{index}]",
                        f"{step.name}: unusable parameters {step.params!r}"[:300],
                        ErrorCode.INVALID_PARAM,
                        transform=step.name,
                    ) from exc
                if min(shape) < 0:
                    raise _bad_param(
                        f"transforms[{index}]",
                        f"{step.name} would make a picture of shape {list(shape)}",
                        ErrorCode.INVALID_PARAM,
                        transform=step.name,
                    )
                peak = max(peak, step_peak)
                flops += transform_flops(step, math.prod(shape))
            cache[start] = (shape, flops, peak)
        shape, flops, peak = cache[start]
        if peak > budget.max_elements:
            raise LimitExceeded(
                "max_elements", budget.max_elements, peak, f"the transforms of picture {number}"
            )
        budget.charge_tensor(math.prod(shape), f"picture {number} after the transforms")
        budget.charge_flops(flops, f"the transforms of picture {number}")
        shapes.append(shape)
    return shapes


def apply_pipeline(
    images: Sequence[Image.Image],
    pipeline: Sequence[BuiltTransform],
    *,
    seed: int | None,
    max_elements: int,
    deadline: Deadline | None = None,
) -> list[torch.Tensor]:
    """Each picture through the pipeline, in order, under ``torch.manual_seed(seed)`` (a
    forked generator state: the server's own is untouched). A result still a PIL image
    becomes a uint8 tensor (``ToImage``). torchvision's refusals are 422
    ``transform_failed``."""
    from torchvision.transforms import v2  # noqa: PLC0415

    to_image = v2.ToImage()
    results: list[torch.Tensor] = []
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        # The CPU generator only: torch.manual_seed would reseed every CUDA device too.
        torch.default_generator.manual_seed(
            seed if seed is not None else int.from_bytes(os.urandom(7), "little")
        )
        for number, image in enumerate(images):
            if deadline is not None:
                deadline.check()
            value: Any = image
            for index, step in enumerate(pipeline):
                value = _run_step(step, index, value)
            if isinstance(value, Image.Image):
                value = to_image(value)
            if not isinstance(value, torch.Tensor):
                raise OpError(
                    f"the transforms turned picture {number} into {type(value).__name__}, "
                    "not an image",
                    code=ErrorCode.TRANSFORM_FAILED,
                )
            tensor = value.as_subclass(torch.Tensor)
            if tensor.numel() > max_elements:
                raise LimitExceeded(
                    "max_elements", max_elements, tensor.numel(), f"picture {number} transformed"
                )
            results.append(tensor)
    return results


def _run_step(step: BuiltTransform, index: int, value: Any) -> Any:
    try:
        return step.transform(value)
    except torch.OutOfMemoryError:
        raise
    except _TORCHVISION_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OpError(
            f"transforms[{index}] {step.name}: {message}",
            code=ErrorCode.TRANSFORM_FAILED,
            details={"transform": step.name, "index": index},
        ) from exc
