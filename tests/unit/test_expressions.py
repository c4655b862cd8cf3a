"""The ``/grad`` expression language without HTTP: parser, checker, planner, gradients.

Reference values come from torch itself, computed here on the same inputs.
"""

from __future__ import annotations

import ast
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn import functional

from schemas import autograd as schema
from service.errors import InvalidInput, LimitExceeded, OpError, ServiceError
from service.limits import Budget, Deadline
from service.ops.autograd import expressions
from service.ops.autograd import gradients as autograd
from service.ops.autograd.expressions import (
    FUNCTIONS,
    META,
    Evaluation,
    evaluate,
    parse_expression,
)
from service.ops.autograd.gradients import Gradient, compute_gradient, plan_gradient

CPU = torch.device("cpu")
Env = Mapping[str, torch.Tensor]


def big_budget() -> Budget:
    return Budget(1 << 40, 1 << 40, 1e30)


def grad_of(
    text: str,
    inputs: Env,
    wrt: list[str] | None = None,
    *,
    hessian: bool = False,
    budget: Budget | None = None,
) -> Gradient:
    plan = plan_gradient(text, inputs, wrt, hessian=hessian, budget=budget or big_budget())
    return compute_gradient(plan, device=CPU, deadline=Deadline(30.0))


def reference(fn: Callable[[Env], torch.Tensor], inputs: Env, wrt: list[str]) -> Gradient:
    """torch's own value and gradients of ``fn`` (leaves that it does not use get zeros)."""
    leaves = {name: t.detach().clone().requires_grad_(name in wrt) for name, t in inputs.items()}
    value = fn(leaves)
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    wanted = [leaves[name] for name in wrt]
    if value.requires_grad and wanted:
        grads = torch.autograd.grad(value, wanted, allow_unused=True, materialize_grads=True)
    else:
        grads = tuple(torch.zeros_like(leaf) for leaf in wanted)
    return Gradient(value.detach(), dict(zip(wrt, grads, strict=True)), None)


def assert_same(got: Gradient, expected: Gradient) -> None:
    assert got.value.dtype == expected.value.dtype
    assert got.value.shape == expected.value.shape
    torch.testing.assert_close(got.value, expected.value, equal_nan=True)
    assert set(got.grads) == set(expected.grads)
    for name, grad in expected.grads.items():
        assert got.grads[name].shape == grad.shape, name
        assert got.grads[name].dtype == grad.dtype, name
        torch.testing.assert_close(got.grads[name], grad, equal_nan=True)


def code_of(exc: pytest.ExceptionInfo[ServiceError]) -> str:
    return exc.value.code


# --- the tutorial's chapter 5 ----------------------------------------------------------------


def test_chapter_5_exactly() -> None:
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    result = grad_of("sum(x**2 + 2*x + 1)", {"x": x})
    assert result.value.dtype == torch.float32
    assert result.value.shape == ()
    assert result.value.item() == 54.0
    # The tutorial prints [[4, 6], [8, 10]]; the gradient of x² + 2x + 1 is 2x + 2.
    torch.testing.assert_close(result.grads["x"], 2 * x + 2)
    assert result.grads["x"].tolist() == [[4.0], [6.0], [8.0], [10.0]]
    leaf = x.clone().requires_grad_(True)
    torch.sum(leaf**2 + 2 * leaf + 1).backward()
    assert leaf.grad is not None
    torch.testing.assert_close(result.grads["x"], leaf.grad)


# --- every function against torch ------------------------------------------------------------

INPUTS: dict[str, torch.Tensor] = {
    "x": torch.tensor([0.3, -0.7, 1.2]),
    "y": torch.tensor([0.5, 0.25, -1.5]),
    "p": torch.tensor([0.2, 0.5, 0.9]),  # in (0, 1): asin, acos, atanh
    "q": torch.tensor([1.5, 2.0, 3.0]),  # > 1: acosh
    "a": torch.tensor([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]]),
    "b": torch.tensor([[1.0, -1.0], [0.5, 2.0], [-0.3, 0.7]]),
    "m": torch.tensor([[1.0, 0.2, -0.1], [0.3, -2.0, 0.5], [0.0, 0.4, 1.5]]),
}

UNARY_DOMAINS = {"asin": "p", "acos": "p", "atanh": "p", "acosh": "q", "log": "q", "log2": "q"}
UNARY = {
    name: spec.fn
    for name, spec in FUNCTIONS.items()
    if spec.params == ("input",) and name not in ("trace", "t")
}

