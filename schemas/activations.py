"""``GET /activate`` and ``POST /activate``: activation functions, their derivatives and
plots (tutorial chapter 6.3)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field, FiniteFloat, model_validator

from schemas.common import (
    ComputeRequest,
    ComputeResponse,
    Int,
    Rule,
    StrictModel,
    Tensor,
    TensorOut,
    at_most,
    needs,
    not_together,
)

MAX_FUNCTIONS = 32
"""Functions (and PNG panels) per request."""

ACTIVATION_NAMES: tuple[tuple[str, str], ...] = (
    ("relu", "ReLU"),
    ("relu6", "ReLU6"),
    ("leaky_relu", "LeakyReLU"),
    ("prelu", "PReLU"),
    ("rrelu", "RReLU"),
    ("elu", "ELU"),
    ("selu", "SELU"),
    ("celu", "CELU"),
    ("gelu", "GELU"),
    ("silu", "SiLU"),
    ("mish", "Mish"),
    ("sigmoid", "Sigmoid"),
    ("tanh", "Tanh"),
    ("softplus", "Softplus"),
    ("softsign", "Softsign"),
    ("softshrink", "Softshrink"),
    ("hardshrink", "Hardshrink"),
    ("hardtanh", "Hardtanh"),
    ("hardsigmoid", "Hardsigmoid"),
    ("hardswish", "Hardswish"),
    ("logsigmoid", "LogSigmoid"),
    ("tanhshrink", "Tanhshrink"),
    ("threshold", "Threshold"),
    ("softmax", "Softmax"),
    ("log_softmax", "LogSoftmax"),
    ("softmin", "Softmin"),
)
"""Every activation function: ``torch.nn.functional``'s name and the ``torch.nn`` class's
(the service's registry has one row for each, in this order)."""

_NUMBER: dict[str, Any] = {"type": "number"}
PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "negative_slope": _NUMBER,
    "weight": {
        "anyOf": [
            _NUMBER,
            {"type": "array", "items": _NUMBER, "minItems": 1, "maxItems": 4096},
        ]
    },
    "lower": _NUMBER,
    "upper": _NUMBER,
    "alpha": _NUMBER,
    "approximate": {"enum": ["none", "tanh"]},
    "beta": _NUMBER,
    "threshold": _NUMBER,
    "lambd": _NUMBER,
    "min_val": _NUMBER,
    "max_val": _NUMBER,
    "value": _NUMBER,
    "dim": {"type": "integer", "minimum": -8, "maximum": 7},
}
"""Every parameter some activation takes, by torch's name, with what its values are (one
kind per name, whichever function takes it)."""


def _name_pattern() -> str:
    # A name is looked up ignoring case and underscores (`leaky_relu`, `LeakyReLU` and
    # `leakyrelu` are one function): each letter in either case, underscores after any.
    keys = dict.fromkeys(
        alias.replace("_", "").lower() for names in ACTIVATION_NAMES for alias in names
    )
    spelled = (
        "".join(f"[{c}{c.upper()}]_*" if c.isalpha() else f"{c}_*" for c in key) for key in keys
    )
    return "^(?:" + "|".join(spelled) + ")$"


FUNCTION_NAME_PATTERN = _name_pattern()
"""The names `GET /activate` lists, in any case, with underscores anywhere after the first
letter."""

FunctionName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
        json_schema_extra={"pattern": FUNCTION_NAME_PATTERN},
        description="A function: `torch.nn.functional`'s name (`leaky_relu`) or the "
        "`torch.nn` class name (`LeakyReLU`); case and underscores are ignored. "
        "`GET /activate` lists them. An unknown name is a 422 `unknown_function`.",
        examples=["relu"],
    ),
]
ParamName = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
ParamValue = (
    bool | Int | float | str | Annotated[list[Int | float], Field(max_length=4096, fail_fast=True)]
)


def _whole_dim(params: Any) -> Any:
    # `dim` is an integer, which may be written 2.0 like any integer.
    if isinstance(params, dict):
        dim = params.get("dim")
        if isinstance(dim, float) and dim.is_integer():
            return {**params, "dim": int(dim)}
    return params


