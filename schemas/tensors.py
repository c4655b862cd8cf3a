"""``POST /tensor/ops``: a program of tensor steps over named tensors.

Each op is its own model, with torch's parameter names, in a union discriminated by ``op``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field

from schemas.common import (
    MAX_NDIM,
    MAX_TENSORS,
    ComputeRequest,
    ComputeResponse,
    DType,
    FloatDType,
    Int,
    Rule,
    Seed,
    StrictModel,
    Tensor,
    TensorOrScalar,
    TensorOut,
    TensorRef,
    at_most,
    keys_named,
    one_given,
)

Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$", max_length=64)]
Size = Annotated[
    list[Annotated[Int, Field(ge=0)]],
    Field(max_length=8, description="Sizes of the dimensions (at most 8).", examples=[[2, 3]]),
]
Dim = Annotated[
    Int,
    Field(
        ge=-MAX_NDIM,
        lt=MAX_NDIM,
        description="A dimension of x; negative counts from the end.",
    ),
]
OptDims = Annotated[
    Dim | Annotated[list[Dim], Field(max_length=MAX_NDIM)] | None,
    Field(description="Dimension(s) to reduce; null reduces over every dimension."),
]
Number = Int | float
KeepDim = Annotated[bool, Field(description="Keep each reduced dimension, with size 1.")]
ResultDType = Annotated[
    DType | None,
    Field(description="dtype of the result (the input is cast first); default: torch's choice."),
]
ArgDim = Annotated[
    Dim | None, Field(description="Dimension to reduce; null: over the flattened tensor.")
]
Alpha = Annotated[Number, Field(description="Multiplier of y.")]
Correction = Annotated[
    Number,
    Field(description="Subtracted from the count in the divisor: 1 = sample, 0 = population."),
]
Shape = Annotated[
    list[Annotated[Int, Field(ge=-1)]],
    Field(
        max_length=8,
        description="The new shape; one size may be -1 (inferred).",
        examples=[[2, 2, -1]],
    ),
]
Tensors = Annotated[
    list[TensorRef],
    Field(
        min_length=1,
        max_length=64,
        description="Tensors (names or inline) to join.",
        examples=[["a", "a"]],
    ),
]

MAX_STEPS = 4096
"""Steps of a program, at most, whatever ``max_steps`` allows (under it, a 413 once the
program is read): 4,096 steps validate in 15 ms, where the 50,000 of a megabyte took 0.12 s.
The steps stop at their first invalid one, as the lists below do: 524,000 invalid steps were
as many errors, 3 s of the server's interpreter."""
MAX_LISTED = 1 << 20
"""Sizes of a split, and names to return, at most: the default ``max_objects`` (each makes an
object)."""

MAX_INDEX_LENGTH = 1000
"""Longest index text of an `index` step, in characters."""
MAX_INDEX_ITEMS = 64
"""Most items of an index text."""


def _index_pattern() -> str:
    # The grammar of service.ops.tensors.indexing as a regular expression (ECMA-262, as JSON
    # Schema's patterns are), with torch's rule that a slice step is positive: integers of at
    # most 19 digits, `None`, slices start:stop:step, at most one `...`, optional brackets.
    space = r"[ \t\n\r\f\v]*"
    integer = rf"(?:[+-]{space})?[0-9]{{1,19}}"
    nonzero = "[1-9]"  # not 0, in at most `digits` digits (leading zeros count)
    for digits in range(2, 20):
        nonzero = rf"[1-9][0-9]{{0,{digits - 1}}}|0(?:{nonzero})"
    step = rf"(?:(?:\+{space})?(?:{nonzero})|None)"
    part = rf"(?:{integer}|None)"
    sliced = rf"{part}?{space}:{space}{part}?(?:{space}:{space}{step}?)?"
    item = rf"{space}(?:{sliced}|{part}){space}"
    ellipsis = rf"{space}\.\.\.{space}"
    # Items before, one item or `...`, items after: at most one ellipsis.
    items = rf"(?:{item},)*(?:{item}|{ellipsis})(?:,{item})*(?:,{space})?"
    return rf"^{space}(?:\[{space}(?:{items})?\]|{items})?{space}$"


