"""``POST /conv`` and ``POST /pool``: 2-D convolution and pooling of an image or a tensor
(tutorial chapters 6.1 and 6.2).

The input is a tensor (`input`), a base64 PNG/JPEG (`image`) or, in a multipart request, an
uploaded `image` file. Images become float32 in [0, 255], grayscale `[1, 1, H, W]` by default
(as the tutorial's `myimgray`), `[1, 3, H, W]` with `"mode": "RGB"`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from schemas.activations import ActivationSpec, FunctionName
from schemas.common import (
    ComputeRequest,
    ComputeResponse,
    Int,
    Rule,
    StrictModel,
    Tensor1D,
    Tensor2To4D,
    TensorOut,
    given,
    has_value,
    needs,
    none_given,
    not_together,
    one_given,
    when_value,
)

MAX_SIDE = 1 << 16
"""Largest kernel, stride, padding, dilation or output size along one dimension."""
MAX_KERNEL_SIZE = 63
"""Largest `kernel_size` of the preset kernels."""
MAX_KERNELS = 64
"""Entries of `kernels`, at most."""
MAX_BASE64_CHARS = 1 << 28
"""Characters of a base64 `image`, at most (the body size limit is usually smaller)."""


def _file_base64_pattern() -> str:
    # Standard base64 with its padding, line breaks anywhere, after an optional data URL
    # prefix (`data:image/png;base64,`, its letters in any case).
    char = r"[A-Za-z0-9+/][\r\n]*"
    prefix = r"[Dd][Aa][Tt][Aa]:[A-Za-z0-9_.+/-]*(?:;[A-Za-z0-9_=.+-]+)*;[Bb][Aa][Ss][Ee]64,"
    padded = rf"{char}{char}=[\r\n]*=[\r\n]*|{char}{char}{char}=[\r\n]*"
    return rf"^(?:{prefix})?[\r\n]*(?:{char}{char}{char}{char})*(?:{padded})?$"


FILE_BASE64_PATTERN = _file_base64_pattern()
"""What a file sent as base64 text (`image`, `images`, `archive`) may be; what it holds is
checked when it is read (415 not a picture or not a zip, 422 truncated)."""

KernelPreset = Literal[
    "edge", "sobel_x", "sobel_y", "laplacian", "gaussian", "box", "sharpen", "emboss", "random"
]
"""The preset kernels' names."""

PRESET_NAMES: tuple[str, ...] = KernelPreset.__args__  # type: ignore[attr-defined]

PoolKind = Literal["max", "avg", "adaptive_avg", "adaptive_max", "lp"]
ImageMode = Literal["L", "RGB"]

_Side = Annotated[Int, Field(ge=1, le=MAX_SIDE)]
_Offset = Annotated[Int, Field(ge=0, le=MAX_SIDE)]
_OptionalSide = Annotated[Int, Field(ge=1, le=MAX_SIDE)] | None

SidePair = _Side | Annotated[list[_Side], Field(min_length=2, max_length=2)]
"""One size for both dimensions, or `[height, width]`."""
OffsetPair = _Offset | Annotated[list[_Offset], Field(min_length=2, max_length=2)]
"""One padding for both dimensions, or `[height, width]`."""

_KERNELS_DOC = (
    "The kernels, one output channel each (in order): a preset name or an explicit kernel. "
    "Presets, all `kernel_size`×`kernel_size` (odd, ≥ 3): `edge` — the tutorial's kernel, "
    "−1 everywhere and k²−1 in the centre (24 for 5×5); `sobel_x`, `sobel_y` — Sobel "
    "derivatives (3×3: [[−1,0,1],[−2,0,2],[−1,0,1]] and its transpose; larger sizes as "
    "OpenCV's extended Sobel, binomial smoothing × derivative); `laplacian` — "
    "[[0,1,0],[1,−4,1],[0,1,0]] at 3×3, OpenCV's `Laplacian(ksize=k)` beyond; `gaussian` — "
    "normalised, standard deviation `sigma` (default OpenCV's 0.3·((k−1)/2 − 1) + 0.8); `box` "
    "— the mean, 1/k²; `sharpen` — the identity minus `laplacian` (3×3: "
    "[[0,−1,0],[−1,5,−1],[0,−1,0]]); `emboss` — (i−c)+(j−c) with 1 in the centre (3×3: "
    "[[−2,−1,0],[−1,1,1],[0,1,2]]); `random` — the values `torch.manual_seed(seed); "
    "torch.nn.Conv2d(C, len(kernels), k, groups=groups)` draws for that output channel "
    "(uniform on ±1/√(C/groups·k²)). A preset is applied to every input channel of its group "
    "and summed, as `nn.Conv2d` sums over channels. Explicit kernels: `[kh, kw]` (applied to "
    "every input channel, like a preset), `[C/groups, kh, kw]` (one output channel) or "
    "`[out, C/groups, kh, kw]` (`out` output channels). Every kernel of a request has one "
    'size. An unknown name is a 422 `unknown_kernel`. Default: `["edge"]`.'
)


