"""The activation registry, parameter binding, values and derivatives, without HTTP.
References come from ``torch.nn`` modules and full Jacobians computed here."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from service.errors import ComputeTimeout, InvalidInput, LimitExceeded, OpError
from service.limits import Budget, Deadline
from service.ops.nn import evaluation
from service.ops.nn.activations import (
    ACTIVATIONS,
    DEFAULT_FUNCTIONS,
    Activation,
    as_input,
    bind,
    charge,
    evaluate,
    find_activation,
)

CONTRACT = [
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU",
    "Mish", "Sigmoid", "Tanh", "Softplus", "Softsign", "Softshrink", "Hardshrink", "Hardtanh",
    "Hardsigmoid", "Hardswish", "LogSigmoid", "Tanhshrink", "Threshold",
    "Softmax", "LogSoftmax", "Softmin",
]  # fmt: skip

# --- references ------------------------------------------------------------------------------

Draw = Callable[[random.Random], dict[str, Any]]


def _none(rng: random.Random) -> dict[str, Any]:
    return {}


def _ordered(low: str, high: str, a: float, b: float) -> Draw:
    def draw(rng: random.Random) -> dict[str, Any]:
        first, second = sorted(rng.uniform(a, b) for _ in range(2))
        return {low: first, high: second}

    return draw


PARAM_DRAWS: dict[str, tuple[str, Draw]] = {
    # function: (its torch.nn class, a random draw of its parameters)
    "relu": ("ReLU", _none),
    "relu6": ("ReLU6", _none),
    "leaky_relu": ("LeakyReLU", lambda r: {"negative_slope": r.uniform(0.001, 0.5)}),
    "prelu": ("PReLU", lambda r: {"weight": r.uniform(-0.5, 0.5)}),
    "rrelu": ("RReLU", _ordered("lower", "upper", 0.0, 0.6)),
    "elu": ("ELU", lambda r: {"alpha": r.uniform(0.1, 3.0)}),
    "selu": ("SELU", _none),
    "celu": ("CELU", lambda r: {"alpha": r.uniform(0.1, 3.0)}),
    "gelu": ("GELU", lambda r: {"approximate": r.choice(["none", "tanh"])}),
    "silu": ("SiLU", _none),
    "mish": ("Mish", _none),
    "sigmoid": ("Sigmoid", _none),
    "tanh": ("Tanh", _none),
    "softplus": (
        "Softplus",
        lambda r: {"beta": r.uniform(0.3, 3.0), "threshold": r.uniform(1, 20)},
    ),
    "softsign": ("Softsign", _none),
    "softshrink": ("Softshrink", lambda r: {"lambd": r.uniform(0.0, 1.5)}),
    "hardshrink": ("Hardshrink", lambda r: {"lambd": r.uniform(0.0, 1.5)}),
    "hardsigmoid": ("Hardsigmoid", _none),
    "hardswish": ("Hardswish", _none),
    "hardtanh": ("Hardtanh", _ordered("min_val", "max_val", -2.0, 2.0)),
    "logsigmoid": ("LogSigmoid", _none),
    "tanhshrink": ("Tanhshrink", _none),
    "threshold": (
        "Threshold",
        lambda r: {"threshold": r.uniform(-1.0, 1.0), "value": r.uniform(-2.0, 2.0)},
    ),
    "softmax": ("Softmax", lambda r: {"dim": r.choice([0, 1, -1])}),
    "log_softmax": ("LogSoftmax", lambda r: {"dim": r.choice([0, 1, -1])}),
    "softmin": ("Softmin", lambda r: {"dim": r.choice([0, 1, -1])}),
}
NAMES = list(PARAM_DRAWS)


def reference_module(name: str, params: dict[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    """The ``torch.nn`` module the function is, built from the same parameters."""
    nn_class = getattr(torch.nn, PARAM_DRAWS[name][0])
    if name == "prelu":
        weight = torch.tensor(params["weight"], dtype=dtype).reshape(-1)
        module = nn_class(num_parameters=weight.numel())
        with torch.no_grad():
            module.weight.copy_(weight)
    else:
        module = nn_class(**params)
    return module.to(dtype).eval()  # eval: RReLU's fixed slope


def reference(
    name: str, params: dict[str, Any], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y, diagonal of the Jacobian, the Jacobian as [n, n])`` from the nn module."""
    module = reference_module(name, params, x.dtype)
    y = module(x)
    jacobian = torch.autograd.functional.jacobian(module, x).reshape(x.numel(), x.numel())
    return y.detach(), jacobian.diagonal().reshape(x.shape), jacobian


def random_case(name: str, seed: int) -> tuple[dict[str, Any], torch.Tensor]:
    rng = random.Random(f"{name}-{seed}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, generator=generator, dtype=torch.float64) * 3
    return PARAM_DRAWS[name][1](rng), x


# --- the registry ----------------------------------------------------------------------------


def test_the_contract_list_is_supported_and_every_function_has_a_reference() -> None:
    assert [a.nn_class for a in ACTIVATIONS] == CONTRACT
    assert sorted(a.name for a in ACTIVATIONS) == sorted(NAMES)
    assert len({a.name for a in ACTIVATIONS}) == len(ACTIVATIONS)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a.name)
