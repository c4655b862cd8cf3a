"""The functions an expression may call, each against torch on the same inputs."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn import functional

from schemas import autograd as schema
from service.ops.autograd.functions import FUNCTIONS, function_signatures
from tests.unit.ops.autograd.helpers import Env, assert_same, grad_of, reference

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


def test_every_function_is_documented() -> None:
    documented = set(schema.FUNCTION_DOCS.replace("`", " ").replace("(", " ").split())
    assert set(FUNCTIONS) <= documented
    for name, spec in FUNCTIONS.items():
        if len(spec.params) > 1 and f"`{name}(" in schema.FUNCTION_DOCS:
            assert spec.signature(name) in schema.FUNCTION_DOCS, name


def test_function_signatures_list_every_function_with_its_defaults() -> None:
    signatures = function_signatures()
    assert len(signatures) == len(FUNCTIONS)
    for signature, (name, spec) in zip(signatures, FUNCTIONS.items(), strict=True):
        call = ast.parse(signature, mode="eval").body
        assert isinstance(call, ast.Call)
        assert isinstance(call.func, ast.Name)
        assert call.func.id == name
        positional = [arg.id for arg in call.args if isinstance(arg, ast.Name)]
        keywords = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        assert (*positional, *keywords) == spec.params
        assert keywords == dict(spec.defaults)