CASES: list[tuple[str, Callable[[Env], Any]]] = [
    *(
        (f"sum({name}({UNARY_DOMAINS.get(name, 'x')}) * y[0])", None)  # filled below
        for name in UNARY
    ),
    ("sum(x)", lambda e: torch.sum(e["x"])),
    ("sum(a, dim=1, keepdim=True)[1, 0]", lambda e: torch.sum(e["a"], 1, keepdim=True)[1, 0]),
    ("sum(a, dim=(0, 1))", lambda e: torch.sum(e["a"], (0, 1))),
    ("sum(sum(a, keepdim=True))", lambda e: torch.sum(e["a"]).reshape(1, 1).sum()),
    ("mean(a, 0)[2]", lambda e: torch.mean(e["a"], 0)[2]),
    ("mean(x * y)", lambda e: torch.mean(e["x"] * e["y"])),
    ("prod(x)", lambda e: torch.prod(e["x"])),
    ("sum(prod(a, dim=1))", lambda e: torch.prod(e["a"], 1).sum()),
    ("max(x)", lambda e: torch.max(e["x"])),
    ("sum(max(x, y))", lambda e: torch.maximum(e["x"], e["y"]).sum()),
    ("sum(max(x, 0.5))", lambda e: torch.clamp(e["x"], min=0.5).sum()),
    ("sum(max(a, dim=1))", lambda e: torch.max(e["a"], dim=1).values.sum()),
    ("min(x)", lambda e: torch.min(e["x"])),
    ("sum(min(x, y))", lambda e: torch.minimum(e["x"], e["y"]).sum()),
    ("sum(min(a, dim=0, keepdim=True))", lambda e: torch.min(e["a"], 0, keepdim=True).values.sum()),
    ("norm(x)", lambda e: torch.norm(e["x"])),
    ("sum(norm(a, p=1, dim=0))", lambda e: torch.norm(e["a"], p=1, dim=0).sum()),
    ("norm(x, p=inf)", lambda e: torch.norm(e["x"], p=math.inf)),
    ("var(x)", lambda e: torch.var(e["x"])),
    ("sum(std(a, dim=1, correction=0))", lambda e: torch.std(e["a"], dim=1, correction=0).sum()),
    ("logsumexp(x, 0)", lambda e: torch.logsumexp(e["x"], 0)),
    ("softmax(x, 0)[1]", lambda e: torch.softmax(e["x"], 0)[1]),
    ("log_softmax(x, dim=0)[2]", lambda e: torch.log_softmax(e["x"], 0)[2]),
    ("sum(cumsum(x, 0) * y)", lambda e: (torch.cumsum(e["x"], 0) * e["y"]).sum()),
    ("sum(cumprod(x, 0) * y)", lambda e: (torch.cumprod(e["x"], 0) * e["y"]).sum()),
    ("sum(softplus(x, beta=2))", lambda e: functional.softplus(e["x"], beta=2).sum()),
    ("sum(leaky_relu(x, 0.2))", lambda e: functional.leaky_relu(e["x"], 0.2).sum()),
    ("sum(elu(x, alpha=0.5))", lambda e: functional.elu(e["x"], alpha=0.5).sum()),
    ("sum(pow(x, 3))", lambda e: torch.pow(e["x"], 3).sum()),
    ("sum(pow(2, x))", lambda e: torch.pow(2, e["x"]).sum()),
    ("sum(pow(x, y * 0 + 2))", lambda e: torch.pow(e["x"], e["y"] * 0 + 2).sum()),
    ("sum(clamp(x, min=-0.5, max=1))", lambda e: torch.clamp(e["x"], -0.5, 1).sum()),
    ("sum(clamp(x, max=y))", lambda e: torch.clamp(e["x"], max=e["y"]).sum()),
    (
        "sum(where(x > 0, x, 0.1 * y))",
        lambda e: torch.where(e["x"] > 0, e["x"], 0.1 * e["y"]).sum(),
    ),
    (
        "sum(where(x <= y, x**2, 1.0))",
        lambda e: torch.where(e["x"] <= e["y"], e["x"] ** 2, 1.0).sum(),
    ),
    ("sum(maximum(x, y))", lambda e: torch.maximum(e["x"], e["y"]).sum()),
    ("sum(minimum(x, 0))", lambda e: torch.minimum(e["x"], torch.tensor(0)).sum()),
    ("sum(atan2(x, y))", lambda e: torch.atan2(e["x"], e["y"]).sum()),
    ("sum(matmul(a, b))", lambda e: torch.matmul(e["a"], e["b"]).sum()),
    ("sum(a @ b @ a)", lambda e: (e["a"] @ e["b"] @ e["a"]).sum()),
    ("sum(mm(a, b))", lambda e: torch.mm(e["a"], e["b"]).sum()),
    ("sum(mv(m, x))", lambda e: torch.mv(e["m"], e["x"]).sum()),
    ("dot(x, y)", lambda e: torch.dot(e["x"], e["y"])),
    ("x @ y", lambda e: e["x"] @ e["y"]),
    ("sum(outer(x, y))", lambda e: torch.outer(e["x"], e["y"]).sum()),
    ("trace(m)", lambda e: torch.trace(e["m"])),
    ("sum(t(a) * b)", lambda e: (torch.t(e["a"]) * e["b"]).sum()),
    ("sum(transpose(a, 0, 1) * b)", lambda e: (torch.transpose(e["a"], 0, 1) * e["b"]).sum()),
    ("sum(reshape(a, (3, 2)) * b)", lambda e: (torch.reshape(e["a"], (3, 2)) * e["b"]).sum()),
    # operators, constants, subscripts and plain numbers
    ("sum(x % 0.5 + y / 3 - 2 ** x)", lambda e: (e["x"] % 0.5 + e["y"] / 3 - 2 ** e["x"]).sum()),
    ("-sum(+x) * pi + e", lambda e: -torch.sum(+e["x"]) * math.pi + math.e),
    (
        "a[1, -1] * m[..., 0][2] + b[:2, 1][0]",
        lambda e: e["a"][1, -1] * e["m"][..., 0][2] + e["b"][:2, 1][0],
    ),
    ("sum(x[::2]) + sum(a[None, :, 1:])", lambda e: e["x"][::2].sum() + e["a"][None, :, 1:].sum()),
    ("sum(x) * (2 + 3) / 4 ** 0.5", lambda e: torch.sum(e["x"]) * (2 + 3) / 4**0.5),
    ("sum(x * exp(1))", lambda e: (e["x"] * torch.exp(torch.tensor(1))).sum()),
    ("sum((x > 0) * x)", lambda e: ((e["x"] > 0) * e["x"]).sum()),
    ("sum(x * (1 < 2))", lambda e: (e["x"] * True).sum()),
    ("2 + 3", lambda e: torch.tensor(5)),
    ("pi", lambda e: torch.tensor(math.pi)),
]


