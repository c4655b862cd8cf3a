"""The activation functions the service knows (tutorial chapter 6.3): one table, one row
per function, and the lookup by name.

Every function is a row of :data:`ACTIVATIONS`: its ``torch.nn.functional`` name, its
``torch.nn`` class name, the torch callable, its parameters with defaults, its formula (plain
text and LaTeX) and its output range. Names are looked up ignoring case and underscores, so
``leaky_relu``, ``LeakyReLU`` and ``leakyrelu`` are one function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from service.errors import ErrorCode, InvalidInput
from service.ops.softmax import softmax, softmin

ParamKind = Literal["number", "integer", "choice", "weight"]
ParamValue = float | int | str | list[float]


@dataclass(frozen=True)
class Param:
    """One parameter of an activation, with torch's name and default."""

    name: str
    kind: ParamKind
    description: str
    default: ParamValue | None = None
    """``None`` when torch has no default: the parameter must be given."""
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is None

    def validate(self, value: object, where: str) -> ParamValue:
        """``value`` checked against the kind (numbers become floats), else a 422."""
        if self.kind == "number" and _is_number(value):
            return float(value)  # type: ignore[arg-type]
        if self.kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if self.kind == "choice" and value in self.choices:
            return str(value)
        if self.kind == "weight":
            if _is_number(value):
                return float(value)  # type: ignore[arg-type]
            if isinstance(value, list) and value and all(_is_number(v) for v in value):
                return [float(v) for v in value]
        raise InvalidInput(
            f"{where}: {self.name} must be {self.expected}, got {value!r}"[:300],
            details={"param": self.name, "expected": self.expected},
            code=ErrorCode.INVALID_PARAM,
        )

    @property
    def expected(self) -> str:
        """What a value of this parameter is, in words (also ``GET /activate``'s ``type``)."""
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return {
            "number": "a number",
            "integer": "an integer",
            "weight": "a number or a non-empty list of numbers",
        }[self.kind]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Activation:
    """One row of the registry."""

    name: str
    """``torch.nn.functional``'s name, the canonical one."""
    nn_class: str
    """The ``torch.nn`` class, accepted as an alias and used as the panel title."""
    fn: Callable[..., torch.Tensor]
    """``fn(x, **params)``."""
    formula: str
    latex: str
    output_range: str
    params: tuple[Param, ...] = ()
    along_dim: bool = False
    """The softmax family: mixes the elements along ``dim`` (a parameter)."""

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def __reduce__(self) -> tuple[Callable[[str], Activation], tuple[str]]:
        # Pickled by name: a plan sent to another process finds that process's own row,
        # and the callables (closures among them) never need to pickle.
        return find_activation, (self.name,)

    @property
    def derivative(self) -> str:
        """What ``dydx`` holds for this function, in words."""
        if self.along_dim:
            return "the Jacobian's diagonal ∂y_i/∂x_i along dim (by autograd)"
        return "element-wise dy/dx (by autograd)"


