"""The scanner and parser: length, depth and node limits, hostile and arbitrary text."""

from __future__ import annotations

import ast
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import autograd as schema
from service.config import Limits
from service.errors import LimitExceeded, ServiceError
from service.limits import Budget
from service.ops.autograd.functions import FUNCTIONS
from service.ops.autograd.parse import parse_expression
from tests.unit.ops.autograd.helpers import LIMITS, grad_of

# --- limits ----------------------------------------------------------------------------------


def test_expression_limits_are_413s_naming_the_limit() -> None:
    cases = {
        "max_expression_length": "x" + "+x" * LIMITS.max_expression_length,
        "max_expression_depth": "(" * 101 + "x" + ")" * 101,
        "max_expression_nodes": "sum(" + ",".join(["x"] * 1001) + ")",
    }
    for limit, text in cases.items():
        with pytest.raises(LimitExceeded) as exc:
            parse_expression(text, ["x"], limits=LIMITS)
        assert exc.value.details["limit"] == limit
        assert exc.value.details["allowed"] == getattr(LIMITS, limit)


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
        parse_expression(text, ["x"], limits=LIMITS)
    assert exc.value.details["limit"] == "max_expression_depth"


def test_depth_just_under_the_limit_evaluates() -> None:
    text = "+".join(["x"] * 90)
    result = grad_of(text, {"x": torch.tensor(1.0)})
    assert result.value.item() == 90.0
    nested = "exp(" * 10 + "sin(" * 80 + "x" + ")" * 90
    grad_of(nested, {"x": torch.tensor(0.1)})


OPERATORS = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop)


def _measure(text: str) -> dict[str, int]:
    """The text's length, syntax nodes and nesting, measured with Python's own ``ast``."""
    tree = ast.parse(text.strip(), mode="eval")
    nodes = sum(1 for node in ast.walk(tree) if not isinstance(node, OPERATORS))
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, OPERATORS):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    brackets = depth = 0
    for char in text:
        depth += (char in "([") - (char in ")]")
        brackets = max(brackets, depth)
    return {
        "max_expression_length": len(text),
        "max_expression_nodes": nodes,
        "max_expression_depth": max(deepest, brackets),
    }


@pytest.mark.parametrize(
    "text",
    ["sum(x * 2)", "((x))", "-(-x)", "x[0] + exp(sin(x))[1:]", "  sum(x\n* 2)", "sum(x, dim=(0,))"],
)
@pytest.mark.parametrize(
    "limit", ["max_expression_length", "max_expression_nodes", "max_expression_depth"]
)
def test_configured_limits_are_enforced_to_the_unit(limit: str, text: str) -> None:
    needed = _measure(text)[limit]
    parse_expression(text, ["x"], limits=Limits(**{limit: needed}))  # exactly enough
    with pytest.raises(LimitExceeded) as exc:
        parse_expression(text, ["x"], limits=Limits(**{limit: needed - 1}))
    assert exc.value.details == {"limit": limit, "allowed": needed - 1, "requested": needed}
    assert exc.value.code == f"{limit.removeprefix('max_')}_limit"
    assert exc.value.status_code == 413


@pytest.mark.parametrize(
    "text",
    [
        "-" * 4000 + "x",
        "(" * 101 + "x" + ")" * 101,
        "+".join(["x"] * 150),
        "sum(" + ",".join(["x"] * 1001) + ")",
        "x" + "+x" * LIMITS.max_expression_length,
    ],
    ids=["parser-recursion", "brackets", "tree", "nodes", "length"],
)
def test_every_expression_limit_reports_a_number(text: str) -> None:
    with pytest.raises(LimitExceeded) as exc:
        parse_expression(text, ["x"], limits=LIMITS)
    requested = exc.value.details["requested"]
    assert isinstance(requested, int)
    assert requested > exc.value.details["allowed"]
    assert str(exc.value.details["allowed"]) in exc.value.message.replace(",", "")


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
    defaults = {name: field.default for name, field in Limits.model_fields.items()}
    assert defaults["max_expression_length"] == schema.MAX_EXPRESSION_LENGTH
    assert defaults["max_expression_nodes"] == schema.MAX_EXPRESSION_NODES
    assert defaults["max_expression_depth"] == schema.MAX_EXPRESSION_DEPTH
    assert defaults["max_hessian_elements"] == schema.MAX_HESSIAN_ELEMENTS