def _unary_reference(name: str) -> Callable[[Env], Any]:
    fn = UNARY[name]
    source = UNARY_DOMAINS.get(name, "x")
    return lambda e: torch.sum(fn(e[source]) * e["y"][0])


CASES = [
    (text, fn if fn is not None else _unary_reference(text[4 : text.index("(", 4)]))
    for text, fn in CASES
]


def test_every_function_has_a_case() -> None:
    used = {
        node.func.id
        for text, _ in CASES
        for node in ast.walk(ast.parse(text, mode="eval"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert set(FUNCTIONS) <= used


@pytest.mark.parametrize(("text", "fn"), CASES, ids=[text for text, _ in CASES])
def test_value_and_gradients_match_torch(text: str, fn: Callable[[Env], Any]) -> None:
    floats = list(INPUTS)
    assert_same(grad_of(text, INPUTS), reference(fn, INPUTS, floats))


def test_float64_and_float16_keep_their_dtypes() -> None:
    for dtype in (torch.float64, torch.float16):
        x = torch.tensor([0.5, 1.5], dtype=dtype)
        result = grad_of("sum(sigmoid(x) * 2.5)", {"x": x})
        assert result.value.dtype == dtype
        assert result.grads["x"].dtype == dtype
        assert_same(
            result, reference(lambda e: (torch.sigmoid(e["x"]) * 2.5).sum(), {"x": x}, ["x"])
        )


def test_inputs_named_like_functions_are_values() -> None:
    # Functions live in call position only: an input called `sum` is a tensor elsewhere.
    x = torch.tensor([1.0, 2.0])
    result = grad_of("sum(sum * 3)", {"sum": x})
    torch.testing.assert_close(result.grads["sum"], torch.full_like(x, 3.0))


def test_wrt_selects_inputs_and_unused_inputs_get_zeros() -> None:
    inputs = {"x": torch.tensor([1.0, 2.0]), "y": torch.tensor([3.0]), "n": torch.tensor([1, 2])}
    result = grad_of("sum(x * n)", inputs, ["y", "x", "x"])
    assert list(result.grads) == ["y", "x"]
    assert result.grads["y"].tolist() == [0.0]
    assert result.grads["x"].tolist() == [1.0, 2.0]
    default = grad_of("sum(x * n)", inputs)
    assert list(default.grads) == ["x", "y"]  # every floating input, not the integer one


def test_a_value_that_depends_on_no_input_has_zero_gradients() -> None:
    result = grad_of("sum(x > 0) + 1", {"x": torch.tensor([1.0, -2.0])})
    assert result.value.dtype == torch.int64
    assert result.value.item() == 2
    assert result.grads["x"].tolist() == [0.0, 0.0]


def test_no_inputs_gives_a_value_and_no_gradients() -> None:
    result = grad_of("2 ** 10 + pi", {})
    assert result.grads == {}
    assert result.value.item() == pytest.approx(1024 + math.pi)


# --- hypothesis: random compositions against torch -------------------------------------------

Expr = tuple[str, Callable[[Env], torch.Tensor]]
SAFE_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "gelu": functional.gelu,
    "silu": functional.silu,
    "softplus": functional.softplus,
    "abs": torch.abs,
    "exp": torch.exp,
}
LEAVES: list[Expr] = [
    ("x", lambda e: e["x"]),
    ("y", lambda e: e["y"]),
    ("(m @ x)", lambda e: e["m"] @ e["x"]),
    ("0.5", lambda e: 0.5),  # type: ignore[list-item,return-value]
    ("2", lambda e: 2),  # type: ignore[list-item,return-value]
]


def _unary(child: Expr, name: str) -> Expr:
    text, fn = child
    torch_fn = SAFE_UNARY[name]

    def run(e: Env) -> torch.Tensor:
        value = fn(e)
        return torch_fn(value if isinstance(value, torch.Tensor) else torch.as_tensor(value))

    return f"{name}({text})", run


def _binary(left: Expr, right: Expr, symbol: str) -> Expr:
    ops: dict[str, Callable[[Any, Any], Any]] = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": lambda a, b: a / b,
    }
    (lt, lf), (rt, rf) = left, right
    return f"({lt} {symbol} {rt})", lambda e: ops[symbol](lf(e), rf(e))


def _special(child: Expr, kind: str) -> Expr:
    text, fn = child

    def tensor(e: Env) -> torch.Tensor:
        value = fn(e)
        return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)

    if kind == "pow":
        return f"({text}) ** 2", lambda e: fn(e) ** 2
    if kind == "clamp":
        return f"clamp({text}, min=-1, max=1.5)", lambda e: torch.clamp(tensor(e), -1, 1.5)
    if kind == "where":
        return (
            f"where({text} > 0, {text}, 0.1 * ({text}))",
            lambda e: torch.where(tensor(e) > 0, tensor(e), 0.1 * tensor(e)),
        )
    if kind == "log":
        return f"log(abs({text}) + 1)", lambda e: torch.log(torch.abs(tensor(e)) + 1)
    if kind == "sqrt":
        return f"sqrt({text} ** 2 + 1)", lambda e: torch.sqrt(tensor(e) ** 2 + 1)
    if kind == "max":
        return f"max({text}, y)", lambda e: torch.maximum(tensor(e), e["y"])
    return f"(mean({text}) * x)", lambda e: torch.mean(tensor(e)) * e["x"]


