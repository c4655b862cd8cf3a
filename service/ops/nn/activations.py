"""Activation functions (tutorial chapter 6.3): one registry, parameter binding, values and
derivatives by autograd.

Every function is a row of :data:`ACTIVATIONS`: its ``torch.nn.functional`` name, its
``torch.nn`` class name, the torch callable, its parameters with defaults, its formula (plain
text and LaTeX) and its output range. Names are looked up ignoring case and underscores, so
``leaky_relu``, ``LeakyReLU`` and ``leakyrelu`` are one function.

Derivatives: an element-wise function's Jacobian is diagonal, so one backward pass with a
vector of ones gives every ``dy_i/dx_i``. The softmax family mixes the elements along
``dim``; for it ``dydx`` is the Jacobian's diagonal as well, ``∂y_i/∂x_i`` (e.g.
``s_i·(1 − s_i)`` for softmax), computed by batched backward passes, one per position
along ``dim``. (The vector-Jacobian product with ones would be 0 for softmax everywhere.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from service.errors import ErrorCode, InvalidInput, OpError
from service.limits import Budget, Deadline

ParamKind = Literal["number", "integer", "choice", "weight"]
ParamValue = float | int | str | list[float]

ELEMENTWISE_FLOPS = 20
"""Rough FLOPs per element of one forward pass (exp, log, a division or two)."""
BACKWARD_FACTOR = 2
"""A backward pass costs about twice its forward pass."""
JACOBIAN_CHUNK_ELEMENTS = 1 << 22
"""Elements of one batched backward pass of the softmax family's Jacobian diagonal."""


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
        _dim_fn(F.softmax),
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
        _dim_fn(F.softmin),
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


@dataclass(frozen=True)
class BoundActivation:
    """A function with every parameter's value: the given ones, checked, and the defaults."""

    activation: Activation
    params: dict[str, ParamValue] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.activation.name

    @property
    def title(self) -> str:
        """The nn class name (the tutorial's panel titles), with the values that differ
        from the defaults: ``LeakyReLU(negative_slope=0.2)``."""
        changed = [
            f"{p.name}={_short(self.params[p.name])}"
            for p in self.activation.params
            if p.required or self.params[p.name] != p.default
        ]
        name = self.activation.nn_class
        return f"{name}({', '.join(changed)})" if changed else name


def _short(value: ParamValue) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value[:4]) + (", …]" if len(value) > 4 else "]")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def bind(
    requests: Sequence[tuple[str, Mapping[str, object]]],
    shared: Mapping[str, object],
) -> list[BoundActivation]:
    """Resolve each ``(name, own params)`` and give it its parameters' values.

    ``shared`` values go to every listed function that has a parameter of that name; one
    that none of them has is a 422 ``unknown_param``. A function's own params are checked
    against it alone and win over shared ones. A required parameter left out is a 422
    ``missing_param``; a value of the wrong kind a 422 ``invalid_param``.
    """
    resolved = [(find_activation(name), own, index) for index, (name, own) in enumerate(requests)]
    accepted = {p.name for activation, _, _ in resolved for p in activation.params}
    for name in shared:
        if name not in accepted:
            raise _unknown_param(name, sorted(accepted), "params", [a.name for a, _, _ in resolved])
    bound = []
    for activation, own, index in resolved:
        where = f"functions[{index}]" if len(requests) > 1 else activation.name
        allowed = [p.name for p in activation.params]
        for name in own:
            if name not in allowed:
                raise _unknown_param(name, allowed, f"{where}.params", [activation.name])
        values: dict[str, ParamValue] = {}
        for param in activation.params:
            if param.name in own:
                values[param.name] = param.validate(own[param.name], f"{where}.params")
            elif param.name in shared:
                values[param.name] = param.validate(shared[param.name], "params")
            elif param.default is not None:
                values[param.name] = param.default
            else:
                raise InvalidInput(
                    f"{activation.name} needs the parameter {param.name!r} (torch has no "
                    f"default for it); give it in params",
                    details={"function": activation.name, "param": param.name},
                    code=ErrorCode.MISSING_PARAM,
                )
        bound.append(BoundActivation(activation, values))
    return bound


def _unknown_param(name: str, allowed: list[str], where: str, functions: list[str]) -> InvalidInput:
    takes = ", ".join(allowed) if allowed else "no parameters"
    return InvalidInput(
        f"{where}: unknown parameter {name[:64]!r} for {', '.join(functions)}; it takes {takes}",
        details={"param": name[:64], "allowed": allowed, "functions": functions},
        code=ErrorCode.UNKNOWN_PARAM,
    )