def _params_schema(schema: dict[str, Any]) -> None:
    schema.pop("patternProperties", None)
    schema.pop("propertyNames", None)
    schema["properties"] = PARAM_SCHEMAS
    schema["additionalProperties"] = False


Params = Annotated[
    dict[ParamName, ParamValue],
    BeforeValidator(_whole_dim),
    at_most(16),
    Field(
        max_length=16,
        description="Parameter values by torch's names (`negative_slope`, `alpha`, `beta`, "
        "`lambd`, `min_val`, `approximate`, `dim`, …; see `GET /activate`); the rest keep "
        "torch's defaults. Each must be one that a function given takes (a 422 "
        "`unknown_param` otherwise), and a parameter torch has no default for must be given "
        "(`threshold`'s two: 422 `missing_param`). `prelu`'s `weight` is one slope or a list "
        "of one slope per channel (x's dimension 1).",
        examples=[{"negative_slope": 0.1}],
        json_schema_extra=_params_schema,
    ),
]

_DERIVATIVE_DOC = (
    "Also compute `dydx` by autograd. For element-wise functions it is dy/dx at each "
    "element (at a kink, torch's choice: relu'(0) = 0). For the softmax family (softmax, "
    "log_softmax, softmin) it is the diagonal of the Jacobian along `dim`, ∂y_i/∂x_i "
    "(softmax: s_i·(1 − s_i)), not the sum over outputs (which is 0 for softmax)."
)


class ActivationRange(StrictModel):
    """`torch.linspace(start, end, steps)`: the inputs when no `x` is given."""

    start: Int | FiniteFloat = Field(default=-6, description="First value.", examples=[-6])
    end: Int | FiniteFloat = Field(default=6, description="Last value (included).", examples=[6])
    steps: Int = Field(
        default=100,
        ge=1,
        description="Number of values; counts against the element limit.",
        examples=[100],
    )
    dtype: Literal["float32", "float64"] = Field(
        default="float32", description="Floating dtype of the values."
    )


class ActivationSpec(StrictModel):
    """A function with parameters of its own (which win over the request's shared `params`)."""

    function: FunctionName
    params: Params = Field(default_factory=dict)


class ActivateRequest(ComputeRequest):
    """One or several activation functions over `x` or a `range`, with their derivatives,
    as JSON or as a PNG of one panel per function (the tutorial's figure)."""

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = (
        not_together("function", "functions"),
        not_together("x", "range"),
        needs("dim", lambda _: {"properties": {"params": {"properties": {"dim": False}}}}),
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "functions": ["sigmoid", "tanh", "relu", "softplus"],
                    "range": {"start": -6, "end": 6, "steps": 100},
                },
                {
                    "function": "LeakyReLU",
                    "x": [-2.0, -1.0, 0.0, 1.0, 2.0],
                    "params": {"negative_slope": 0.1},
                    "derivative": True,
                },
                {
                    "function": "softmax",
                    "x": [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]],
                    "dim": 1,
                    "derivative": True,
                },
                {
                    "functions": ["gelu", {"function": "gelu", "params": {"approximate": "tanh"}}],
                    "derivative": True,
                    "format": "png",
                },
            ]
        }
    }

    function: FunctionName | None = Field(
        default=None, description="One function; give this or `functions`."
    )
    functions: list[FunctionName | ActivationSpec] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_FUNCTIONS,
        description="Several functions, each a name or `{function, params}`; one result (and "
        "one panel) each, in order. Default when neither this nor `function` is given: the "
        "tutorial's four, sigmoid, tanh, relu and softplus.",
    )
    x: Tensor | None = Field(
        default=None,
        description="The inputs, any shape. Integer and boolean tensors become float32; "
        "float dtypes are kept. Give this or `range`.",
        examples=[[-2.0, -1.0, 0.0, 1.0, 2.0]],
    )
    range: ActivationRange | None = Field(
        default=None,
        description="Evenly spaced inputs, when `x` is not given; default the tutorial's "
        "`torch.linspace(-6, 6, 100)`.",
    )
    params: Params = Field(default_factory=dict)
    dim: Int | None = Field(
        default=None,
        ge=-8,
        le=7,
        description="Shorthand for `params.dim` (give one of the two): the dimension the "
        "softmax family normalises along (default -1, the last); one of x's.",
    )
    derivative: bool = Field(default=False, description=_DERIVATIVE_DOC)
    format: Literal["json", "png"] = Field(
        default="json",
        description="`json`: the tensors. `png`: a picture, one panel per function titled "
        "with its torch.nn class name, y in red and (with `derivative`) dy/dx dashed blue, "
        "grids on; each panel 350×300 pixels, `columns` per row. The headers "
        "`X-Panel-Count` and `X-Panel-Layout` (`<rows>x<columns>`) describe the grid. "
        "Inputs of several dimensions are plotted flattened, sorted by x.",
    )
    columns: Int | None = Field(
        default=None,
        ge=1,
        le=8,
        description="PNG panels per row; default 4, or fewer when there are fewer panels "
        "(the tutorial's four side by side).",
    )

    @model_validator(mode="after")
    def _one_of_each(self) -> ActivateRequest:
        if self.function is not None and self.functions is not None:
            raise ValueError("give `function` or `functions`, not both")
        if self.x is not None and self.range is not None:
            raise ValueError("give `x` or `range`, not both")
        if self.dim is not None and "dim" in self.params:
            raise ValueError("give `dim` or `params.dim`, not both")
        return self