def _rrelu(x: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    # Eval mode: a fixed negative slope (lower + upper) / 2, no randomness.
    return F.rrelu(x, lower, upper, training=False)


def _prelu(x: torch.Tensor, weight: float | list[float]) -> torch.Tensor:
    values = weight if isinstance(weight, list) else [weight]
    return F.prelu(x, torch.tensor(values, dtype=x.dtype, device=x.device))


def _dim_fn(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def along(x: torch.Tensor, dim: int) -> torch.Tensor:
        return fn(x, dim=dim)

    return along


def _number(name: str, default: float | None, description: str) -> Param:
    return Param(name, "number", description, default)


_ALPHA = "α: the value the negative side tends to is −α."
_LAMBD = "λ: the half-width of the band mapped to 0."
_DIM = Param(
    "dim",
    "integer",
    "The dimension the function normalises along; negative counts from the end.",
    -1,
)

ACTIVATIONS: tuple[Activation, ...] = (
    Activation(
        "relu",
        "ReLU",
        F.relu,
        "max(0, x)",
        r"\max(0, x)",
        "[0, ∞)",
    ),
    Activation(
        "relu6",
        "ReLU6",
        F.relu6,
        "min(max(0, x), 6)",
        r"\min(\max(0, x), 6)",
        "[0, 6]",
    ),
    Activation(
        "leaky_relu",
        "LeakyReLU",
        F.leaky_relu,
        "x if x ≥ 0 else negative_slope·x",
        r"\begin{cases} x & x \ge 0 \\ \mathrm{negative\_slope} \cdot x & x < 0 \end{cases}",
        "(−∞, ∞)",
        (_number("negative_slope", 0.01, "Slope of the negative side."),),
    ),
    Activation(
        "prelu",
        "PReLU",
        _prelu,
        "x if x ≥ 0 else weight·x",
        r"\begin{cases} x & x \ge 0 \\ a \cdot x & x < 0 \end{cases}",
        "(−∞, ∞)",
        (
            Param(
                "weight",
                "weight",
                "a, the slope of the negative side (learnt in nn.PReLU, whose initial value "
                "0.25 is the default): one number for every element, or a list with one slope "
                "per channel, where the channels are x's dimension 1 (x needs at least 2 "
                "dimensions and as many channels as slopes).",
                0.25,
            ),
        ),
    ),
    Activation(
        "rrelu",
        "RReLU",
        _rrelu,
        "x if x ≥ 0 else a·x, with a = (lower + upper)/2 (eval mode)",
        r"\begin{cases} x & x \ge 0 \\ \frac{l + u}{2} \cdot x & x < 0 \end{cases}",
        "(−∞, ∞)",
        (
            _number("lower", 1 / 8, "Lower bound of the random slope (training mode)."),
            _number("upper", 1 / 3, "Upper bound of the random slope; not below lower."),
        ),
    ),
    Activation(
        "elu",
        "ELU",
        F.elu,
        "x if x > 0 else alpha·(exp(x) − 1)",
        r"\begin{cases} x & x > 0 \\ \alpha (e^{x} - 1) & x \le 0 \end{cases}",
        "(−alpha, ∞) for alpha > 0",
        (_number("alpha", 1.0, _ALPHA),),
    ),
    Activation(
        "selu",
        "SELU",
        F.selu,
        "scale·(max(0, x) + min(0, alpha·(exp(x) − 1))), alpha ≈ 1.6733, scale ≈ 1.0507",
        r"\lambda \left(\max(0, x) + \min(0, \alpha (e^{x} - 1))\right),"
        r"\ \alpha \approx 1.6733,\ \lambda \approx 1.0507",
        "(≈ −1.7581, ∞)",
    ),
    Activation(
        "celu",
        "CELU",
        F.celu,
        "max(0, x) + min(0, alpha·(exp(x/alpha) − 1))",
        r"\max(0, x) + \min\left(0, \alpha (e^{x/\alpha} - 1)\right)",
        "(−alpha, ∞) for alpha > 0",
        (_number("alpha", 1.0, _ALPHA + " Not 0."),),
    ),
    Activation(
        "gelu",
        "GELU",
        F.gelu,
        "x·Φ(x), Φ the standard normal CDF; approximate='tanh': "
        "0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))",
        r"x \cdot \Phi(x) = \frac{x}{2}"
        r"\left(1 + \mathrm{erf}\left(\frac{x}{\sqrt{2}}\right)\right)",
        "[≈ −0.17, ∞)",
        (
            Param(
                "approximate",
                "choice",
                "'none': the exact x·Φ(x); 'tanh': the tanh approximation.",
                "none",
                ("none", "tanh"),
            ),
        ),
    ),
    Activation(
        "silu",
        "SiLU",
        F.silu,
        "x·sigmoid(x)",
        r"x \cdot \sigma(x) = \frac{x}{1 + e^{-x}}",
        "[≈ −0.2785, ∞)",
    ),
    Activation(
        "mish",
        "Mish",
        F.mish,
        "x·tanh(softplus(x))",
        r"x \cdot \tanh\left(\ln(1 + e^{x})\right)",
        "[≈ −0.3088, ∞)",
    ),
    Activation(
        "sigmoid",
        "Sigmoid",
        torch.sigmoid,
        "1 / (1 + exp(−x))",
        r"\frac{1}{1 + e^{-x}}",
        "(0, 1)",
    ),
    Activation(
        "tanh",
        "Tanh",
        torch.tanh,
        "(exp(x) − exp(−x)) / (exp(x) + exp(−x))",
        r"\frac{e^{x} - e^{-x}}{e^{x} + e^{-x}}",
        "(−1, 1)",
    ),
    Activation(
        "softplus",
        "Softplus",
        F.softplus,
        "(1/beta)·log(1 + exp(beta·x)); x itself where beta·x > threshold",
        r"\frac{1}{\beta} \ln\left(1 + e^{\beta x}\right)",
        "(0, ∞) for beta > 0",
        (
            _number("beta", 1.0, "β: the sharpness of the bend; larger is closer to ReLU."),
            _number(
                "threshold",
                20.0,
                "Above this value of beta·x the result is x (for numerical stability).",
            ),
        ),
    ),
    Activation(
        "softsign",
        "Softsign",
        F.softsign,
        "x / (1 + |x|)",
        r"\frac{x}{1 + |x|}",
        "(−1, 1)",
    ),
    Activation(
        "softshrink",
        "Softshrink",
        F.softshrink,
        "x − lambd if x > lambd; x + lambd if x < −lambd; else 0",
        r"\begin{cases} x - \lambda & x > \lambda \\ x + \lambda & x < -\lambda \\"
        r" 0 & \text{otherwise} \end{cases}",
        "(−∞, ∞)",
        (_number("lambd", 0.5, _LAMBD + " At least 0."),),
    ),
    Activation(
        "hardshrink",
        "Hardshrink",
        F.hardshrink,
        "x if |x| > lambd else 0",
        r"\begin{cases} x & |x| > \lambda \\ 0 & \text{otherwise} \end{cases}",
        "(−∞, ∞)",
        (_number("lambd", 0.5, _LAMBD),),
    ),
    Activation(
        "hardtanh",
        "Hardtanh",
        F.hardtanh,
        "min(max(x, min_val), max_val)",
        r"\min(\max(x, \mathrm{min\_val}), \mathrm{max\_val})",
        "[min_val, max_val]",
        (
            _number("min_val", -1.0, "Lower end of the linear region."),
            _number("max_val", 1.0, "Upper end of the linear region; not below min_val."),
        ),
    ),
    Activation(
        "hardsigmoid",
        "Hardsigmoid",
        F.hardsigmoid,
        "0 if x ≤ −3; 1 if x ≥ 3; else x/6 + 1/2",
        r"\begin{cases} 0 & x \le -3 \\ 1 & x \ge 3 \\ x/6 + 1/2 & \text{otherwise} \end{cases}",
        "[0, 1]",
    ),
    Activation(
        "hardswish",
        "Hardswish",
        F.hardswish,
        "0 if x ≤ −3; x if x ≥ 3; else x·(x + 3)/6",
        r"\begin{cases} 0 & x \le -3 \\ x & x \ge 3 \\ x (x + 3)/6 & \text{otherwise}"
        r" \end{cases}",
        "[−0.375, ∞)",
    ),
    Activation(
        "logsigmoid",
        "LogSigmoid",
        F.logsigmoid,
        "log(1 / (1 + exp(−x)))",
        r"\ln\left(\frac{1}{1 + e^{-x}}\right)",
        "(−∞, 0)",
    ),
    Activation(
        "tanhshrink",
        "Tanhshrink",
        F.tanhshrink,
        "x − tanh(x)",
        r"x - \tanh(x)",
        "(−∞, ∞)",
    ),
    Activation(
        "threshold",
        "Threshold",
        F.threshold,
        "x if x > threshold else value",
        r"\begin{cases} x & x > \mathrm{threshold} \\ \mathrm{value} & \text{otherwise}"
        r" \end{cases}",
        "{value} ∪ (threshold, ∞)",
        (
            _number("threshold", None, "Values at or below it are replaced (required)."),
            _number("value", None, "What replaces them (required)."),
        ),
    ),
    Activation(
        "softmax",
        "Softmax",
        _dim_fn(softmax),
        "exp(x_i) / Σ_j exp(x_j), along dim",
        r"\frac{e^{x_i}}{\sum_j e^{x_j}}",
        "(0, 1), summing to 1 along dim",
        (_DIM,),
        along_dim=True,
    ),
    Activation(
        "log_softmax",
        "LogSoftmax",
        _dim_fn(F.log_softmax),
        "x_i − log Σ_j exp(x_j), along dim",
        r"x_i - \ln \sum_j e^{x_j}",
        "(−∞, 0)",
        (_DIM,),
        along_dim=True,
    ),
    Activation(
        "softmin",
        "Softmin",
        _dim_fn(softmin),
        "exp(−x_i) / Σ_j exp(−x_j), along dim",
        r"\frac{e^{-x_i}}{\sum_j e^{-x_j}}",
        "(0, 1), summing to 1 along dim",
        (_DIM,),
        along_dim=True,
    ),
)

DEFAULT_FUNCTIONS = ("sigmoid", "tanh", "relu", "softplus")
"""The tutorial's four (chapter 6.3.5), in its order."""


def _key(name: str) -> str:
    return name.replace("_", "").lower()


_BY_KEY: dict[str, Activation] = {
    _key(alias): activation
    for activation in ACTIVATIONS
    for alias in (activation.name, activation.nn_class)
}


def find_activation(name: str) -> Activation:
    """The registry row for a functional name or an nn class name (case and underscores
    ignored); a 422 ``unknown_function`` listing the supported names otherwise."""
    activation = _BY_KEY.get(_key(name))
    if activation is None:
        allowed = [a.name for a in ACTIVATIONS]
        raise InvalidInput(
            f"unknown activation function {name[:64]!r}; supported: {', '.join(allowed)} "
            "(or their torch.nn class names, e.g. LeakyReLU)",
            details={"function": name[:64], "allowed": allowed},
            code=ErrorCode.UNKNOWN_FUNCTION,
        )
    return activation