class ImageInputRequest(ComputeRequest):
    """The input of `/conv` and `/pool`: a tensor, a base64 image or an uploaded image."""

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = (
        not_together("input", "image"),
        one_given("input", "image"),
    )

    input: Tensor2To4D | None = Field(
        default=None,
        description="The input tensor: [H, W] (one channel), [C, H, W] or [N, C, H, W]. "
        "Computed in float64 when it is float64, else in float32 (integers and booleans are "
        "converted). Give this, `image`, or an uploaded `image` file.",
        examples=[[[0.0, 0.0, 9.0], [0.0, 9.0, 0.0], [9.0, 0.0, 0.0]]],
    )
    image: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_BASE64_CHARS,
                json_schema_extra={"pattern": FILE_BASE64_PATTERN},
            ),
        ]
        | None
    ) = Field(
        default=None,
        description="A picture as base64 text (a `data:image/...;base64,` prefix is allowed): "
        "PNG, JPEG, BMP, GIF (first frame), WebP or TIFF (first page). Decoded by Pillow "
        "after its header is checked against the pixel limit (413 `image_pixels_limit`); data "
        "that is not one of these formats is a 415, a truncated or corrupt picture a 422 "
        "`invalid_image`. In a multipart request, upload the file in the `image` field "
        "instead.",
    )
    mode: ImageMode = Field(
        default="L",
        description="How a picture becomes a tensor: `L` (default) grayscale [1, 1, H, W], "
        "as Pillow's `convert('L')` (ITU-R 601-2 luma), float32 in [0, 255] like the "
        "tutorial's; `RGB` three channels [1, 3, H, W]. Ignored for a tensor `input`.",
    )
    format: Literal["json", "png"] = Field(
        default="json",
        description="`json`: the tensors. `png`: a picture, one row per sample of the batch: "
        "the input (RGB for 3 channels, else one panel per channel) and then every output "
        "channel, side by side, each scaled to 0–255 on its own (min → black, max → white) "
        "and labelled above; see the response's headers.",
    )

    @model_validator(mode="after")
    def _one_input(self) -> ImageInputRequest:
        if self.input is not None and self.image is not None:
            raise ValueError("give `input` or `image`, not both")
        return self


_POOL_PARAMS: dict[str, frozenset[str]] = {
    "max": frozenset({"kernel_size", "stride", "padding", "dilation", "ceil_mode"}),
    "avg": frozenset({"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"}),
    "lp": frozenset({"kernel_size", "stride", "ceil_mode", "norm_type"}),
    "adaptive_avg": frozenset({"output_size"}),
    "adaptive_max": frozenset({"output_size"}),
}
"""The parameters each kind of pooling takes."""
_POOL_PARAM_NAMES = (
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "ceil_mode",
    "count_include_pad",
    "output_size",
    "norm_type",
)


def _pool_rules() -> tuple[Rule, ...]:
    rules: list[Rule] = []
    kinds = tuple(_POOL_PARAMS)
    for kind, allowed in _POOL_PARAMS.items():
        others = [name for name in _POOL_PARAM_NAMES if name not in allowed]
        rules.append(when_value("kind", (kind,), none_given(*others), choices=kinds, default="max"))
    adaptive = ("adaptive_avg", "adaptive_max")
    rules.append(when_value("kind", adaptive, given("output_size"), choices=kinds, default="max"))
    return tuple(rules)