INDEX_PATTERN = _index_pattern()
"""What an `index` step's text may be, as the published schema says it (the count of items
aside). The service reads the text with its own parser, whose errors say where and why."""


class Step(StrictModel):
    """Fields every step has."""

    out: Name = Field(
        default="out",
        description="Name the result is stored under; later steps and `return` refer to it. "
        "Ops with several results store them as `<out>.0`, `<out>.1`, ….",
    )


X = Annotated[TensorRef, Field(description="Input tensor: a name or an inline tensor.")]
Y = Annotated[
    TensorOrScalar,
    Field(
        description="Second operand: a name, an inline tensor or a number (broadcast as in "
        'torch); non-finite numbers are the strings "NaN", "Infinity", "-Infinity".'
    ),
]


# --- factories -------------------------------------------------------------------------------


class TensorStep(Step):
    """`torch.tensor(data, dtype=dtype)`: a tensor written inline."""

    op: Literal["tensor"]
    data: Tensor = Field(description="The values, in any tensor form.", examples=[[[1, 2], [3, 4]]])
    dtype: DType | None = Field(default=None, description="Cast to this dtype.")


class EyeStep(Step):
    """`torch.eye(n, m)`: ones on the diagonal."""

    op: Literal["eye"]
    n: Int = Field(ge=0, description="Rows.", examples=[4])
    m: Int | None = Field(default=None, ge=0, description="Columns (default n).")
    dtype: DType | None = Field(default=None, description="Default float32.")


class ZerosStep(Step):
    """`torch.zeros(size)`."""

    op: Literal["zeros"]
    size: Size
    dtype: DType | None = Field(default=None, description="Default float32.")


class OnesStep(Step):
    """`torch.ones(size)`."""

    op: Literal["ones"]
    size: Size
    dtype: DType | None = Field(default=None, description="Default float32.")


class FullStep(Step):
    """`torch.full(size, fill_value)`."""

    op: Literal["full"]
    size: Size
    fill_value: Number | bool = Field(description="The value of every element.", examples=[7])
    dtype: DType | None = Field(default=None, description="Default: inferred from fill_value.")


class ArangeStep(Step):
    """`torch.arange(start, end, step)`: int64 when all three are integers, else float32."""

    op: Literal["arange"]
    start: Number = Field(default=0, description="First value.")
    end: Number = Field(description="End (exclusive).", examples=[16])
    step: Number = Field(
        default=1, description="Spacing; not zero.", json_schema_extra={"not": {"const": 0}}
    )
    dtype: DType | None = Field(
        default=None,
        description="Default int64 when start, end and step are all integers, else float32.",
    )


class LinspaceStep(Step):
    """`torch.linspace(start, end, steps)`: evenly spaced, both ends included."""

    op: Literal["linspace"]
    start: Number = Field(description="First value.", examples=[-6])
    end: Number = Field(description="Last value (included).", examples=[6])
    steps: Int = Field(ge=0, description="Number of values.", examples=[100])
    dtype: DType | None = Field(default=None, description="Default float32.")


class RandStep(Step):
    """`torch.rand(size)`: uniform on [0, 1)."""

    op: Literal["rand"]
    size: Size
    dtype: FloatDType | None = Field(default=None, description="A float dtype; default float32.")
    seed: Seed | None = Field(default=None, description="Seed for this step alone.")


class RandnStep(Step):
    """`torch.randn(size)`: standard normal."""

    op: Literal["randn"]
    size: Size
    dtype: FloatDType | None = Field(default=None, description="A float dtype; default float32.")
    seed: Seed | None = Field(default=None, description="Seed for this step alone.")