class ActivationResult(BaseModel):
    """One function over the inputs."""

    function: str = Field(description="The function's canonical name.", examples=["leaky_relu"])
    params: dict[str, Any] = Field(
        description="Every parameter's value as used: the given ones and torch's defaults.",
        examples=[{"negative_slope": 0.1}],
    )
    x: TensorOut = Field(description="The inputs (as a float tensor).")
    y: TensorOut = Field(description="f(x), the shape of x.")
    dydx: TensorOut | None = Field(
        default=None,
        description="With `derivative`: "
        + _DERIVATIVE_DOC.removeprefix("Also compute ")
        + " Null otherwise.",
    )


class ActivateResponse(ComputeResponse):
    """One result per function, in the order asked."""

    results: list[ActivationResult] = Field(description="One entry per function.")


class ActivationParamInfo(BaseModel):
    """One parameter of a function."""

    name: str = Field(description="torch's name for it.", examples=["negative_slope"])
    type: str = Field(
        description="What a value is: `a number`, `an integer`, `one of …` or (prelu's "
        "weight) `a number or a non-empty list of numbers`.",
        examples=["a number"],
    )
    default: int | float | str | None = Field(
        description="torch's default; null when it must be given (threshold's two).",
        examples=[0.01],
    )
    required: bool = Field(description="Whether it must be given.")
    choices: list[str] | None = Field(
        default=None, description="The values allowed, for a choice.", examples=[["none", "tanh"]]
    )
    description: str = Field(description="What it does.")


class ActivationInfo(BaseModel):
    """One supported function."""

    name: str = Field(description="`torch.nn.functional`'s name.", examples=["leaky_relu"])
    nn_class: str = Field(
        description="The `torch.nn` class, also accepted as its name.", examples=["LeakyReLU"]
    )
    formula: str = Field(
        description="The formula in plain text.", examples=["x if x ≥ 0 else negative_slope·x"]
    )
    latex: str = Field(description="The formula in LaTeX.")
    output_range: str = Field(
        description="The values it takes over the reals.", examples=["(−∞, ∞)"]
    )
    params: list[ActivationParamInfo] = Field(description="Its parameters, in torch's order.")
    along_dim: bool = Field(
        description="True for the softmax family, which normalises along `dim`; false for "
        "element-wise functions."
    )
    derivative: str = Field(description="What `dydx` holds for it.")


class ActivationListResponse(BaseModel):
    """Every function `POST /activate` supports, and its defaults."""

    functions: list[ActivationInfo] = Field(description="The supported functions.")
    default_functions: list[str] = Field(
        description="What is plotted when no function is named: the tutorial's four.",
        examples=[["sigmoid", "tanh", "relu", "softplus"]],
    )
    default_range: ActivationRange = Field(
        description="The inputs when neither `x` nor `range` is given."
    )
    max_functions: int = Field(description="Functions per request, at most.", examples=[32])
    max_plot_points: int = Field(
        description="Points a PNG may draw, summed over its lines (x's elements per line).",
        examples=[1048576],
    )