class PoolParams(StrictModel):
    """`torch.nn.functional`'s pooling: `max_pool2d`, `avg_pool2d`, `adaptive_avg_pool2d`,
    `adaptive_max_pool2d` or `lp_pool2d`, with torch's parameter names. Each kind takes its
    own parameters (see each one's description); another kind's is a 422."""

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = _pool_rules()

    kind: PoolKind = Field(
        default="max",
        description="`max` (default, the tutorial's `nn.MaxPool2d`), `avg`, `adaptive_avg` "
        "(the tutorial's `nn.AdaptiveAvgPool2d`), `adaptive_max` or `lp` (power-average, "
        "`nn.LPPool2d`).",
    )
    kernel_size: SidePair | None = Field(
        default=None,
        description="Window size (`max`, `avg`, `lp`); default 2. Not for the adaptive kinds.",
        examples=[2],
    )
    stride: SidePair | None = Field(
        default=None,
        description="Window step (`max`, `avg`, `lp`); default `kernel_size` (as in torch).",
        examples=[2],
    )
    padding: OffsetPair | None = Field(
        default=None,
        description="Implicit padding on both sides (`max`: −∞, `avg`: zeros), at most half "
        "the kernel size; default 0. Only `max` and `avg`.",
    )
    dilation: SidePair | None = Field(
        default=None, description="Spacing between window elements; default 1. Only `max`."
    )
    ceil_mode: bool | None = Field(
        default=None,
        description="Round the output size up instead of down (`max`, `avg`, `lp`); default false.",
    )
    count_include_pad: bool | None = Field(
        default=None,
        description="Whether padded zeros count in the average; default true. Only `avg`.",
    )
    output_size: (
        _Side | Annotated[list[_OptionalSide], Field(min_length=2, max_length=2)] | None
    ) = Field(
        default=None,
        description="The output's [H', W'] (one number for both; null in the list keeps that "
        "dimension). Required for the adaptive kinds, and only for them.",
        examples=[[7, 7]],
    )
    norm_type: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="p of the power-average (sum of x^p)^(1/p); default 2. Only `lp`.",
    )

    @model_validator(mode="after")
    def _fits_the_kind(self) -> PoolParams:
        allowed = _POOL_PARAMS[self.kind]
        present = {name for name in _POOL_PARAM_NAMES if getattr(self, name) is not None}
        extra = sorted(present - allowed)
        if extra:
            verb = "does" if len(extra) == 1 else "do"
            raise ValueError(
                f"{', '.join(extra)} {verb} not apply to kind {self.kind!r}; it takes "
                f"{', '.join(sorted(allowed))}"
            )
        if self.kind.startswith("adaptive") and self.output_size is None:
            raise ValueError(f"kind {self.kind!r} needs output_size")
        return self


_TUTORIAL_INPUT: Any = [
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 9.0, 9.0, 9.0, 9.0, 0.0],
    [0.0, 9.0, 0.0, 0.0, 9.0, 0.0],
    [0.0, 9.0, 0.0, 0.0, 9.0, 0.0],
    [0.0, 9.0, 9.0, 9.0, 9.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
]

# An 8×8 grayscale PNG (a diagonal gradient), so the docs page can try an image without a file.
_EXAMPLE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAEElEQVR42mNkEIIAJiGKGACfigR+"
    "wbJOAwAAAABJRU5ErkJggg=="
)


