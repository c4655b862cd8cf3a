"""Convolution and pooling (tutorial chapters 6.1 and 6.2): preset kernels, the weight of a
request, and planning on ``meta`` before anything is allocated.

A convolution's weight is built as ``nn.Conv2d`` builds its own: every value is first drawn
from a private generator seeded by the request's ``seed`` exactly as
``torch.manual_seed(seed); nn.Conv2d(C, out, k, groups=groups, bias=bias)`` draws it (uniform
on ±1/√fan_in, weight then bias), then presets and explicit kernels overwrite their output
channels. So the tutorial's ``conv2d.weight.data[0] = ker`` after ``nn.Conv2d(1, 2, 5)`` is
``kernels: ["edge", "random"]``, and the ``random`` channel holds the numbers torch would.

Every shape is checked by running the same functions on ``meta`` tensors (shapes, no
storage): torch's own rules decide, its refusals become 422s, and the outputs and FLOPs are
charged to the request's :class:`Budget` before the real work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from service.errors import ErrorCode, InvalidInput, OpError
from service.limits import Budget, Deadline
from service.ops.nn.activations import BoundActivation, charge, evaluate

PRESETS = (
    "edge",
    "sobel_x",
    "sobel_y",
    "laplacian",
    "gaussian",
    "box",
    "sharpen",
    "emboss",
    "random",
)
DEFAULT_KERNEL_SIZE = 5
"""The tutorial's ``kersize``."""
POOL_KINDS = ("max", "avg", "adaptive_avg", "adaptive_max", "lp")
META = torch.device("meta")

Pair = int | tuple[int, int]
Padding = int | tuple[int, int] | Literal["valid", "same"]
KernelInput = str | torch.Tensor
"""A kernel of a request: a preset's name or an explicit (decoded) tensor."""


def _binomial(n: int) -> list[float]:
    """Row ``n`` of Pascal's triangle: ``n + 1`` coefficients."""
    return [float(math.comb(n, i)) for i in range(n + 1)]


