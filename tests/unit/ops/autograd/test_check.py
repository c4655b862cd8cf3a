"""The checker: constructs outside the language, unknown names and functions, arguments,
constant indices; each error with its code and column."""

from __future__ import annotations

import pytest
import torch

from service.errors import InvalidInput, OpError, ServiceError
from service.ops.autograd.functions import FUNCTIONS
from service.ops.autograd.gradients import plan_gradient
from service.ops.autograd.parse import parse_expression
from tests.unit.ops.autograd.helpers import LIMITS, big_budget

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
        plan_gradient(text, inputs, None, hessian=False, budget=big_budget(), limits=LIMITS)
    assert exc.value.code == code, exc.value.message
    assert exc.value.status_code == 422
    if column is not None:
        assert exc.value.details["column"] == column, exc.value.message


def test_unknown_names_and_functions_list_the_allowed_ones() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_expression("sum(z)", ["x", "y"], limits=LIMITS)
    assert exc.value.details["known"] == ["x", "y", "pi", "e", "inf"]
    with pytest.raises(InvalidInput) as exc:
        parse_expression("eval(x)", ["x"], limits=LIMITS)
    assert exc.value.details["allowed"] == list(FUNCTIONS)
    assert "sigmoid" in exc.value.message


@pytest.mark.parametrize("name", ["pi", "e", "inf", "lambda", "None", "x-y"])
def test_reserved_input_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        plan_gradient(
            "1", {name: torch.ones(1)}, None, hessian=False, budget=big_budget(), limits=LIMITS
        )
    assert exc.value.code == "invalid_name"
