"""``torchvision.transforms.v2`` pipelines (tutorial chapter 7.2): allow-listed classes built
from a request's parameters and checked against their signatures, each picture's size after
the pipeline predicted and charged to the budget before anything runs, then the pipeline
applied under a seed.

Each transform is charged by what torchvision really does (:func:`step_cost`): a resize
reads every tap of its separable kernel (widened when it shrinks, as antialiasing does), a
rotation, an affine or a perspective transform samples a grid per output pixel, a Gaussian
blur is a full 2-D convolution (``kh · kw`` multiply-adds per output element, in float32 or
the picture's float dtype, over a reflect-padded copy), a colour jitter of the hue converts
to HSV and back. A call of a transform on a picture also costs its Python dispatch.

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
from service.limits import HALF_FLOATS, Budget, Deadline
from service.memory import allocation_failed
from service.ops.vision.cost import charge_conv2d

CPU = torch.device("cpu")
"""Where the transforms run (on PIL images and CPU tensors)."""

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

# Taps either side of the centre of torchvision's and Pillow's resampling kernels.
_SUPPORT = {
    "nearest": 0.5,
    "nearest-exact": 0.5,
    "box": 0.5,
    "bilinear": 1.0,
    "hamming": 1.0,
    "bicubic": 2.0,
    "lanczos": 3.0,
}
# Elementwise passes per output element of a grid-sampling transform: the sampling grid
# (two coordinates per pixel), a fill mask, the bilinear taps and the blend.
_GRID_UNITS = {"RandomRotation": 24, "RandomAffine": 24, "RandomPerspective": 32}
# Elementwise passes per element of a colour jitter: a blend per brightness, contrast and
# saturation; the hue converts to HSV and back (dozens of passes over three channels).
_JITTER_UNITS = {"brightness": 4, "contrast": 8, "saturation": 8, "hue": 128}
_ELEMENTWISE_UNITS = {
    "RandomHorizontalFlip": 1,
    "RandomVerticalFlip": 1,
    "RandomInvert": 2,
    "Normalize": 2,
    "RandomErasing": 2,
    "ToImage": 1,
    "ToDtype": 2,
}
CALL_SECONDS = 1e-4
"""Predicted time of one transform called on one picture beyond its pixels: torchvision's
dispatch by the input's type and the picture's conversions (tens of microseconds)."""
_CALL_SECONDS = {
    "GaussianBlur": 2e-3,  # a new kernel per call, convolved with an expanded weight
    "ColorJitter": 5e-4,
    "RandomRotation": 3e-4,
    "RandomAffine": 3e-4,
    "RandomPerspective": 5e-4,
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
    elif name == "CenterCrop":
        out = (c, int(t.size[0]), int(t.size[1]))
        # A crop larger than the picture pads it to the crop's size first.
        peak = max(peak, c * max(h, out[1]) * max(w, out[2]))
    elif name == "RandomResizedCrop":
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


Form = torch.dtype | None
"""What a picture is between transforms: ``None`` for a PIL image (8-bit), else its tensor's
dtype."""


@dataclass(frozen=True)
class StepCost:
    """What one transform does to one picture: memory-bound ``units`` (elementwise passes,
    resampling taps), resampling ``flops`` (float32), the largest intermediate ``peak`` in
    elements, a convolution ``blur`` (its input, kernel and dtype), and a Python call."""

    units: float
    flops: float = 0.0
    peak: int = 0
    blur: tuple[Shape, tuple[int, int], torch.dtype] | None = None
    seconds: float = CALL_SECONDS
    dtype: torch.dtype = torch.float32
    """The dtype the arithmetic (``flops``) runs in."""


def next_form(step: BuiltTransform, form: Form) -> Form:
    """The picture's form after ``step``: ``ToImage`` makes a uint8 tensor of a PIL image,
    ``ToDtype`` converts a tensor (a PIL image passes it unchanged)."""
    if step.name == "ToImage":
        return torch.uint8 if form is None else form
    if step.name == "ToDtype" and form is not None:
        dtype = step.transform.dtype
        return dtype if isinstance(dtype, torch.dtype) else form
    return form


def _compute_dtype(form: Form) -> torch.dtype:
    """The dtype torchvision computes a picture in: float32 for 8-bit pictures, else the
    picture's float dtype."""
    return form if form is not None and form.is_floating_point else torch.float32