class RandintStep(Step):
    """`torch.randint(low, high, size)`: integers in [low, high)."""

    op: Literal["randint"]
    low: Int = Field(default=0, description="Smallest value (included); below `high`.")
    high: Int = Field(description="One above the largest value.", examples=[10])
    size: Size
    dtype: DType | None = Field(default=None, description="Default int64.")
    seed: Seed | None = Field(default=None, description="Seed for this step alone.")


# --- shape -----------------------------------------------------------------------------------


class ReshapeStep(Step):
    """`torch.reshape(x, shape)`: one size may be -1 (inferred)."""

    op: Literal["reshape"]
    x: X
    shape: Shape


class ViewStep(Step):
    """`x.view(shape)`: like reshape but never copies; a non-contiguous x is a 422."""

    op: Literal["view"]
    x: X
    shape: Shape


class FlattenStep(Step):
    """`torch.flatten(x, start_dim, end_dim)`."""

    op: Literal["flatten"]
    x: X
    start_dim: Dim = 0
    end_dim: Dim = -1


class SqueezeStep(Step):
    """`torch.squeeze(x, dim)`: drop dimensions of size 1 (all of them when dim is null)."""

    op: Literal["squeeze"]
    x: X
    dim: OptDims = None


class UnsqueezeStep(Step):
    """`torch.unsqueeze(x, dim)`: insert a dimension of size 1."""

    op: Literal["unsqueeze"]
    x: X
    dim: Dim = Field(examples=[1])


class PermuteStep(Step):
    """`torch.permute(x, dims)`."""

    op: Literal["permute"]
    x: X
    dims: list[Dim] = Field(
        max_length=MAX_NDIM, description="The new order of the dimensions.", examples=[[1, 0]]
    )


class TransposeStep(Step):
    """`torch.transpose(x, dim0, dim1)`: a view; the result is not contiguous."""

    op: Literal["transpose"]
    x: X
    dim0: Dim = 0
    dim1: Dim = 1


class TStep(Step):
    """`torch.t(x)`: transpose of a tensor of at most 2 dimensions."""

    op: Literal["t"]
    x: X


class CatStep(Step):
    """`torch.cat(tensors, dim)`: join along an existing dimension."""

    op: Literal["cat"]
    tensors: Tensors
    dim: Dim = 0


class StackStep(Step):
    """`torch.stack(tensors, dim)`: join along a new dimension."""

    op: Literal["stack"]
    tensors: Tensors
    dim: Dim = 0


class SplitStep(Step):
    """`torch.split(x, split_size_or_sections, dim)`: pieces stored as `<out>.0`, `<out>.1`…"""

    op: Literal["split"]
    x: X
    split_size_or_sections: (
        Annotated[Int, Field(ge=0)]
        | Annotated[list[Annotated[Int, Field(ge=0)]], Field(max_length=MAX_LISTED, fail_fast=True)]
    ) = Field(
        description="Size of each piece (the last may be smaller; 0 only for an empty "
        "dimension), or the list of sizes (summing to the dimension's size).",
        examples=[2],
    )
    dim: Dim = 0


class ChunkStep(Step):
    """`torch.chunk(x, chunks, dim)`: pieces stored as `<out>.0`, `<out>.1`, …"""

    op: Literal["chunk"]
    x: X
    chunks: Int = Field(
        ge=1, description="Number of pieces (fewer when the size does not divide).", examples=[2]
    )
    dim: Dim = 0


class ExpandStep(Step):
    """`x.expand(size)`: broadcast to a larger size without copying (-1 keeps a size)."""

    op: Literal["expand"]
    x: X
    size: list[Annotated[Int, Field(ge=-1)]] = Field(
        max_length=8,
        description="The expanded size; -1 keeps a size; new leading dimensions may be added.",
        examples=[[3, 4]],
    )