def test_names_are_torchs_and_aliases_resolve(activation: Activation) -> None:
    assert hasattr(torch.nn.functional, activation.name)
    assert hasattr(torch.nn, activation.nn_class)
    spellings = [
        activation.name,
        activation.nn_class,
        activation.nn_class.upper(),
        activation.name.replace("_", ""),
    ]
    for spelling in spellings:
        assert find_activation(spelling) is activation
    assert activation.formula and activation.latex and activation.output_range


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a.name)
def test_defaults_are_torchs(activation: Activation) -> None:
    required = [p for p in activation.params if p.required]
    if required:  # only Threshold, whose torch.nn class has no defaults either
        assert activation.name == "threshold"
        assert [p.name for p in required] == ["threshold", "value"]
        return
    module = getattr(torch.nn, activation.nn_class)()
    for param in activation.params:
        if param.name == "dim":
            assert param.default == -1  # torch's None is deprecated ("implicit dim")
        elif param.name == "weight":
            assert module.weight.item() == param.default == 0.25
        else:
            assert getattr(module, param.name) == pytest.approx(param.default)


def test_the_default_functions_are_the_tutorials_four() -> None:
    assert DEFAULT_FUNCTIONS == ("sigmoid", "tanh", "relu", "softplus")
    x = torch.linspace(-6, 6, 100)
    modules = [torch.nn.Sigmoid(), torch.nn.Tanh(), torch.nn.ReLU(), torch.nn.Softplus()]
    for bound, module in zip(bind([(n, {}) for n in DEFAULT_FUNCTIONS], {}), modules, strict=True):
        assert torch.equal(evaluate(bound, x).y, module(x))


# --- values and derivatives against torch ----------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_values_and_derivatives_match_torch(name: str, seed: int) -> None:
    params, x = random_case(name, seed)
    (bound,) = bind([(name, params)], {})
    result = evaluate(bound, x, derivative=True)
    y, diagonal, jacobian = reference(name, params, x)
    torch.testing.assert_close(result.y, y)
    assert result.dydx is not None
    torch.testing.assert_close(result.dydx, diagonal)
    assert evaluate(bound, x).dydx is None
    if not bound.activation.along_dim:
        # Element-wise: the Jacobian is diagonal, so one backward pass with ones is dy/dx.
        assert torch.count_nonzero(jacobian - torch.diag(jacobian.diagonal())) == 0


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_torch(name: str) -> None:
    params, x = random_case(name, 7)
    x = x.float()
    (bound,) = bind([(name, params)], {})
    result = evaluate(bound, x, derivative=True)
    y, diagonal, _ = reference(name, params, x)
    assert result.y.dtype == torch.float32
    torch.testing.assert_close(result.y, y)
    torch.testing.assert_close(result.dydx, diagonal)


def test_prelu_takes_one_slope_per_channel() -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    params = {"weight": [0.1, -0.2, 0.3]}
    (bound,) = bind([("PReLU", params)], {})
    result = evaluate(bound, x, derivative=True)
    y, diagonal, _ = reference("prelu", params, x)
    torch.testing.assert_close(result.y, y)
    torch.testing.assert_close(result.dydx, diagonal)
    with pytest.raises(OpError, match="PReLU"):
        evaluate(bound, torch.randn(5))  # one channel, three slopes


def test_softmax_derivative_is_the_jacobian_diagonal() -> None:
    x = torch.randn(4, 6, dtype=torch.float64)
    for name, dim in (("softmax", 1), ("softmin", 0), ("log_softmax", -1)):
        (bound,) = bind([(name, {"dim": dim})], {})
        result = evaluate(bound, x, derivative=True)
        s = torch.softmax(x if name != "softmin" else -x, dim)
        expected = {"softmax": s * (1 - s), "softmin": -s * (1 - s), "log_softmax": 1 - s}[name]
        torch.testing.assert_close(result.dydx, expected)


@pytest.mark.parametrize(("shape", "dim"), [((), -1), ((0, 3), 1), ((7,), 0), ((2, 3, 5), 1)])
def test_softmax_derivative_on_any_shape_in_small_batches(
    shape: tuple[int, ...], dim: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluation, "JACOBIAN_CHUNK_ELEMENTS", 7)  # several batched passes
    x = torch.randn(shape, dtype=torch.float64)
    (bound,) = bind([("softmax", {"dim": dim})], {})
    result = evaluate(bound, x, derivative=True)
    assert result.dydx is not None and result.dydx.shape == x.shape
    if x.numel():
        _, diagonal, _ = reference("softmax", {"dim": dim}, x)
        torch.testing.assert_close(result.dydx, diagonal)


def test_the_softmax_derivative_checks_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "JACOBIAN_CHUNK_ELEMENTS", 1)
    deadline = Deadline(0.01)
    time.sleep(0.02)
    (bound,) = bind([("softmax", {})], {})
    with pytest.raises(ComputeTimeout):
        evaluate(bound, torch.randn(50), derivative=True, deadline=deadline)