def as_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` as the functions take it: integer and boolean tensors become float32 (activations
    are defined on the reals, and autograd needs floats); float dtypes are kept."""
    return x if x.is_floating_point() else x.to(torch.float32)


def charge(
    functions: Sequence[BoundActivation], x: torch.Tensor, budget: Budget, *, derivative: bool
) -> None:
    """Charge every output (``y``, and ``dydx`` when asked) and the estimated FLOPs."""
    numel = x.numel()
    for bound in functions:
        budget.charge_tensor(numel, f"{bound.name}(x)")
        flops = float(numel * ELEMENTWISE_FLOPS)
        if derivative:
            budget.charge_tensor(numel, f"the derivative of {bound.name}")
            dim = bound.params.get("dim")
            length = _length_along(x, dim) if isinstance(dim, int) else 1
            flops *= 1 + BACKWARD_FACTOR * length
        budget.charge_flops(flops, f"{bound.name} over {numel:,} elements")


def _length_along(x: torch.Tensor, dim: int) -> int:
    """Size of ``x`` along ``dim``: the number of backward passes of the Jacobian diagonal."""
    if x.ndim == 0 or not -x.ndim <= dim < x.ndim:
        return 1  # a 0-d x, or a dim that torch refuses when it runs
    return int(x.shape[dim])


@dataclass(frozen=True)
class Evaluation:
    """One function's values over x, and its derivative when asked."""

    y: torch.Tensor
    dydx: torch.Tensor | None


def evaluate(
    bound: BoundActivation,
    x: torch.Tensor,
    *,
    derivative: bool = False,
    deadline: Deadline | None = None,
) -> Evaluation:
    """``y = f(x)`` and, with ``derivative``, ``dydx`` by autograd (see the module docstring
    for what it holds for the softmax family). Must run with grad mode on when ``derivative``.

    torch's refusals (a bad parameter value, a dim out of range, a dtype without a kernel)
    are a 422 ``op_failed`` naming the function.
    """
    activation = bound.activation
    try:
        if not derivative:
            return Evaluation(activation.fn(x, **bound.params), None)
        xg = x.detach().requires_grad_(True)
        y = activation.fn(xg, **bound.params)
        if activation.along_dim:
            dim = bound.params["dim"]
            assert isinstance(dim, int)
            dydx = _jacobian_diagonal(y, xg, dim, deadline)
        else:
            (dydx,) = torch.autograd.grad(y, xg, torch.ones_like(y))
        return Evaluation(y.detach(), dydx)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OpError(f"{bound.title}: {message}", details={"function": activation.name}) from exc


def _jacobian_diagonal(
    y: torch.Tensor, x: torch.Tensor, dim: int, deadline: Deadline | None
) -> torch.Tensor:
    """``∂y_i/∂x_i`` for a ``y`` that mixes ``x`` along ``dim`` only: for each position k
    along dim, a backward pass with the one-hot vector at k (batched, several k at a time)
    gives row k of every slice's Jacobian, whose k-th entry is the diagonal one."""
    if x.numel() == 0:
        return torch.zeros_like(x)
    if x.ndim == 0:
        (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
        return grad
    d = dim % x.ndim
    n = x.shape[d]
    diagonal = torch.empty_like(x)
    moved = diagonal.movedim(d, -1)  # a view: writing it fills ``diagonal``
    per_batch = max(1, JACOBIAN_CHUNK_ELEMENTS // x.numel())
    for start in range(0, n, per_batch):
        if deadline is not None:
            deadline.check()
        stop = min(start + per_batch, n)
        count = stop - start
        one_hot = torch.zeros(count, n, dtype=y.dtype, device=y.device)
        rows = torch.arange(count, device=y.device)
        one_hot[rows, rows + start] = 1
        shape = [count] + [1] * x.ndim
        shape[d + 1] = n
        grad_outputs = one_hot.view(shape).expand(count, *x.shape).contiguous()
        (jacobian_rows,) = torch.autograd.grad(
            y, x, grad_outputs, retain_graph=stop < n, is_grads_batched=True
        )
        # jacobian_rows[j] is row start + j of each slice's Jacobian; its diagonal entry is
        # the one at start + j along dim.
        block = jacobian_rows.movedim(d + 1, -1)[..., start:stop]
        moved[..., start:stop] = torch.diagonal(block, dim1=0, dim2=-1)
    return diagonal