class RepeatStep(Step):
    """`x.repeat(repeats)`: tile the tensor."""

    op: Literal["repeat"]
    x: X
    repeats: list[Annotated[Int, Field(ge=0)]] = Field(
        max_length=8,
        description="Copies along each dimension (at least one per dimension of x).",
        examples=[[2, 1]],
    )


class ContiguousStep(Step):
    """`x.contiguous()`: a C-ordered copy when x is not already one."""

    op: Literal["contiguous"]
    x: X


class CloneStep(Step):
    """`torch.clone(x)`."""

    op: Literal["clone"]
    x: X


class IndexStep(Step):
    """`x[index]` with NumPy/PyTorch basic indexing written as a string."""

    op: Literal["index"]
    x: X
    index: str = Field(
        max_length=MAX_INDEX_LENGTH,
        json_schema_extra={"pattern": INDEX_PATTERN},
        description="Integers (negative count from the end), slices `start:stop:step` (step "
        "> 0, as torch requires; bounds and steps are clamped to the dimension as NumPy "
        "clamps them), `None` (new axis) and at most one `...`, comma-separated, brackets "
        f"optional; at most {MAX_INDEX_ITEMS} items, and no more integers and slices than x "
        "has dimensions, each integer within its dimension. Parsed by the service, never "
        "evaluated.",
        examples=["[:, 1, :-1]"],
    )


class ToStep(Step):
    """`x.to(dtype)`."""

    op: Literal["to"]
    x: X
    dtype: DType = Field(description="The dtype to convert to.", examples=["float64"])


# --- elementwise and reductions -------------------------------------------------------------


class AddStep(Step):
    """`torch.add(x, y, alpha=alpha)` = x + alpha·y."""

    op: Literal["add"]
    x: X
    y: Y
    alpha: Alpha = 1


class SubStep(Step):
    """`torch.sub(x, y, alpha=alpha)` = x − alpha·y."""

    op: Literal["sub"]
    x: X
    y: Y
    alpha: Alpha = 1


class MulStep(Step):
    """`torch.mul(x, y)`."""

    op: Literal["mul"]
    x: X
    y: Y


class DivStep(Step):
    """`torch.div(x, y, rounding_mode=rounding_mode)`."""

    op: Literal["div"]
    x: X
    y: Y
    rounding_mode: Literal["trunc", "floor"] | None = Field(
        default=None, description="null: true division; `trunc` or `floor`: integer-style rounding."
    )


class PowStep(Step):
    """`torch.pow(x, exponent)`."""

    op: Literal["pow"]
    x: X
    exponent: TensorOrScalar = Field(
        description='A number (non-finite ones as "NaN", "Infinity", "-Infinity"), '
        "a name or an inline tensor (broadcast).",
        examples=[2],
    )


class ClampStep(Step):
    """`torch.clamp(x, min, max)`: at least one bound."""

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = (one_given("min", "max"),)

    op: Literal["clamp"]
    x: X
    min: Number | None = Field(default=None, description="Lower bound; null: none.")
    max: Number | None = Field(default=None, description="Upper bound; null: none.")


class MatmulStep(Step):
    """`torch.matmul(x, y)`: matrix product with matmul's 1-D and batch rules."""

    op: Literal["matmul"]
    x: X
    y: TensorRef = Field(description="Second operand: a name or inline tensor.")


class UnaryStep(Step):
    """An element-wise function of one tensor."""

    x: X


class NegStep(UnaryStep):
    """`torch.neg(x)` = −x."""

    op: Literal["neg"]


class AbsStep(UnaryStep):
    """`torch.abs(x)`."""

    op: Literal["abs"]


class ExpStep(UnaryStep):
    """`torch.exp(x)`."""

    op: Literal["exp"]


class LogStep(UnaryStep):
    """`torch.log(x)`: natural logarithm (NaN below 0, -Infinity at 0)."""

    op: Literal["log"]