def test_integer_and_boolean_inputs_become_float32() -> None:
    assert as_input(torch.tensor([1, -2])).dtype == torch.float32
    assert as_input(torch.tensor([True])).dtype == torch.float32
    half = torch.tensor([1.0], dtype=torch.float16)
    assert as_input(half) is half


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("celu", {"alpha": 0.0}),
        ("softshrink", {"lambd": -1.0}),
        ("hardtanh", {"min_val": 2.0, "max_val": 1.0}),
        ("rrelu", {"lower": 0.5, "upper": 0.1}),
        ("softmax", {"dim": 3}),
    ],
)
def test_torchs_refusals_are_op_failed(name: str, params: dict[str, Any]) -> None:
    (bound,) = bind([(name, params)], {})
    with pytest.raises(OpError) as caught:
        evaluate(bound, torch.randn(4))
    assert caught.value.status_code == 422
    assert caught.value.message.startswith(bound.title)
    assert caught.value.details == {"function": name}


# --- binding ---------------------------------------------------------------------------------


def test_shared_params_go_to_every_function_that_takes_them() -> None:
    leaky, elu, relu = bind(
        [("leaky_relu", {}), ("ELU", {"alpha": 2}), ("relu", {})],
        {"negative_slope": 0.2, "alpha": 0.5},
    )
    assert leaky.params == {"negative_slope": 0.2}
    assert elu.params == {"alpha": 2.0}  # its own value wins; numbers become floats
    assert relu.params == {}
    assert (leaky.title, elu.title, relu.title) == (
        "LeakyReLU(negative_slope=0.2)",
        "ELU(alpha=2)",
        "ReLU",
    )


def test_defaults_fill_what_is_not_given() -> None:
    (softplus,) = bind([("softplus", {"beta": 2})], {})
    assert softplus.params == {"beta": 2.0, "threshold": 20.0}
    (gelu,) = bind([("gelu", {})], {})
    assert gelu.params == {"approximate": "none"} and gelu.title == "GELU"


@pytest.mark.parametrize(
    ("requests", "shared", "code", "fragment"),
    [
        ([("swish2", {})], {}, "unknown_function", "leaky_relu"),
        ([("relu", {})], {"alpha": 1.0}, "unknown_param", "no parameters"),
        ([("elu", {}), ("relu", {})], {"beta": 1.0}, "unknown_param", "takes alpha"),
        ([("elu", {"beta": 1.0})], {}, "unknown_param", "alpha"),
        ([("threshold", {"threshold": 0.5})], {}, "missing_param", "'value'"),
        ([("elu", {"alpha": True})], {}, "invalid_param", "a number"),
        ([("elu", {"alpha": "1"})], {}, "invalid_param", "a number"),
        ([("softmax", {"dim": 1.0})], {}, "invalid_param", "an integer"),
        ([("gelu", {"approximate": "fast"})], {}, "invalid_param", "'none', 'tanh'"),
        ([("prelu", {"weight": []})], {}, "invalid_param", "list of numbers"),
        ([("prelu", {"weight": [1.0, False]})], {}, "invalid_param", "list of numbers"),
    ],
)
def test_binding_errors(
    requests: list[tuple[str, dict[str, Any]]], shared: dict[str, Any], code: str, fragment: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        bind(requests, shared)
    assert caught.value.status_code == 422
    assert caught.value.code == code
    assert fragment in caught.value.message


def test_unknown_names_list_the_allowed_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        find_activation("swish")
    assert caught.value.details["allowed"] == [a.name for a in ACTIVATIONS]
    with pytest.raises(InvalidInput) as caught:
        bind([("hardtanh", {"max": 1.0})], {})
    assert caught.value.details["allowed"] == ["min_val", "max_val"]


# --- limits ----------------------------------------------------------------------------------


def test_charge_counts_outputs_and_derivatives() -> None:
    functions = bind([("relu", {}), ("tanh", {})], {})
    budget = Budget(1 << 20, 1 << 20, 1e12)
    charge(functions, torch.zeros(1000), budget, derivative=True)
    assert budget.elements == 4 * 1000  # y and dydx of each
    with pytest.raises(LimitExceeded) as caught:
        charge(functions, torch.zeros(1000), Budget(1 << 20, 1500, 1e12), derivative=False)
    assert caught.value.limit == "max_total_elements"


def test_the_softmax_derivative_costs_a_pass_per_position_along_dim() -> None:
    (softmax,) = bind([("softmax", {})], {})
    (tanh,) = bind([("tanh", {})], {})
    x = torch.zeros(10, 1000)
    costs = []
    for bound in (tanh, softmax):
        budget = Budget(1 << 30, 1 << 30, 1e30)
        charge([bound], x, budget, derivative=True)
        costs.append(budget.flops)
    assert costs[1] > 500 * costs[0]
    with pytest.raises(LimitExceeded) as caught:
        charge([softmax], x, Budget(1 << 30, 1 << 30, 1e8), derivative=True)
    assert caught.value.limit == "max_flops"