def _interpolation(step: BuiltTransform) -> str:
    mode = getattr(step.transform, "interpolation", "bilinear")
    return str(getattr(mode, "value", mode)).lower()


def _taps(size_in: int, size_out: int, support: float, antialias: bool) -> int:
    """Taps of a resampling kernel along one axis: ``2 · support`` at the input's scale,
    widened by the shrink factor when antialiasing."""
    shrink = size_in / max(size_out, 1) if antialias else 1.0
    return max(1, math.ceil(2 * support * max(shrink, 1.0)) + 1)


def _resample(step: BuiltTransform, shape: Shape, out: Shape, form: Form) -> StepCost:
    """A separable resize of ``shape`` to ``out``: along the width into a ``C × H × W'``
    intermediate, then along the height, every tap a multiply-add."""
    c, h, w = shape
    _, oh, ow = out
    interpolation = _interpolation(step)
    if interpolation.startswith("nearest"):
        return StepCost(units=2.0 * c * oh * ow)
    # Pillow always antialiases; a tensor when the transform says so (v2's default).
    antialias = form is None or bool(getattr(step.transform, "antialias", True))
    support = _SUPPORT.get(interpolation, 2.0)
    macs = c * (
        h * ow * _taps(w, ow, support, antialias) + oh * ow * _taps(h, oh, support, antialias)
    )
    return StepCost(
        units=float(macs) + c * h * ow + c * oh * ow,
        flops=2.0 * macs,
        peak=c * h * ow,
        dtype=_compute_dtype(form),
    )