class SqrtStep(UnaryStep):
    """`torch.sqrt(x)` (NaN below 0)."""

    op: Literal["sqrt"]


class SinStep(UnaryStep):
    """`torch.sin(x)`."""

    op: Literal["sin"]


class CosStep(UnaryStep):
    """`torch.cos(x)`."""

    op: Literal["cos"]


class TanhStep(UnaryStep):
    """`torch.tanh(x)`."""

    op: Literal["tanh"]


class SigmoidStep(UnaryStep):
    """`torch.sigmoid(x)` = 1 / (1 + e^−x)."""

    op: Literal["sigmoid"]


class ReluStep(UnaryStep):
    """`torch.relu(x)` = max(x, 0)."""

    op: Literal["relu"]


class SumStep(Step):
    """`torch.sum(x, dim, keepdim, dtype)`."""

    op: Literal["sum"]
    x: X
    dim: OptDims = None
    keepdim: KeepDim = False
    dtype: ResultDType = None


class MeanStep(Step):
    """`torch.mean(x, dim, keepdim, dtype)`: needs a float dtype (or `dtype`)."""

    op: Literal["mean"]
    x: X
    dim: OptDims = None
    keepdim: KeepDim = False
    dtype: ResultDType = None


class StdStep(Step):
    """`torch.std(x, dim, correction, keepdim)`: correction 1 is the sample std."""

    op: Literal["std"]
    x: X
    dim: OptDims = None
    correction: Correction = 1
    keepdim: KeepDim = False


class VarStep(Step):
    """`torch.var(x, dim, correction, keepdim)`."""

    op: Literal["var"]
    x: X
    dim: OptDims = None
    correction: Correction = 1
    keepdim: KeepDim = False


class MaxStep(Step):
    """`torch.max(x)` or, with dim, `torch.max(x, dim)`: values in `out`, indices in
    `<out>.indices`."""

    op: Literal["max"]
    x: X
    dim: ArgDim = None
    keepdim: KeepDim = False


class MinStep(Step):
    """`torch.min(x)` or, with dim, `torch.min(x, dim)`: values in `out`, indices in
    `<out>.indices`."""

    op: Literal["min"]
    x: X
    dim: ArgDim = None
    keepdim: KeepDim = False


class ArgmaxStep(Step):
    """`torch.argmax(x, dim, keepdim)`: over the flattened tensor when dim is null."""

    op: Literal["argmax"]
    x: X
    dim: ArgDim = None
    keepdim: KeepDim = False


class ArgminStep(Step):
    """`torch.argmin(x, dim, keepdim)`."""

    op: Literal["argmin"]
    x: X
    dim: ArgDim = None
    keepdim: KeepDim = False


class NormStep(Step):
    """`torch.norm(x, p, dim, keepdim)`: `fro` (= 2 for vectors), `nuc`, or a number p."""

    op: Literal["norm"]
    x: X
    p: Number | Literal["fro", "nuc", "Infinity", "-Infinity"] = Field(
        default="fro",
        description="Order of the norm: `fro` (Frobenius; 2 for vectors), `nuc` (nuclear), "
        "a number, or `Infinity` / `-Infinity` (largest / smallest absolute value).",
    )
    dim: OptDims = None
    keepdim: KeepDim = False


class CumsumStep(Step):
    """`torch.cumsum(x, dim, dtype)`."""

    op: Literal["cumsum"]
    x: X
    dim: Dim = Field(examples=[0])
    dtype: ResultDType = None


class SoftmaxStep(Step):
    """`torch.softmax(x, dim, dtype)`."""

    op: Literal["softmax"]
    x: X
    dim: Dim = Field(examples=[-1])
    dtype: ResultDType = None


class InfoStep(Step):
    """Metadata of x as JSON: shape, size, stride, numel, dtype, is_contiguous."""

    op: Literal["info"]
    x: X


