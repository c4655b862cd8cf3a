"""The models of the V2 endpoints: every activation of the registry under its
``torch.nn.functional`` name, and ``matmul``, ``linear``, ``conv2d``, ``max_pool2d`` and
``avg_pool2d``. Inputs are named after torch's parameters, the output is ``output``, and
the functions' other arguments are the request's ``parameters``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.v2 import (
    MODEL_VERSION,
    OUTPUT_NAME,
    ConfigInput,
    ConfigOutput,
    MetadataTensor,
    ModelConfigResponse,
    ModelMetadataResponse,
    ModelParameter,
)
from service.errors import ErrorCode, NotFound
from service.ops.nn.registry import ACTIVATIONS, Activation

Kind = Literal["activation", "matmul", "linear", "conv2d", "max_pool2d", "avg_pool2d"]
FREE = -1
"""A free size in a model's metadata."""
PLATFORM = "pytorch"
BACKEND = "pytorch"
FLOAT = "FP32"
"""The dtype a floating model declares; FP16, BF16 and FP64 are taken as well."""


@dataclass(frozen=True)
class TensorSpec:
    """An input (or the output) of a model."""

    name: str
    shape: tuple[int, ...]
    optional: bool = False
    datatype: str = FLOAT


@dataclass(frozen=True)
class ParamSpec:
    """A request parameter of a model: torch's name, what a value is, torch's default."""

    name: str
    expected: str
    default: object
    description: str


@dataclass(frozen=True)
class Model:
    """One operation served as a model."""

    name: str
    kind: Kind
    description: str
    inputs: tuple[TensorSpec, ...]
    output_shape: tuple[int, ...]
    params: tuple[ParamSpec, ...] = ()

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def metadata(self) -> ModelMetadataResponse:
        """The model's metadata, as ``GET /v2/models/{name}`` answers it."""
        return ModelMetadataResponse(
            name=self.name,
            versions=[MODEL_VERSION],
            platform=PLATFORM,
            description=self.description,
            inputs=[_tensor(spec) for spec in self.inputs],
            outputs=[_tensor(TensorSpec(OUTPUT_NAME, self.output_shape))],
            parameters=[
                ModelParameter(
                    name=p.name, type=p.expected, default=p.default, description=p.description
                )
                for p in self.params
            ],
        )

    def config(self) -> ModelConfigResponse:
        """The model's configuration, as ``GET /v2/models/{name}/config`` answers it
        (Triton's ``ModelConfig``): the metadata's tensors, with no batching by the server."""
        return ModelConfigResponse(
            name=self.name,
            platform=PLATFORM,
            backend=BACKEND,
            version_policy={"latest": {"num_versions": 1}},
            max_batch_size=0,
            input=[
                ConfigInput(
                    name=spec.name,
                    data_type=_triton_type(spec.datatype),
                    dims=list(spec.shape),
                    optional=spec.optional,
                )
                for spec in self.inputs
            ],
            output=[
                ConfigOutput(
                    name=OUTPUT_NAME, data_type=_triton_type(FLOAT), dims=list(self.output_shape)
                )
            ],
        )


def _triton_type(datatype: str) -> str:
    """Triton's name of a protocol dtype in a model configuration: ``FP32`` -> ``TYPE_FP32``."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _tensor(spec: TensorSpec) -> MetadataTensor:
    return MetadataTensor(
        name=spec.name, datatype=spec.datatype, shape=list(spec.shape), optional=spec.optional
    )


_PAIR = "an integer or a list of two"
_NCHW = (FREE, FREE, FREE, FREE)


def _activation(activation: Activation) -> Model:
    return Model(
        activation.name,
        "activation",
        f"torch.nn.functional.{activation.name}: {activation.formula} (output "
        f"{activation.output_range}); any shape, the output has the input's",
        (TensorSpec("input", (FREE,)),),
        (FREE,),
        tuple(ParamSpec(p.name, p.expected, p.default, p.description) for p in activation.params),
    )


_POOL_PARAMS = (
    ParamSpec("kernel_size", _PAIR, None, "The window, (height, width)."),
    ParamSpec("stride", _PAIR, None, "The step between windows; default the window's size."),
    ParamSpec("padding", _PAIR, 0, "Implicit padding on both sides (at most half the window)."),
)

OPERATIONS: tuple[Model, ...] = (
    Model(
        "matmul",
        "matmul",
        "torch.matmul(input, other): matrix product, with batch dimensions broadcast",
        (TensorSpec("input", (FREE, FREE)), TensorSpec("other", (FREE, FREE))),
        (FREE, FREE),
    ),
    Model(
        "linear",
        "linear",
        "torch.nn.functional.linear(input, weight, bias) = input·weightᵀ + bias; input "
        "[*, in_features], weight [out_features, in_features], bias [out_features]",
        (
            TensorSpec("input", (FREE, FREE)),
            TensorSpec("weight", (FREE, FREE)),
            TensorSpec("bias", (FREE,), optional=True),
        ),
        (FREE, FREE),
    ),
    Model(
        "conv2d",
        "conv2d",
        "torch.nn.functional.conv2d(input, weight, bias, stride, padding, dilation, groups); "
        "input [N, C, H, W] (or [C, H, W]), weight [out_channels, C/groups, kH, kW]",
        (
            TensorSpec("input", _NCHW),
            TensorSpec("weight", _NCHW),
            TensorSpec("bias", (FREE,), optional=True),
        ),
        _NCHW,
        (
            ParamSpec("stride", _PAIR, 1, "The step of the kernel."),
            ParamSpec("padding", f"{_PAIR}, or 'same' or 'valid'", 0, "Implicit zero padding."),
            ParamSpec("dilation", _PAIR, 1, "The spacing between kernel elements."),
            ParamSpec(
                "groups",
                "an integer",
                1,
                "Blocked connections: C and out_channels must both be multiples of it.",
            ),
        ),
    ),
    Model(
        "max_pool2d",
        "max_pool2d",
        "torch.nn.functional.max_pool2d(input, kernel_size, stride, padding); input "
        "[N, C, H, W] (or [C, H, W])",
        (TensorSpec("input", _NCHW),),
        _NCHW,
        _POOL_PARAMS,
    ),
    Model(
        "avg_pool2d",
        "avg_pool2d",
        "torch.nn.functional.avg_pool2d(input, kernel_size, stride, padding); input "
        "[N, C, H, W] (or [C, H, W])",
        (TensorSpec("input", _NCHW),),
        _NCHW,
        _POOL_PARAMS,
    ),
)

MODELS: dict[str, Model] = {
    model.name: model for model in (*(_activation(a) for a in ACTIVATIONS), *OPERATIONS)
}
"""Every model by name: the activations first, in the registry's order."""


def find_model(name: str, version: str | None = None) -> Model:
    """The model called ``name`` (of version ``version``, when given); a 404 otherwise."""
    model = MODELS.get(name)
    if model is None:
        raise NotFound(
            f"no model {name[:64]!r}; models: {', '.join(MODELS)} (GET /v2/models lists them)",
            details={"model": name[:64]},
            code=ErrorCode.NOT_FOUND,
        )
    if version is not None and version != MODEL_VERSION:
        raise NotFound(
            f"model {name!r} has no version {version[:16]!r}; its one version is {MODEL_VERSION!r}",
            details={"model": name, "version": version[:16]},
            code=ErrorCode.NOT_FOUND,
        )
    return model