class ConvRequest(ImageInputRequest):
    """`torch.nn.functional.conv2d` of the input with preset or explicit kernels, then an
    optional activation and an optional pooling, in that order (chapter 6.1).

    The tutorial's case: a 512×768 grayscale photo with `kernels: ["edge", "random"]`
    (5×5) gives `output` [1, 2, 508, 764]; with `pool: {"kind": "max", "kernel_size": 2,
    "stride": 2}` [1, 2, 254, 382].
    """

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = (
        needs("bias_values", has_value("bias", (True,), default=False)),
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "input": _TUTORIAL_INPUT,
                    "kernels": ["edge", "random"],
                    "kernel_size": 3,
                    "seed": 0,
                },
                {
                    "input": _TUTORIAL_INPUT,
                    "kernels": ["sobel_x", [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]],
                    "kernel_size": 3,
                    "padding": "same",
                    "activation": "relu",
                    "pool": {"kind": "max", "kernel_size": 2, "stride": 2},
                },
                {"image": _EXAMPLE_PNG, "kernels": ["edge", "random"], "kernel_size": 3},
                {
                    "image": _EXAMPLE_PNG,
                    "kernels": ["sobel_x", "sobel_y"],
                    "kernel_size": 3,
                    "format": "png",
                },
            ]
        }
    }

    kernels: list[KernelPreset | Tensor2To4D] = Field(
        default_factory=lambda: ["edge"],  # type: ignore[arg-type]
        min_length=1,
        max_length=MAX_KERNELS,
        description=_KERNELS_DOC,
        examples=[["edge", "random"]],
    )
    kernel_size: Int | None = Field(
        default=None,
        ge=1,
        le=MAX_KERNEL_SIZE,
        description="Size of the preset kernels (k×k); default 5 (the tutorial's), or the "
        "explicit kernels' size when they are square. Presets other than `random` need an "
        "odd size ≥ 3 (422 `invalid_kernel_size`).",
        examples=[5],
    )
    sigma: float | None = Field(
        default=None,
        gt=0,
        le=1e4,
        description="Standard deviation of the `gaussian` preset, in pixels; default "
        "OpenCV's 0.3·((kernel_size−1)/2 − 1) + 0.8.",
    )
    stride: SidePair = Field(default=1, description="Step of the kernel; default 1.")
    padding: OffsetPair | Literal["valid", "same"] = Field(
        default=0,
        description="Zeros added on each side: a number, `[height, width]`, `valid` (= 0, "
        "the default, as in the tutorial) or `same` (output as large as the input; needs "
        "stride 1).",
    )
    dilation: SidePair = Field(default=1, description="Spacing between kernel elements.")
    groups: Int = Field(
        default=1,
        ge=1,
        le=MAX_SIDE,
        description="Blocked connections: input channels and output channels are split "
        "into `groups` groups, each convolved separately; both must divide by it.",
    )
    bias: bool = Field(
        default=False,
        description="Add a bias per output channel (default false, as in the tutorial): "
        "`bias_values` or, without them, the values `nn.Conv2d` draws after the weight "
        "(seeded by `seed`).",
    )
    bias_values: Tensor1D | None = Field(
        default=None,
        description="The bias, one value per output channel (only with `bias` true).",
        examples=[[0.0, 1.0]],
    )
    activation: FunctionName | ActivationSpec | None = Field(
        default=None,
        description="An activation applied after the convolution: any name `GET /activate` "
        "lists (`relu`, `LeakyReLU`, …), or `{function, params}`.",
        examples=["relu"],
    )
    pool: PoolParams | None = Field(
        default=None,
        description="A pooling applied last (after `activation`), with `/pool`'s parameters.",
        examples=[{"kind": "max", "kernel_size": 2, "stride": 2}],
    )

    @model_validator(mode="after")
    def _bias_values_need_bias(self) -> ConvRequest:
        if self.bias_values is not None and not self.bias:
            raise ValueError("bias_values need `bias: true`")
        return self


class PoolRequest(ImageInputRequest, PoolParams):
    """Pooling of the input (chapter 6.2): `kind` with torch's parameters. The tutorial's
    `nn.MaxPool2d(2, stride=2)` of its [1, 2, 508, 764] feature maps gives [1, 2, 254, 382]."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"input": _TUTORIAL_INPUT, "kind": "max", "kernel_size": 2, "stride": 2},
                {"input": _TUTORIAL_INPUT, "kind": "adaptive_avg", "output_size": [2, 2]},
                {"input": _TUTORIAL_INPUT, "kind": "lp", "norm_type": 2.0, "kernel_size": 3},
                {"image": _EXAMPLE_PNG, "kind": "avg", "kernel_size": 2, "format": "png"},
            ]
        }
    }


class ConvResponse(ComputeResponse):
    """The convolution's output and the parameters it used."""

    output: TensorOut = Field(
        description="[N, out_channels, H', W']: the convolution, after `activation` and "
        "`pool` when given."
    )
    weight: TensorOut = Field(
        description="The weight used, [out_channels, C/groups, kh, kw]: the presets, the "
        "explicit kernels and the drawn `random` ones."
    )
    bias: TensorOut | None = Field(
        description="The bias used, [out_channels]; null without `bias`."
    )
    kernels: list[str] = Field(
        description="One label per output channel: the preset's name or `kernel[i]` "
        "(`kernel[i][j]` for the j-th of a 4-D explicit kernel).",
        examples=[["edge", "random"]],
    )
    input_shape: list[int] = Field(
        description="The input as convolved, [N, C, H, W].", examples=[[1, 1, 512, 768]]
    )
    conv_shape: list[int] = Field(
        description="The convolution's shape before `activation` and `pool`.",
        examples=[[1, 2, 508, 764]],
    )


class PoolResponse(ComputeResponse):
    """The pooled output."""

    output: TensorOut = Field(description="[N, C, H', W'], the pooled input.")
    input_shape: list[int] = Field(
        description="The input as pooled, [N, C, H, W].", examples=[[1, 2, 508, 764]]
    )