def expressions_strategy() -> st.SearchStrategy[Expr]:
    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        return st.one_of(
            st.builds(_unary, children, st.sampled_from(list(SAFE_UNARY))),
            st.builds(_binary, children, children, st.sampled_from(["+", "-", "*", "/"])),
            st.builds(
                _special,
                children,
                st.sampled_from(["pow", "clamp", "where", "log", "sqrt", "max", "mean"]),
            ),
        )

    return st.recursive(st.sampled_from(LEAVES), extend, max_leaves=8)


RANDOM_INPUTS = {
    "x": torch.tensor([0.3, -1.1, 2.0]),
    "y": torch.tensor([-0.4, 0.8, 1.3]),
    "m": torch.tensor([[0.5, -0.2, 0.1], [0.0, 1.0, -0.7], [0.3, 0.3, 0.3]]),
}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions_strategy(), st.sampled_from(["sum", "mean", "norm"]))
def test_random_compositions_match_torch(expr: Expr, reduce: str) -> None:
    text, fn = expr
    reducer = {"sum": torch.sum, "mean": torch.mean, "norm": torch.norm}[reduce]

    def scalar(e: Env) -> torch.Tensor:
        value = fn(e)
        return reducer(value if isinstance(value, torch.Tensor) else torch.as_tensor(value))

    try:
        expected = reference(scalar, RANDOM_INPUTS, list(RANDOM_INPUTS))
    except (RuntimeError, ZeroDivisionError):  # e.g. norm of an integer, 2 / (2 - 2)
        with pytest.raises((OpError, InvalidInput)):
            grad_of(f"{reduce}({text})", RANDOM_INPUTS)
        return
    assert_same(grad_of(f"{reduce}({text})", RANDOM_INPUTS), expected)


# --- hessians --------------------------------------------------------------------------------

HESSIAN_CASES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("sum(w * x**2) + dot(w, x)", lambda x, w: torch.sum(w * x**2) + torch.dot(w, x)),
    ("sum(sin(x) * exp(w))", lambda x, w: torch.sum(torch.sin(x) * torch.exp(w))),
    ("norm(x) ** 2 + sum(w) ** 3", lambda x, w: torch.norm(x) ** 2 + torch.sum(w) ** 3),
    ("sum(x) + 2 * sum(w)", lambda x, w: torch.sum(x) + 2 * torch.sum(w)),  # linear: zeros
    ("logsumexp(x * w, 0)", lambda x, w: torch.logsumexp(x * w, 0)),
]