def _convolve(a: Sequence[float], b: Sequence[float]) -> list[float]:
    out = [0.0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def _outer(rows: Sequence[float], cols: Sequence[float]) -> torch.Tensor:
    return torch.outer(
        torch.tensor(rows, dtype=torch.float64), torch.tensor(cols, dtype=torch.float64)
    )


def gaussian_sigma(size: int) -> float:
    """OpenCV's default standard deviation for a ``size``-wide Gaussian kernel."""
    return 0.3 * ((size - 1) * 0.5 - 1) + 0.8


def preset_kernel(name: str, size: int, sigma: float | None = None) -> torch.Tensor:
    """The preset ``name`` as a ``[size, size]`` float64 kernel (``size`` odd, ≥ 3).

    ``random`` has no fixed values: it is drawn with the weight (see the module docstring).
    """
    if name not in PRESETS or name == "random":
        raise InvalidInput(
            f"unknown kernel {name[:64]!r}; presets: {', '.join(PRESETS)}, or an explicit "
            "kernel (a nested list)",
            details={"kernel": name[:64], "allowed": list(PRESETS)},
            code=ErrorCode.UNKNOWN_KERNEL,
        )
    if size < 3 or size % 2 == 0:
        raise InvalidInput(
            f"the preset kernel {name!r} needs an odd kernel_size of at least 3, got {size}",
            details={"kernel": name, "kernel_size": size},
            code=ErrorCode.INVALID_KERNEL_SIZE,
        )
    center = size // 2
    smooth = _binomial(size - 1)
    if name == "edge":
        # The tutorial: torch.ones(k, k) * -1 with k² - 1 in the centre (24 for 5×5).
        kernel = -torch.ones(size, size, dtype=torch.float64)
        kernel[center, center] = size * size - 1
        return kernel
    if name in ("sobel_x", "sobel_y"):
        derivative = _convolve(_binomial(size - 3), [-1.0, 0.0, 1.0])
        kernel = _outer(smooth, derivative)
        return kernel if name == "sobel_x" else kernel.T.contiguous()
    if name == "laplacian":
        return _laplacian(size)
    if name == "gaussian":
        s = sigma if sigma is not None else gaussian_sigma(size)
        offsets = torch.arange(size, dtype=torch.float64) - center
        line = torch.exp(-(offsets**2) / (2 * s * s))
        kernel = torch.outer(line, line)
        return kernel / kernel.sum()
    if name == "box":
        return torch.full((size, size), 1.0 / (size * size), dtype=torch.float64)
    if name == "sharpen":
        kernel = -_laplacian(size)
        kernel[center, center] += 1.0
        return kernel
    # emboss: a ramp along the diagonal, 1 in the centre keeps the brightness.
    index = torch.arange(size, dtype=torch.float64) - center
    kernel = index[:, None] + index[None, :]
    kernel[center, center] = 1.0
    return kernel


def _laplacian(size: int) -> torch.Tensor:
    if size == 3:
        return torch.tensor(
            [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64
        )
    # OpenCV's Laplacian(ksize=k): the sum of the two second-derivative Sobel kernels.
    smooth = _binomial(size - 1)
    second = _convolve(_binomial(size - 3), [1.0, -2.0, 1.0])
    return _outer(smooth, second) + _outer(second, smooth)


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


def _pair(value: Pair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


@dataclass(frozen=True)
class ConvSpec:
    """A convolution's parameters, as ``torch.nn.functional.conv2d`` takes them."""

    kernel_size: int | None = None
    sigma: float | None = None
    stride: Pair = 1
    padding: Padding = 0
    dilation: Pair = 1
    groups: int = 1
    bias: bool = False


@dataclass(frozen=True)
class ConvWeight:
    """The weight and bias of a request, and a label per output channel."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    labels: list[str]


def _kernel_error(message: str, code: ErrorCode, **details: object) -> InvalidInput:
    return InvalidInput(message, details=dict(details), code=code)


def _explicit_rows(kernel: torch.Tensor, index: int, per_group: int) -> torch.Tensor:
    """An explicit kernel as ``[out, C/groups, kh, kw]`` rows of the weight."""
    where = f"kernels[{index}]"
    if kernel.ndim == 2:
        return kernel.expand(1, per_group, *kernel.shape)
    if kernel.ndim == 3:
        if kernel.shape[0] != per_group:
            raise _kernel_error(
                f"{where} has shape {list(kernel.shape)}: a 3-D kernel is [C/groups, kh, kw] "
                f"and the input has {per_group} channel(s) per group",
                ErrorCode.SHAPE_MISMATCH,
                got=list(kernel.shape),
            )
        return kernel.unsqueeze(0)
    if kernel.ndim == 4:
        if kernel.shape[1] != per_group:
            raise _kernel_error(
                f"{where} has shape {list(kernel.shape)}: a 4-D kernel is "
                f"[out, C/groups, kh, kw] and the input has {per_group} channel(s) per group",
                ErrorCode.SHAPE_MISMATCH,
                got=list(kernel.shape),
            )
        return kernel
    raise _kernel_error(
        f"{where} must be [kh, kw], [C/groups, kh, kw] or [out, C/groups, kh, kw], "
        f"got shape {list(kernel.shape)}",
        ErrorCode.SHAPE_MISMATCH,
        got=list(kernel.shape),
    )


def kernel_size_of(kernels: Sequence[KernelInput], requested: int | None) -> tuple[int, int]:
    """``(kh, kw)`` shared by every kernel: the explicit kernels' size, and ``kernel_size``
    (default 5) for the presets; a 422 ``kernel_size_mismatch`` when they disagree."""
    for index, kernel in enumerate(kernels):
        if isinstance(kernel, torch.Tensor) and not 2 <= kernel.ndim <= 4:
            raise _kernel_error(
                f"kernels[{index}] must be [kh, kw], [C/groups, kh, kw] or "
                f"[out, C/groups, kh, kw], got shape {list(kernel.shape)}",
                ErrorCode.SHAPE_MISMATCH,
                got=list(kernel.shape),
            )
    sizes = {tuple(int(s) for s in k.shape[-2:]) for k in kernels if isinstance(k, torch.Tensor)}
    if len(sizes) > 1:
        raise _kernel_error(
            f"the explicit kernels have different sizes {sorted(sizes)}; a convolution's "
            "kernels share one size",
            ErrorCode.KERNEL_SIZE_MISMATCH,
            sizes=sorted(sizes),
        )
    presets = any(isinstance(k, str) for k in kernels)
    if not sizes:
        size = requested if requested is not None else DEFAULT_KERNEL_SIZE
        return size, size
    (explicit,) = sizes
    if presets:
        if requested is None and explicit[0] != explicit[1]:
            raise _kernel_error(
                f"the explicit kernels are {explicit[0]}×{explicit[1]}: give a square "
                "kernel_size of that size for the presets, or square kernels",
                ErrorCode.KERNEL_SIZE_MISMATCH,
                sizes=[list(explicit)],
            )
        size = requested if requested is not None else explicit[0]
        if (size, size) != explicit:
            raise _kernel_error(
                f"kernel_size {size} differs from the explicit kernels' "
                f"{explicit[0]}×{explicit[1]}; a convolution's kernels share one size",
                ErrorCode.KERNEL_SIZE_MISMATCH,
                sizes=[list(explicit)],
                kernel_size=size,
            )
    elif requested is not None and (requested, requested) != explicit:
        raise _kernel_error(
            f"kernel_size {requested} differs from the explicit kernels' "
            f"{explicit[0]}×{explicit[1]}",
            ErrorCode.KERNEL_SIZE_MISMATCH,
            sizes=[list(explicit)],
            kernel_size=requested,
        )
    return explicit[0], explicit[1]


def out_channels_of(kernels: Sequence[KernelInput]) -> int:
    """Output channels: one per preset and 2-D or 3-D kernel, ``out`` per 4-D kernel."""
    return sum(
        int(k.shape[0]) if isinstance(k, torch.Tensor) and k.ndim == 4 else 1 for k in kernels
    )


def build_weight(
    kernels: Sequence[KernelInput],
    spec: ConvSpec,
    in_channels: int,
    dtype: torch.dtype,
    *,
    seed: int | None,
    bias_values: torch.Tensor | None = None,
    budget: Budget | None = None,
) -> ConvWeight:
    """The weight ``[out, C/groups, kh, kw]`` (and bias) of a request; see the module
    docstring for how ``random`` channels and the default bias are drawn."""
    for index, kernel in enumerate(kernels):
        if isinstance(kernel, str):
            check_kernel_name(kernel, index)
    kh, kw = kernel_size_of(kernels, spec.kernel_size)
    out_channels = out_channels_of(kernels)
    groups = spec.groups
    if in_channels % groups or out_channels % groups:
        raise InvalidInput(
            f"groups={groups} must divide both the input channels ({in_channels}) and the "
            f"output channels ({out_channels})",
            details={"groups": groups, "in_channels": in_channels, "out_channels": out_channels},
            code=ErrorCode.INVALID_GROUPS,
        )
    per_group = in_channels // groups
    if budget is not None:
        budget.charge_tensor(out_channels * per_group * kh * kw, "the convolution's weight")
    # nn.Conv2d's reset_parameters: kaiming_uniform_(a=√5) = uniform(±1/√fan_in), then the
    # bias uniform(±1/√fan_in), from one generator in that order.
    # The bounds are computed as torch computes them, so the values agree to the last bit.
    fan_in = per_group * kh * kw
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
    weight_bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in)) if fan_in else 0.0
    bias_bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
    generator = _generator(seed)
    weight = torch.empty(out_channels, per_group, kh, kw, dtype=dtype)
    weight.uniform_(-weight_bound, weight_bound, generator=generator)
    bias: torch.Tensor | None = None
    if spec.bias:
        bias = torch.empty(out_channels, dtype=dtype)
        bias.uniform_(-bias_bound, bias_bound, generator=generator)
    labels: list[str] = []
    row = 0
    for index, kernel in enumerate(kernels):
        if isinstance(kernel, str):
            if kernel != "random":
                weight[row] = preset_kernel(kernel, kh, spec.sigma).to(dtype)
            labels.append(kernel)
            row += 1
            continue
        rows = _explicit_rows(kernel.to(dtype), index, per_group)
        weight[row : row + rows.shape[0]] = rows
        if rows.shape[0] == 1 and kernel.ndim < 4:
            labels.append(f"kernel[{index}]")
        else:
            labels.extend(f"kernel[{index}][{j}]" for j in range(rows.shape[0]))
        row += rows.shape[0]
    if bias_values is not None:
        if bias_values.ndim != 1 or bias_values.shape[0] != out_channels:
            raise InvalidInput(
                f"bias_values has shape {list(bias_values.shape)}; the convolution has "
                f"{out_channels} output channel(s), so it must be [{out_channels}]",
                details={"got": list(bias_values.shape), "expected": [out_channels]},
                code=ErrorCode.SHAPE_MISMATCH,
            )
        bias = bias_values.to(dtype)
    return ConvWeight(weight, bias, labels)


def check_kernel_name(name: str, index: int) -> None:
    """A 422 ``unknown_kernel`` for a name that is not a preset."""
    if name not in PRESETS:
        raise InvalidInput(
            f"kernels[{index}]: unknown kernel {name[:64]!r}; presets: {', '.join(PRESETS)}, "
            "or an explicit kernel (a nested list)",
            details={"kernel": name[:64], "allowed": list(PRESETS)},
            code=ErrorCode.UNKNOWN_KERNEL,
        )


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec
) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` with the spec's parameters; torch's refusals are 422s."""
    padding: str | tuple[int, int] = (
        spec.padding if isinstance(spec.padding, str) else _pair(spec.padding)
    )
    return _torch_op(
        "conv2d",
        lambda: F.conv2d(
            x,
            weight,
            bias,
            stride=_pair(spec.stride),
            padding=padding,
            dilation=_pair(spec.dilation),
            groups=spec.groups,
        ),
    )


def _torch_op(name: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    try:
        return fn()
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, TypeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OpError(f"{name}: {message}", details={"op": name}) from exc


@dataclass(frozen=True)
class PoolSpec:
    """A pooling's parameters (``None``: torch's default)."""

    kind: str = "max"
    kernel_size: Pair | None = None
    stride: Pair | None = None
    padding: Pair | None = None
    dilation: Pair | None = None
    ceil_mode: bool | None = None
    count_include_pad: bool | None = None
    output_size: int | tuple[int | None, int | None] | None = None
    norm_type: float | None = None

    @property
    def window(self) -> tuple[int, int]:
        return _pair(self.kernel_size if self.kernel_size is not None else 2)

    @property
    def label(self) -> str:
        """``max 2×2/2``, ``adaptive_avg → 7×7``: for PNG panels."""
        if self.kind.startswith("adaptive"):
            size = self.output_size
            shown = (
                f"{size}×{size}"
                if isinstance(size, int)
                else "×".join("·" if s is None else str(s) for s in size or ())
            )
            return f"{self.kind} → {shown}"
        kh, kw = self.window
        stride = _pair(self.stride) if self.stride is not None else (kh, kw)
        text = f"{self.kind} {kh}×{kw}/{stride[0]}" + (
            "" if stride[0] == stride[1] else f",{stride[1]}"
        )
        return text


def pool2d(x: torch.Tensor, spec: PoolSpec) -> torch.Tensor:
    """The pooling ``spec.kind`` of ``x`` ``[N, C, H, W]``, as ``torch.nn.functional``'s."""
    kind = spec.kind
    window = spec.window
    stride = _pair(spec.stride) if spec.stride is not None else window
    ceil_mode = bool(spec.ceil_mode)
    if kind == "max":
        return _torch_op(
            "max_pool2d",
            lambda: F.max_pool2d(
                x,
                window,
                stride,
                _pair(spec.padding or 0),
                _pair(spec.dilation or 1),
                ceil_mode=ceil_mode,
            ),
        )
    if kind == "avg":
        include = True if spec.count_include_pad is None else spec.count_include_pad
        return _torch_op(
            "avg_pool2d",
            lambda: F.avg_pool2d(
                x,
                window,
                stride,
                _pair(spec.padding or 0),
                ceil_mode=ceil_mode,
                count_include_pad=include,
            ),
        )
    if kind == "lp":
        norm = 2.0 if spec.norm_type is None else float(spec.norm_type)
        return _torch_op(
            "lp_pool2d", lambda: F.lp_pool2d(x, norm, window, stride, ceil_mode=ceil_mode)
        )
    size = spec.output_size
    if size is None:
        raise InvalidInput(f"pool kind {kind!r} needs output_size", code=ErrorCode.MISSING_PARAM)
    if kind == "adaptive_avg":
        return _torch_op("adaptive_avg_pool2d", lambda: F.adaptive_avg_pool2d(x, size))
    if kind == "adaptive_max":
        return _torch_op(
            "adaptive_max_pool2d",
            lambda: F.adaptive_max_pool2d(x, size),  # type: ignore[arg-type]
        )
    raise InvalidInput(
        f"unknown pool kind {kind!r}; kinds: {', '.join(POOL_KINDS)}", code=ErrorCode.UNKNOWN_POOL
    )


def pool_flops(spec: PoolSpec, input_shape: Sequence[int], output_shape: Sequence[int]) -> float:
    """Rough FLOPs: one operation per window element per output (adaptive: per input)."""
    if spec.kind.startswith("adaptive"):
        return float(math.prod(input_shape) + math.prod(output_shape))
    kh, kw = spec.window
    factor = 3 if spec.kind == "lp" else 1
    return float(math.prod(output_shape) * kh * kw * factor)


def conv_flops(weight_shape: Sequence[int], output_shape: Sequence[int]) -> float:
    """2 · N · out · (C/groups) · kh · kw · H' · W': a multiply and an add per weight and
    output element."""
    _, per_group, kh, kw = weight_shape
    return 2.0 * math.prod(output_shape) * per_group * kh * kw


@dataclass(frozen=True)
class ConvPlan:
    """The shapes of a convolution request, checked and charged."""

    conv_shape: list[int]
    output_shape: list[int]


def plan_pool(
    spec: PoolSpec, shape: Sequence[int], dtype: torch.dtype, budget: Budget
) -> list[int]:
    """The pooled shape of an input of ``shape``, with torch's checks on ``meta``; the
    output and FLOPs are charged."""
    out = pool2d(torch.empty(tuple(shape), dtype=dtype, device=META), spec)
    shape_out = list(out.shape)
    budget.charge_tensor(math.prod(shape_out), f"the {spec.kind} pooling's output")
    budget.charge_flops(pool_flops(spec, shape, shape_out), f"the {spec.kind} pooling")
    return shape_out


def plan_conv(
    input_shape: Sequence[int],
    dtype: torch.dtype,
    weight_shape: Sequence[int],
    spec: ConvSpec,
    budget: Budget,
    *,
    activation: BoundActivation | None = None,
    pool: PoolSpec | None = None,
) -> ConvPlan:
    """The convolution's shape (and, after the activation and pooling, the output's), with
    torch's checks on ``meta``; every output and the FLOPs are charged."""
    x = torch.empty(tuple(input_shape), dtype=dtype, device=META)
    w = torch.empty(tuple(weight_shape), dtype=dtype, device=META)
    conv = conv2d(x, w, None, spec)
    conv_shape = list(conv.shape)
    budget.charge_tensor(math.prod(conv_shape), "the convolution's output")
    budget.charge_flops(conv_flops(weight_shape, conv_shape), "the convolution")
    if activation is not None:
        charge([activation], conv, budget, derivative=False)
    output_shape = conv_shape if pool is None else plan_pool(pool, conv_shape, dtype, budget)
    return ConvPlan(conv_shape, output_shape)


@dataclass(frozen=True)
class ConvResult:
    """A convolution's output (after activation and pooling) and its shape before them."""

    output: torch.Tensor
    conv_shape: list[int]


def conv_forward(
    x: torch.Tensor,
    weight: ConvWeight,
    spec: ConvSpec,
    *,
    activation: BoundActivation | None = None,
    pool: PoolSpec | None = None,
    device: torch.device,
    deadline: Deadline | None = None,
) -> ConvResult:
    """Convolve ``x`` ``[N, C, H, W]`` on ``device``, then apply the activation and the
    pooling when given. Returns CPU tensors."""
    on_device = x.to(device)
    w = weight.weight.to(device)
    b = None if weight.bias is None else weight.bias.to(device)
    y = conv2d(on_device, w, b, spec)
    conv_shape = list(y.shape)
    if deadline is not None:
        deadline.check()
    if activation is not None:
        y = evaluate(activation, y).y
    if pool is not None:
        y = pool2d(y, pool)
    return ConvResult(y.cpu(), conv_shape)


def pool_forward(x: torch.Tensor, spec: PoolSpec, *, device: torch.device) -> torch.Tensor:
    """Pool ``x`` ``[N, C, H, W]`` on ``device``; returns a CPU tensor."""
    return pool2d(x.to(device), spec).cpu()