def _blur(step: BuiltTransform, shape: Shape, form: Form) -> StepCost:
    """torchvision's Gaussian blur: a reflect-padded copy, then ``conv2d`` with a ``kh × kw``
    kernel per channel (float32 for 8-bit and 16-bit pictures, converted there and back)."""
    c, h, w = shape
    kx, ky = (int(k) for k in step.transform.kernel_size)
    padded: Shape = (c, h + 2 * (ky // 2), w + 2 * (kx // 2))
    dtype = _compute_dtype(form)
    if dtype in HALF_FLOATS:  # on a CPU, torch's half depthwise conv2d did not finish in
        # minutes for 3×32×32 by 21×21 (float32: 1 ms); it runs in float32, see _run_step
        dtype = torch.float32
    conversions = 0 if dtype == form else 3 * c * h * w
    return StepCost(
        units=float(math.prod(padded)) + conversions,
        peak=math.prod(padded) + c * h * w,
        blur=(padded, (ky, kx), dtype),
        seconds=_CALL_SECONDS["GaussianBlur"],
    )


def step_cost(step: BuiltTransform, shape: Shape, out: Shape, form: Form) -> StepCost:
    """What ``step`` costs turning a picture of ``shape`` (in ``form``) into ``out``, by the
    algorithm torchvision runs for it (see the module docstring). Random transforms are
    charged as if they always apply."""
    name = step.name
    numel = math.prod(out)
    seconds = _CALL_SECONDS.get(name, CALL_SECONDS)
    if name in ("Resize", "RandomResizedCrop"):
        # A random resized crop resizes at most the whole picture.
        cost = _resample(step, shape, out, form)
    elif name == "GaussianBlur":
        return _blur(step, shape, form)
    elif name in _GRID_UNITS:
        c, oh, ow = out
        return StepCost(
            units=float(numel) * _GRID_UNITS[name], peak=(c + 3) * oh * ow, seconds=seconds
        )
    elif name == "ColorJitter":
        units = sum(
            per for key, per in _JITTER_UNITS.items() if getattr(step.transform, key) is not None
        )
        return StepCost(units=float(numel) * max(units, 1), peak=3 * numel, seconds=seconds)
    elif name in ("Grayscale", "RandomGrayscale"):
        cost = StepCost(units=4.0 * math.prod(shape) + numel)
    elif name in ("CenterCrop", "RandomCrop", "Pad"):
        cost = StepCost(units=2.0 * numel + math.prod(shape))
    else:
        cost = StepCost(units=float(numel) * _ELEMENTWISE_UNITS.get(name, 4))
    return StepCost(cost.units, cost.flops, cost.peak, cost.blur, seconds, cost.dtype)


@dataclass(frozen=True)
class PictureCost:
    """What the pipeline costs one picture of a given size: its output, the largest
    intermediate, the memory-bound units, resampling FLOPs, convolutions and Python calls."""

    shape: Shape
    peak: int
    units: float
    flops: dict[torch.dtype, float]
    blurs: tuple[tuple[Shape, tuple[int, int], torch.dtype], ...]
    seconds: float


def _picture_cost(start: Shape, pipeline: Sequence[BuiltTransform]) -> PictureCost:
    shape, peak, units, seconds = start, math.prod(start), 0.0, 0.0
    flops: dict[torch.dtype, float] = {torch.float32: 0.0}
    form: Form = None
    blurs = []
    for index, step in enumerate(pipeline):
        try:
            out, step_peak = predict_shape(step, shape)
        except _TORCHVISION_ERRORS as exc:
            raise _bad_param(
                f"transforms[{index}]",
                f"{step.name}: unusable parameters {step.params!r}"[:300],
                ErrorCode.INVALID_PARAM,
                transform=step.name,
            ) from exc
        if min(out) < 0:
            raise _bad_param(
                f"transforms[{index}]",
                f"{step.name} would make a picture of shape {list(out)}",
                ErrorCode.INVALID_PARAM,
                transform=step.name,
            )
        cost = step_cost(step, shape, out, form)
        peak = max(peak, step_peak, cost.peak)
        units += cost.units
        flops[cost.dtype] = flops.get(cost.dtype, 0.0) + cost.flops
        seconds += cost.seconds
        if cost.blur is not None:
            blurs.append(cost.blur)
        shape, form = out, next_form(step, form)
    if form is None:  # the PIL image left becomes a uint8 tensor
        units += math.prod(shape)
    return PictureCost(shape, peak, units, flops, tuple(blurs), seconds)


def predicts_exactly(pipeline: Sequence[BuiltTransform]) -> bool:
    """Whether :func:`predict_shape` gives every step's exact output size (not a bound)."""
    return not any(step.name == "RandomRotation" and step.transform.expand for step in pipeline)


def _size_of(image: Image.Image) -> Shape:
    return len(image.getbands()), image.height, image.width


def plan_pipeline(
    images: Sequence[Image.Image], pipeline: Sequence[BuiltTransform], budget: Budget
) -> list[Shape]:
    """Charge every picture's predicted output and what the pipeline does to it (see
    :func:`step_cost`); a 413 when one picture, any intermediate or the whole set would be
    over the limits, or the work over the FLOP or time limit. Returns each picture's
    predicted ``(C, H, W)`` after the pipeline."""
    cache: dict[Shape, PictureCost] = {}
    shapes: list[Shape] = []
    for number, image in enumerate(images):
        start = _size_of(image)
        if start not in cache:
            cache[start] = _picture_cost(start, pipeline)
        cost = cache[start]
        what = f"the transforms of picture {number}"
        if cost.peak > budget.max_elements:
            raise LimitExceeded("max_elements", budget.max_elements, cost.peak, what)
        budget.charge_shape(cost.shape, f"picture {number} after the transforms")
        for dtype, flops in cost.flops.items():
            budget.charge_flops(flops, what, dtype=dtype)
        for padded, (kh, kw), dtype in cost.blurs:
            c, h, w = padded
            charge_conv2d(
                budget,
                (1, c, h, w),
                (c, 1, kh, kw),
                (1, c, h - kh + 1, w - kw + 1),
                groups=c,
                dtype=dtype,
                device=CPU,
                what=f"a Gaussian blur of picture {number}",
            )
        budget.charge_elementwise(cost.units, what)
        budget.charge_seconds(cost.seconds, what)
        shapes.append(cost.shape)
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
            if deadline is not None:
                deadline.progress(number + 1, len(images), "picture")
    return results


def _run_step(step: BuiltTransform, index: int, value: Any) -> Any:
    try:
        half = isinstance(value, torch.Tensor) and value.dtype in HALF_FLOATS
        if step.name == "GaussianBlur" and half:
            return step.transform(value.to(torch.float32)).to(value.dtype)
        return step.transform(value)
    except _TORCHVISION_ERRORS as exc:
        if allocation_failed(exc):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OpError(
            f"transforms[{index}] {step.name}: {message}",
            code=ErrorCode.TRANSFORM_FAILED,
            details={"transform": step.name, "index": index},
        ) from exc