@pytest.mark.parametrize(("text", "fn"), HESSIAN_CASES, ids=[text for text, _ in HESSIAN_CASES])
def test_hessian_matches_torch_autograd_functional(text: str, fn: Callable[..., Any]) -> None:
    x = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    w = torch.tensor([0.5, 1.5, -0.25], dtype=torch.float64)
    result = grad_of(text, {"x": x, "w": w}, hessian=True)
    expected = torch.autograd.functional.hessian(fn, (x, w))
    assert result.hessians is not None
    for i, a in enumerate(["x", "w"]):
        for j, b in enumerate(["x", "w"]):
            torch.testing.assert_close(result.hessians[a][b], expected[i][j])


def test_hessian_blocks_have_the_shapes_of_both_inputs() -> None:
    w = torch.tensor([[0.5, -1.0, 0.2], [0.1, 0.3, -0.4]], dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)

    def fn(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.sum(torch.tanh(w @ x) ** 2)

    result = grad_of("sum(tanh(w @ x) ** 2)", {"w": w, "x": x}, hessian=True)
    expected = torch.autograd.functional.hessian(fn, (w, x))
    assert result.hessians is not None
    assert result.hessians["w"]["x"].shape == (2, 3, 3)
    assert result.hessians["x"]["w"].shape == (3, 2, 3)
    for i, a in enumerate(["w", "x"]):
        for j, b in enumerate(["w", "x"]):
            torch.testing.assert_close(result.hessians[a][b], expected[i][j])


def test_hessian_of_0d_inputs() -> None:
    s, t = torch.tensor(2.0, dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64)
    result = grad_of("s**3 * sum(t) + s * t[0] ** 2", {"s": s, "t": t}, hessian=True)
    expected = torch.autograd.functional.hessian(
        lambda s, t: s**3 * torch.sum(t) + s * t[0] ** 2, (s, t)
    )
    assert result.hessians is not None
    assert result.hessians["s"]["s"].shape == ()
    assert result.hessians["s"]["t"].shape == (1,)
    assert result.hessians["t"]["t"].shape == (1, 1)
    for i, a in enumerate(["s", "t"]):
        for j, b in enumerate(["s", "t"]):
            torch.testing.assert_close(result.hessians[a][b], expected[i][j])


def test_hessian_of_a_value_that_ignores_its_inputs_is_zero() -> None:
    result = grad_of("sum(x > 0) * 1.5", {"x": torch.ones(2)}, hessian=True)
    assert result.hessians is not None
    assert result.hessians["x"]["x"].tolist() == [[0.0, 0.0], [0.0, 0.0]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions_strategy())
def test_random_hessians_match_torch(expr: Expr) -> None:
    text, fn = expr
    inputs = {name: t.double() for name, t in RANDOM_INPUTS.items() if name != "m"}
    inputs["m"] = RANDOM_INPUTS["m"].double()

    def scalar(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = fn({"x": x, "y": y, "m": inputs["m"]})
        return torch.sum(value if isinstance(value, torch.Tensor) else torch.as_tensor(value))

    try:
        expected = torch.autograd.functional.hessian(scalar, (inputs["x"], inputs["y"]))
    except (RuntimeError, ZeroDivisionError):  # e.g. silu of an integer, 2 / (2 - 2)
        with pytest.raises((OpError, InvalidInput)):
            grad_of(f"sum({text})", inputs, ["x", "y"], hessian=True)
        return
    result = grad_of(f"sum({text})", inputs, ["x", "y"], hessian=True)
    assert result.hessians is not None
    for i, a in enumerate(["x", "y"]):
        for j, b in enumerate(["x", "y"]):
            torch.testing.assert_close(
                result.hessians[a][b],
                expected[i][j].to(result.hessians[a][b].dtype),
                equal_nan=True,
            )


def test_hessian_over_its_limit_is_refused_before_computing() -> None:
    limit = autograd.MAX_HESSIAN_ELEMENTS
    inputs = {"x": torch.ones(limit), "y": torch.ones(1)}
    grad_of("sum(x) ** 2", {"x": torch.ones(limit)}, hessian=True)  # at the limit: fine
    with pytest.raises(LimitExceeded) as exc:
        plan_gradient("sum(x) * sum(y)", inputs, None, hessian=True, budget=big_budget())
    assert exc.value.details == {
        "limit": "max_hessian_elements",
        "allowed": limit,
        "requested": limit + 1,
    }
    assert exc.value.code == "hessian_elements_limit"


# --- errors ----------------------------------------------------------------------------------

ERROR_CASES: list[tuple[str, type[ServiceError], str, int | None]] = [
    # text, error, code, column
    ("sum(x", InvalidInput, "expression_syntax", 3),
    ("x +", InvalidInput, "expression_syntax", 3),
    ("sum(x) sum(y)", InvalidInput, "expression_syntax", 7),
    ("  x $ 2", InvalidInput, "expression_syntax", 4),
    ("x\n+ 1", InvalidInput, "expression_syntax", 2),
    ("   ", InvalidInput, "expression_syntax", 0),
    ("'a' * 10**9", InvalidInput, "expression_not_allowed", 0),
    ("x.grad", InvalidInput, "expression_not_allowed", 0),
    ("sum(x).real", InvalidInput, "expression_not_allowed", 0),
    ("lambda: x", InvalidInput, "expression_not_allowed", 0),
    ("[v for v in x]", InvalidInput, "expression_not_allowed", 0),
    ("x if x else y", InvalidInput, "expression_not_allowed", 0),
    ("x and y", InvalidInput, "expression_not_allowed", 0),
    ("x // y", InvalidInput, "expression_not_allowed", 0),
    ("x | y", InvalidInput, "expression_not_allowed", 2),
    ("not x", InvalidInput, "expression_not_allowed", 0),
    ("(v := x)", InvalidInput, "expression_not_allowed", 1),
    ("sum(*x)", InvalidInput, "expression_not_allowed", 4),
    ("sum(**x)", InvalidInput, "expression_not_allowed", 4),
    ("1j * x", InvalidInput, "expression_syntax", 0),
    ("x + 1if x else 2", InvalidInput, "expression_syntax", 4),
    ("x * 1.__class__", InvalidInput, "expression_syntax", 4),
    ("0 < x < 1", InvalidInput, "expression_not_allowed", 0),
    ("x + (1, 2)", InvalidInput, "expression_not_allowed", 4),
    ("x + None", InvalidInput, "expression_not_allowed", 4),
    ("sum(x)(y)", InvalidInput, "expression_not_allowed", 0),
    ("unknown + x", InvalidInput, "unknown_name", 0),
    ("x + sum", InvalidInput, "unknown_name", 4),
    ("__import__(x)", InvalidInput, "unknown_function", 0),
    ("open(x)", InvalidInput, "unknown_function", 0),
    ("sum(x, axis=0)", InvalidInput, "invalid_argument", 7),
    ("sum(x, dim=0, dim=1)", InvalidInput, "invalid_argument", 14),
    ("sum(x, 0, dim=0)", InvalidInput, "invalid_argument", 10),
    ("softmax(x)", InvalidInput, "invalid_argument", 0),
    ("exp(x, y)", InvalidInput, "invalid_argument", 0),
    ("x[y]", InvalidInput, "invalid_index", 2),
    ("x[0.5]", InvalidInput, "invalid_index", 2),
    ("x[::-1]", InvalidInput, "invalid_index", 2),
    ("x[5]", InvalidInput, "invalid_index", 0),
    ("x[0, 0]", InvalidInput, "invalid_index", 0),
    ("2[0]", InvalidInput, "invalid_index", 0),
    ("99999999999999999999 * x", InvalidInput, "number_out_of_range", 0),
    ("9**9**9**9", InvalidInput, "number_out_of_range", 3),
    ("x * 2**70", InvalidInput, "number_out_of_range", 4),
    ("x * 10.0**400", InvalidInput, "number_out_of_range", 4),
    ("sum(x) + 1 / (1 - 1)", InvalidInput, "op_failed", 9),
    ("x @ y", OpError, "op_failed", 0),
    ("sum(x + m)", OpError, "op_failed", 4),
    ("where(x, x, y)", InvalidInput, "invalid_argument", 0),
    ("sum(x) * exp((0, 1))", InvalidInput, "invalid_argument", 9),
    ("x", InvalidInput, "not_scalar", None),
]


@pytest.mark.parametrize(
    ("text", "error", "code", "column"), ERROR_CASES, ids=[case[0] for case in ERROR_CASES]
)
def test_errors_name_their_code_and_column(
    text: str, error: type[ServiceError], code: str, column: int | None
) -> None:
    inputs = {"x": torch.ones(3), "y": torch.ones(2, 3), "m": torch.ones(4, 4)}
    with pytest.raises(error) as exc:
        plan_gradient(text, inputs, None, hessian=False, budget=big_budget())
    assert exc.value.code == code, exc.value.message
    assert exc.value.status_code == 422
    if column is not None:
        assert exc.value.details["column"] == column, exc.value.message


def test_unknown_names_and_functions_list_the_allowed_ones() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_expression("sum(z)", ["x", "y"])
    assert exc.value.details["known"] == ["x", "y", "pi", "e", "inf"]
    with pytest.raises(InvalidInput) as exc:
        parse_expression("eval(x)", ["x"])
    assert exc.value.details["allowed"] == list(FUNCTIONS)
    assert "sigmoid" in exc.value.message


def test_a_non_scalar_value_suggests_sum() -> None:
    with pytest.raises(InvalidInput) as exc:
        grad_of("x**2 + 1", {"x": torch.ones(4, 1)})
    assert exc.value.code == "not_scalar"
    assert "sum(x**2 + 1)" in exc.value.message
    assert exc.value.details["shape"] == [4, 1]


def test_one_element_values_of_any_shape_are_scalars() -> None:
    result = grad_of("x[None, :1] * 3", {"x": torch.tensor([2.0, 5.0])})
    assert result.value.shape == (1, 1)
    assert result.grads["x"].tolist() == [3.0, 0.0]


def test_integer_gradients_say_to_use_a_float_dtype() -> None:
    n = torch.tensor([1, 2])
    with pytest.raises(InvalidInput) as exc:
        plan_gradient("sum(n)", {"n": n}, None, hessian=False, budget=big_budget())
    assert exc.value.code == "integer_gradient"
    assert "float" in exc.value.message
    with pytest.raises(InvalidInput) as exc:
        inputs = {"n": n, "x": torch.ones(2)}
        plan_gradient("sum(n * x)", inputs, ["n"], hessian=False, budget=big_budget())
    assert exc.value.code == "integer_gradient"
    with pytest.raises(InvalidInput) as exc:
        plan_gradient("sum(n)", {"n": n}, ["q"], hessian=False, budget=big_budget())
    assert exc.value.code == "unknown_name"


@pytest.mark.parametrize("name", ["pi", "e", "inf", "lambda", "None", "x-y"])
def test_reserved_input_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        plan_gradient("1", {name: torch.ones(1)}, None, hessian=False, budget=big_budget())
    assert exc.value.code == "invalid_name"


# --- limits ----------------------------------------------------------------------------------


def test_expression_limits_are_413s_naming_the_limit() -> None:
    cases = {
        "max_expression_length": "x" + "+x" * expressions.MAX_EXPRESSION_LENGTH,
        "max_expression_depth": "(" * 101 + "x" + ")" * 101,
        "max_expression_nodes": "sum(" + ",".join(["x"] * 1001) + ")",
    }
    for limit, text in cases.items():
        with pytest.raises(LimitExceeded) as exc:
            parse_expression(text, ["x"])
        assert exc.value.details["limit"] == limit
        assert exc.value.details["allowed"] == getattr(expressions, limit.upper())


@pytest.mark.parametrize(
    "text",
    [
        "-" * 4000 + "x",
        "x" + "**x" * 1000,
        "x" + "[0]" * 1300,
        "+".join(["x"] * 150),
        "exp(" * 101 + "x" + ")" * 101,
    ],
    ids=["unary", "power", "subscripts", "additions", "calls"],
)
def test_deep_expressions_are_refused_by_depth(text: str) -> None:
    with pytest.raises(LimitExceeded) as exc:
        parse_expression(text, ["x"])
    assert exc.value.details["limit"] == "max_expression_depth"


def test_depth_just_under_the_limit_evaluates() -> None:
    text = "+".join(["x"] * 90)
    result = grad_of(text, {"x": torch.tensor(1.0)})
    assert result.value.item() == 90.0
    nested = "exp(" * 10 + "sin(" * 80 + "x" + ")" * 90
    grad_of(nested, {"x": torch.tensor(0.1)})


def test_intermediates_are_charged_before_anything_is_allocated() -> None:
    x = torch.ones(20000, 1)
    y = torch.ones(1, 20000)  # x + y would be 4·10^8 elements
    budget = Budget(1 << 22, 1 << 24, 1e12)
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as exc:
        plan_gradient("sum(x + y)", {"x": x, "y": y}, None, hessian=False, budget=budget)
    assert time.perf_counter() - start < 1.0
    assert exc.value.details["limit"] == "max_elements"
    assert exc.value.details["requested"] == 20000 * 20000
    assert exc.value.details["column"] == 4


def test_matmul_flops_are_charged() -> None:
    a, b = torch.ones(300, 400), torch.ones(400, 500)
    budget = Budget(1 << 30, 1 << 30, 1e8)
    with pytest.raises(LimitExceeded) as exc:
        plan_gradient("sum(a @ b)", {"a": a, "b": b}, None, hessian=False, budget=budget)
    assert exc.value.details["limit"] == "max_flops"
    ok = Budget(1 << 30, 1 << 30, 1e9)
    plan_gradient("sum(a @ b)", {"a": a, "b": b}, None, hessian=False, budget=ok)
    assert ok.flops >= 2 * 300 * 400 * 500


def test_the_meta_pass_and_the_real_pass_agree_on_shapes() -> None:
    for text, _ in CASES:
        expression = parse_expression(text, INPUTS)
        meta = evaluate(expression, {k: v.to(META) for k, v in INPUTS.items()}, Evaluation(META))
        real = evaluate(expression, INPUTS, Evaluation(CPU))
        if isinstance(real, torch.Tensor):
            assert isinstance(meta, torch.Tensor)
            assert (meta.shape, meta.dtype) == (real.shape, real.dtype), text


def test_the_deadline_stops_a_long_hessian() -> None:
    plan = plan_gradient(
        "sum(x**3)", {"x": torch.ones(500)}, None, hessian=True, budget=big_budget()
    )
    deadline = Deadline(30.0)
    deadline.cancelled = True
    with pytest.raises(ServiceError) as exc:
        compute_gradient(plan, device=CPU, deadline=deadline)
    assert exc.value.status_code == 504


# --- hostile text ----------------------------------------------------------------------------

HOSTILE = [
    "__import__('os').system('id')",
    "__import__(x)",
    "x.__class__.__bases__[0].__subclasses__()",
    "().__class__.__base__.__subclasses__()",
    "lambda: 1",
    "(lambda: x)()",
    "[v for v in x]",
    "{v: v for v in x}",
    "sum(v for v in x)",
    "9**9**9**9",
    "9**9**9",
    "2**2**2**2**2**2",
    "'a'*10**9",
    "x*10**9**9",
    "(" * 10000 + "x" + ")" * 10000,
    "[" * 10000 + "x" + "]" * 10000,
    "+".join(["x"] * 20000),
    "-" * 20000 + "x",
    "open('/etc/passwd')",
    "open(x)",
    "globals()",
    "locals()['x']",
    "x if x else x",
    "eval('1')",
    "exec",
    "compile",
    "__builtins__",
    "sum(x, dim=10**100)",
    "x[10**100]",
    "reshape(x, (10**9, 10**9))",
    "sum(x)\x00",
    "sum(x) # comment",
    "sum(x); import os",
    "\\\nsum(x)",
    "sum(x)\nimport os",
    "𝐱",
    "ｓｕｍ(x)",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_is_refused_quickly(text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ServiceError) as exc:
        grad_of(text, {"x": torch.ones(3)})
    assert exc.value.status_code in (413, 422)
    assert time.perf_counter() - start < 1.0


# --- fuzzing ---------------------------------------------------------------------------------

TOKENS = [
    *("x", "y", "m", "0", "1", "2", "0.5", "1e3", "pi", "e", "inf", "True", "None", "..."),
    *(",", ":", "(", ")", "[", "]", "+", "-", "*", "/", "**", "@", "%", "<", "==", "=", "."),
    *(f"{name}(" for name in list(FUNCTIONS)[::3]),
    "dim=",
    "keepdim=",
    "lambda",
    "'s'",
    " ",
]


def _check_fuzz(text: str) -> None:
    inputs = {"x": torch.ones(3), "y": torch.ones(2, 3), "m": torch.ones(3, 3)}
    try:
        grad_of(text, inputs, hessian=len(text) % 2 == 0, budget=Budget(1 << 16, 1 << 18, 1e8))
    except ServiceError as exc:
        assert exc.status_code in (413, 422), exc.message
        assert exc.code != "internal_error"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_gives_our_errors_only(text: str) -> None:
    _check_fuzz(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map("".join))
def test_grammar_like_text_gives_our_errors_only(text: str) -> None:
    _check_fuzz(text)


# --- the documentation agrees with the code --------------------------------------------------


def test_documented_limits_are_the_enforced_ones() -> None:
    assert schema.MAX_EXPRESSION_LENGTH == expressions.MAX_EXPRESSION_LENGTH
    assert schema.MAX_EXPRESSION_NODES == expressions.MAX_EXPRESSION_NODES
    assert schema.MAX_EXPRESSION_DEPTH == expressions.MAX_EXPRESSION_DEPTH
    assert schema.MAX_HESSIAN_ELEMENTS == autograd.MAX_HESSIAN_ELEMENTS


def test_every_function_is_documented() -> None:
    documented = set(schema.FUNCTION_DOCS.replace("`", " ").replace("(", " ").split())
    assert set(FUNCTIONS) <= documented
    for name, spec in FUNCTIONS.items():
        if len(spec.params) > 1 and f"`{name}(" in schema.FUNCTION_DOCS:
            assert spec.signature(name) in schema.FUNCTION_DOCS, name
