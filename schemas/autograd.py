"""``POST /grad``: the value and gradients of an expression over named tensors (ch. 5)."""

from __future__ import annotations

import keyword
from typing import Annotated, Any

from pydantic import Field

from schemas.common import (
    MAX_TENSORS,
    ComputeRequest,
    ComputeResponse,
    Tensor,
    TensorOut,
    at_most,
    keys_named,
)

CONSTANT_NAMES = ("pi", "e", "inf")
"""The constants an expression may name (and so no input may be called)."""

InputName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=64,
        json_schema_extra={"not": {"enum": [*keyword.kwlist, *CONSTANT_NAMES]}},
        description="An input's name: an identifier (not a Python keyword, pi, e or inf).",
    ),
]

MAX_EXPRESSION_LENGTH = 4096
MAX_EXPRESSION_NODES = 1000
MAX_EXPRESSION_DEPTH = 100
MAX_HESSIAN_ELEMENTS = 1024
"""The limits of the language and of hessians, as documented here: the defaults of the
``Limits`` fields of the same names (``service.config``); the expression limits may be
configured lower, never higher."""

FUNCTION_DOCS = (
    "reductions `sum(input, dim=None, keepdim=False)`, `mean`, `prod` (same parameters), "
    "`max(input, other=None, dim=None, keepdim=False)` and `min` (with `other`: elementwise, "
    "a number or a tensor; with `dim`: the values along it; else the whole tensor's), "
    "`norm(input, p=2, dim=None, keepdim=False)`, "
    "`var(input, dim=None, correction=1, keepdim=False)`, `std` (same), "
    "`logsumexp(input, dim, keepdim=False)`, `softmax(input, dim)`, `log_softmax`, `cumsum`, "
    "`cumprod` (same); "
    "elementwise `exp exp2 expm1 log log2 log10 log1p sqrt rsqrt square reciprocal abs sign "
    "floor ceil round sin cos tan asin acos atan sinh cosh tanh asinh acosh atanh erf erfc` "
    "and activations `sigmoid logsigmoid relu gelu silu mish selu softsign` (each `f(input)`), "
    "`softplus(input, beta=1.0, threshold=20.0)`, `leaky_relu(input, negative_slope=0.01)`, "
    "`elu(input, alpha=1.0)`; "
    "`pow(input, exponent)`, `clamp(input, min=None, max=None)`, "
    "`where(condition, input, other)` (condition a bool tensor, e.g. `x > 0`), "
    "`maximum(input, other)`, `minimum`, `atan2` (same); "
    "`matmul(input, other)`, `mm`, `mv`, `dot`, `outer` (same), `trace(input)`, `t(input)`, "
    "`transpose(input, dim0, dim1)`, `reshape(input, shape)`"
)
"""Every function an expression may call, as the docs page shows them."""

EXPRESSION_DOC = (
    "A Python expression (a documented subset, read with `ast` and evaluated by the service's "
    "own walker: never `eval`): numbers (`2`, `0.5`, `1e-3`, `True`, `False`), input names, "
    "the constants `pi`, `e` and `inf`, the operators `+ - * / ** @ %` and unary `-`, "
    "one comparison `< <= > >= == !=` (a bool tensor, for `where`), parentheses, constant "
    "subscripts and slices (`x[0]`, `w[:, 1]`, `x[..., None]`) and calls of these functions "
    f"(torch's, with torch's semantics): {FUNCTION_DOCS}. "
    "A tuple of integers may be an argument (`sum(x, dim=(0, 1))`). No attribute access, "
    "strings, lambdas, comprehensions or conditional expressions. "
    f"Limits: {MAX_EXPRESSION_LENGTH} characters, {MAX_EXPRESSION_NODES} syntax nodes, "
    f"{MAX_EXPRESSION_DEPTH} levels of nesting (each over is a 413 naming the limit); every "
    "intermediate counts against the element and FLOP limits of `GET /info`. Errors: a "
    "syntax error is a 422 whose `details.column` (0-based) says where; an unknown name or "
    "function is a 422 that lists the allowed ones."
)

CHAPTER_5: dict[str, Any] = {
    "expression": "sum(x**2 + 2*x + 1)",
    # With a dtype: the docs page (JavaScript) sends 1.0 as 1, which would read as int64.
    "inputs": {"x": {"data": [[1.0], [2.0], [3.0], [4.0]], "dtype": "float32"}},
}
"""The tutorial's chapter 5: y = sum(x² + 2x + 1) at x = [[1], [2], [3], [4]]."""

HESSIAN_EXAMPLE: dict[str, Any] = {
    "expression": "sum(w * x**2) + dot(w, x)",
    "inputs": {"x": {"data": [1.0, 2.0], "dtype": "float32"}, "w": [0.5, -1.0]},
    "wrt": ["x", "w"],
    "hessian": True,
}


class GradRequest(ComputeRequest):
    """An expression over named input tensors; its value must be a single number."""

    model_config = {"json_schema_extra": {"examples": [CHAPTER_5, HESSIAN_EXAMPLE]}}

    expression: str = Field(
        min_length=1,
        description=EXPRESSION_DOC,
        examples=["sum(x**2 + 2*x + 1)", "mean(relu(w @ x + b))", "sum(where(x > 0, x, 0.1*x))"],
    )
    inputs: Annotated[dict[InputName, Tensor], at_most(MAX_TENSORS)] = Field(
        default_factory=dict,
        max_length=MAX_TENSORS,
        description=f"Named input tensors, each in any tensor form; at most {MAX_TENSORS:,}. "
        "Write floats (1.0, or "
        '`"dtype": "float32"`) for a tensor to differentiate: gradients exist only for '
        "floating-point tensors.",
        examples=[{"x": {"data": [[1.0], [2.0], [3.0], [4.0]], "dtype": "float32"}}],
        json_schema_extra=keys_named,
    )
    wrt: list[InputName] | None = Field(
        default=None,
        max_length=64,
        description="Inputs to differentiate with respect to, each one of `inputs`; default: "
        "every floating-point input. An integer or bool input named here is a 422 "
        "`integer_gradient`.",
        examples=[["x"]],
    )
    hessian: bool = Field(
        default=False,
        description="Also return second derivatives (`hessians`), for at most "
        f"{MAX_HESSIAN_ELEMENTS} `wrt` elements in all (over that: 413 with `details.limit` "
        "`max_hessian_elements`). Each element costs one more backward pass.",
    )


class GradResponse(ComputeResponse):
    """The expression's value and its derivatives with respect to each `wrt` input."""

    value: TensorOut = Field(
        description="The value: a tensor with one element (0-d unless indexing kept "
        "dimensions of size 1).",
        examples=[{"shape": [], "dtype": "float32", "data": 54.0}],
    )
    grads: dict[str, TensorOut] = Field(
        description="∂value/∂input for each `wrt` input, with the input's shape and dtype. "
        "An input the value does not depend on gets zeros.",
        examples=[
            {"x": {"shape": [4, 1], "dtype": "float32", "data": [[4.0], [6.0], [8.0], [10.0]]}}
        ],
    )
    hessians: dict[str, dict[str, TensorOut]] | None = Field(
        default=None,
        description="Only with `hessian: true`: `hessians[a][b]` is ∂²value/∂a∂b, of shape "
        "`a.shape + b.shape` (as `torch.autograd.functional.hessian` gives it), for every "
        "pair of `wrt` inputs; `hessians[b][a]` is its transpose.",
        examples=[
            {"x": {"x": {"shape": [2, 2], "dtype": "float32", "data": [[1.0, 0.0], [0.0, -2.0]]}}}
        ],
    )