TensorStepUnion = Annotated[
    TensorStep
    | EyeStep
    | ZerosStep
    | OnesStep
    | FullStep
    | ArangeStep
    | LinspaceStep
    | RandStep
    | RandnStep
    | RandintStep
    | ReshapeStep
    | ViewStep
    | FlattenStep
    | SqueezeStep
    | UnsqueezeStep
    | PermuteStep
    | TransposeStep
    | TStep
    | CatStep
    | StackStep
    | SplitStep
    | ChunkStep
    | ExpandStep
    | RepeatStep
    | ContiguousStep
    | CloneStep
    | IndexStep
    | ToStep
    | AddStep
    | SubStep
    | MulStep
    | DivStep
    | PowStep
    | ClampStep
    | MatmulStep
    | NegStep
    | AbsStep
    | ExpStep
    | LogStep
    | SqrtStep
    | SinStep
    | CosStep
    | TanhStep
    | SigmoidStep
    | ReluStep
    | SumStep
    | MeanStep
    | StdStep
    | VarStep
    | MaxStep
    | MinStep
    | ArgmaxStep
    | ArgminStep
    | NormStep
    | CumsumStep
    | SoftmaxStep
    | InfoStep,
    Field(discriminator="op"),
]

TUTORIAL_PROGRAM: dict[str, Any] = {
    "inputs": {"a": [[1, 2], [3, 4]]},
    "steps": [
        {"op": "arange", "end": 16, "out": "t3"},
        {"op": "reshape", "x": "t3", "shape": [2, 2, -1], "out": "t3"},
        {"op": "index", "x": "t3", "index": "[:, 1, :-1]", "out": "s"},
        {"op": "cat", "tensors": ["a", "a"], "dim": 0, "out": "c"},
    ],
    "return": ["s", "c"],
}


class TensorOpsRequest(ComputeRequest):
    """A program: named input tensors, then steps run in order, then the tensors to return."""

    model_config = {"json_schema_extra": {"examples": [TUTORIAL_PROGRAM]}, "populate_by_name": True}

    inputs: Annotated[dict[Name, Tensor], at_most(MAX_TENSORS)] = Field(
        default_factory=dict,
        max_length=MAX_TENSORS,
        description=f"Named input tensors, each in any tensor form; at most {MAX_TENSORS:,}.",
        examples=[{"a": [[1, 2], [3, 4]]}],
        json_schema_extra=keys_named,
    )
    steps: list[TensorStepUnion] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        fail_fast=True,
        description="Steps run in order. Each reads tensors by name (or inline) and stores "
        "its result under `out`. The count is limited (see `GET /info`).",
    )
    returns: Annotated[list[Name], Field(max_length=MAX_LISTED, fail_fast=True)] | None = Field(
        default=None,
        alias="return",
        description="Names to return; default: what the last step stored.",
        examples=[["s", "c"]],
    )


class TensorInfo(BaseModel):
    """What an `info` step returns."""

    shape: list[int] = Field(description="Sizes of the dimensions.", examples=[[2, 2, 4]])
    size: list[int] = Field(description="Same as shape (torch's `size()`).", examples=[[2, 2, 4]])
    stride: list[int] = Field(
        description="Elements to skip per step in each dimension.", examples=[[8, 4, 1]]
    )
    numel: int = Field(description="Number of elements.", examples=[16])
    dtype: str = Field(description="torch dtype name.", examples=["int64"])
    is_contiguous: bool = Field(description="Whether the layout is C-ordered without gaps.")


class TensorOpsResponse(ComputeResponse):
    """The returned tensors (or info objects), by name."""

    outputs: dict[str, TensorOut | TensorInfo] = Field(
        description="Each returned name with its tensor (or, for an `info` step, its metadata).",
        examples=[{"s": {"shape": [2, 3], "dtype": "int64", "data": [[4, 5, 6], [12, 13, 14]]}}],
    )
