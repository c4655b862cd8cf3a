"""The evaluator of ``POST /grad`` expressions: a checked tree walked over named tensors.

An expression is evaluated twice: on torch's ``meta`` device (shapes and dtypes only), where
every intermediate is charged to a :class:`~service.limits.Budget`, and then for real. Each
node is one torch call; an error names the text and column of the node that failed.
Arithmetic between two plain numbers is Python's, kept within int64.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard, cast

import torch

from service.errors import ErrorCode, InvalidInput, OpError, ServiceError
from service.limits import (
    HALF_FLOATS,
    Budget,
    Deadline,
    estimate_matmul_flops,
    matmul_copies,
    widened_product,
)
from service.memory import allocation_failed
from service.ops import products
from service.ops.autograd.check import INT64_MAX, INT64_MIN, not_allowed, static_index, static_ints
from service.ops.autograd.functions import CONSTANTS, FUNCTIONS, Number, Value
from service.ops.tensors.costs import REDUCTION_OUTPUT_PASSES
from service.ops.tensors.indexing import check_index

if TYPE_CHECKING:
    from service.ops.autograd.parse import Expression

META = torch.device("meta")
"""torch's device of shapes and dtypes without storage: where an expression is planned."""

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.MatMult: products.matmul,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float))  # bool is an int


# Passes over the elements a call reads, relative to the device's measured elementwise pass
# (x * 2), for the calls that are more than one arithmetic operation per element (the rest,
# and the operators, make one); the 16-bit floats convert each element on the way (on a CPU
# 2 to 10 times slower). See also service.ops.tensors.costs.
_CHEAP_CALLS = frozenset(
    {"sum", "mean", "max", "min", "abs", "sign", "floor", "ceil", "round", "relu", "clamp"}
    | {"where", "maximum", "minimum", "t", "transpose", "reshape", "trace", "square"}
)
_SCAN_CALLS = frozenset({"softmax", "log_softmax", "logsumexp", "cumsum", "cumprod", "norm"})
_SCAN_CALLS |= {"var", "std", "prod"}
_CALL_PASSES = 4.0
_SCAN_PASSES = 8.0
_POW_PASSES = 16.0
_HALF_FACTOR = 4.0

# The scans whose backward, when it builds a graph of its own (``create_graph``: the first
# pass of a hessian) over an input with a zero, loops over the scanned dimension in torch
# (``cumprod_backward`` in FunctionsManual.cpp): step k takes a product of the k elements
# before it and a cumprod of the n - k after it and keeps them, O(n²) where the backward
# without a graph is O(n). Of the other scans none grows faster than its input (measured at
# n = 4000 with a zero and a hessian: cumprod 2 s and 86 MB, each other one 2 ms and 13 MB).
QUADRATIC_BACKWARD_CALLS = frozenset({"cumprod"})

# Calls whose backward makes several temporaries the size of what they read or write
# (whichever is more): torch's backward of prod divides by the input, or, with a zero in
# it, takes products from either side; of pow, x ** (y - 1), log(x) and their products.
# Peak memory of each backward, float64 with zeros, beyond the input's size: prod 5.4×,
# cumprod 7.4× (x ** y reads two: 5.2×, x ** x 6.2×, atan2 3.2×); exp 1× (its gradient,
# charged as such), mul none.
BACKWARD_COPIES = {"prod": 6.0, "cumprod": 8.0, "pow": 4.0, "atan2": 2.0}


@dataclass(frozen=True)
class QuadraticBackward:
    """A call whose backward with ``create_graph`` loops over a dimension of ``steps``
    elements, each step over what is left of it: ``elements`` = ``steps``² times the other
    dimensions (see :data:`QUADRATIC_BACKWARD_CALLS`)."""

    what: str
    column: int
    steps: int
    elements: int
    passes_factor: float
    """1, or :data:`_HALF_FACTOR` for a 16-bit float (converted on the way)."""


@dataclass
class Evaluation:
    """Where an expression is evaluated and what it may spend."""

    device: torch.device
    budget: Budget | None = None
    deadline: Deadline | None = None
    flops: float = 0.0
    """FLOPs of the forward evaluation (estimated: one per element, matmul's 2·m·k·n)."""
    flops_by_dtype: dict[torch.dtype, float] = field(default_factory=dict)
    """The same FLOPs by the dtype they run in (a float16 matmul is slow on a CPU)."""
    passes: float = 0.0
    """Element passes of the forward evaluation (memory-bound work, see ``_CALL_PASSES``),
    a broadcast matmul's copies of its operands included."""
    backward_tensors: list[tuple[int, str, int, bool]] = field(default_factory=list)
    """What the backward pass makes besides the gradients (elements, what, column, whether
    one tensor): a broadcast matmul's gradient of each operand it copied, over the whole
    broadcast batch before it is summed to the operand's shape (one tensor each); the
    temporaries of a call whose backward copies its input several times
    (:data:`BACKWARD_COPIES`: several tensors, none larger than the input)."""
    quadratic_backwards: list[QuadraticBackward] = field(default_factory=list)
    """Calls whose backward is quadratic when it builds a graph (for a hessian)."""


def evaluate(
    expression: Expression, env: Mapping[str, torch.Tensor], evaluation: Evaluation
) -> Value:
    """Evaluate a parsed expression over named tensors (already on ``evaluation.device``).

    On the ``meta`` device nothing is computed: every intermediate's shape is charged to
    ``evaluation.budget``. Raises :class:`InvalidInput` / :class:`OpError` (422) naming the
    column of the part that failed, :class:`LimitExceeded` (413) over a limit.
    """
    return _Evaluator(expression, env, evaluation).evaluate(expression.tree.body)


class _Evaluator:
    def __init__(
        self, expression: Expression, env: Mapping[str, torch.Tensor], evaluation: Evaluation
    ) -> None:
        self.expression = expression
        self.env = env
        self.evaluation = evaluation

    def where(self, node: ast.AST) -> str:
        return f"{self.expression.source(node)!r} at column {self.expression.column(node)}"

    def evaluate(self, node: ast.expr) -> Value:
        if isinstance(node, ast.Constant):
            # Only numbers, bools and (as arguments) None get here: the checker saw to it.
            return cast(Value, node.value)
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            return CONSTANTS[node.id]
        if isinstance(node, ast.BinOp):
            left, right = self.evaluate(node.left), self.evaluate(node.right)
            op = type(node.op)
            if _is_number(left) and _is_number(right):
                return self._numbers(node, op, left, right)
            pow_ = op is ast.Pow
            return self.apply(
                node,
                _BINARY[op],
                [left, right],
                matmul=op is ast.MatMult,
                passes=_POW_PASSES if pow_ else 1.0,
                backward_copies=BACKWARD_COPIES["pow"] if pow_ else 0.0,
            )
        if isinstance(node, ast.UnaryOp):
            operand = self.evaluate(node.operand)
            if isinstance(node.op, ast.UAdd):
                return (
                    self.apply(node, operator.pos, [operand])
                    if not _is_number(operand)
                    else operand
                )
            if _is_number(operand):
                return self._int64(node, -operand)
            return self.apply(node, operator.neg, [operand])
        if isinstance(node, ast.Compare):
            left, right = self.evaluate(node.left), self.evaluate(node.comparators[0])
            compare = _COMPARE[type(node.ops[0])]
            if _is_number(left) and _is_number(right):
                return bool(compare(left, right))
            return self.apply(node, compare, [left, right])
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, (ast.Tuple, ast.List)):
            return static_ints(node, self._index_error)
        raise not_allowed(self.expression, node)  # pragma: no cover - checked when parsed

    def _index_error(self, node: ast.AST, message: str) -> InvalidInput:
        return InvalidInput(
            f"{self.where(node)}: {message}",
            details={"column": self.expression.column(node)},
            code=ErrorCode.INVALID_INDEX,
        )

    def _int64(self, node: ast.AST, value: Number) -> Number:
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise self._int64_error(node)
        return value

    def _numbers(self, node: ast.AST, op: type[ast.operator], left: Number, right: Number) -> Value:
        """Python's arithmetic on two plain numbers, bounded to int64 (nothing huge is built)."""
        if op is ast.MatMult:
            return self.apply(node, operator.matmul, [left, right])  # torch's error message
        exact = isinstance(left, int) and isinstance(right, int)
        # |left| ** right has right·log2|left| bits: anything past 64 cannot fit int64.
        if op is ast.Pow and exact and right > 0 and abs(left) > 1 and right > 64:
            raise self._int64_error(node)
        try:
            result = _BINARY[op](left, right)
        except ZeroDivisionError:
            raise InvalidInput(
                f"{self.where(node)}: division by zero",
                details={"column": self.expression.column(node)},
                code=ErrorCode.OP_FAILED,
            ) from None
        except OverflowError:
            raise InvalidInput(
                f"{self.where(node)}: the result is too large for a float",
                details={"column": self.expression.column(node)},
                code=ErrorCode.NUMBER_OUT_OF_RANGE,
            ) from None
        if isinstance(result, complex):  # (-8) ** 0.5: not a real number, as in torch
            return math.nan
        return self._int64(node, result)

    def _int64_error(self, node: ast.AST) -> InvalidInput:
        return InvalidInput(
            f"{self.where(node)}: the integer result is out of the int64 range; "
            "write a float (9.0**99) for large numbers",
            details={"column": self.expression.column(node)},
            code=ErrorCode.NUMBER_OUT_OF_RANGE,
        )

    def _subscript(self, node: ast.Subscript) -> Value:
        value = self.evaluate(node.value)
        if not isinstance(value, torch.Tensor):
            raise InvalidInput(
                f"{self.where(node)}: only tensors can be indexed, not a plain number",
                details={"column": self.expression.column(node)},
                code=ErrorCode.INVALID_INDEX,
            )
        index = static_index(node.slice, self._index_error)
        try:
            # Resolved as NumPy resolves it: steps and bounds near 2**63 would overflow
            # torch's int64 slice arithmetic.
            index = check_index(index, tuple(value.shape))
        except IndexError as exc:
            raise InvalidInput(
                f"{self.where(node)}: the index does not fit shape {list(value.shape)}: {exc}",
                details={"column": self.expression.column(node), "shape": list(value.shape)},
                code=ErrorCode.INVALID_INDEX,
            ) from None
        return self.apply(node, operator.getitem, [value, index], passes=0.0)  # a view

    def _call(self, node: ast.Call) -> Value:
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        spec = FUNCTIONS[name]
        args: dict[str, Value] = dict(spec.defaults)
        for param, arg in zip(spec.params, node.args, strict=False):
            args[param] = self.evaluate(arg)
        for kw in node.keywords:
            assert kw.arg is not None
            args[kw.arg] = self.evaluate(kw.value)
        if name == "pow" and _is_number(args["input"]) and _is_number(args["exponent"]):
            return self._numbers(node, ast.Pow, args["input"], args["exponent"])
        for param in spec.tensors:
            value = args[param]
            if isinstance(value, (int, float)):
                args[param] = torch.as_tensor(value, device=self.evaluation.device)
            elif not isinstance(value, torch.Tensor):
                raise InvalidInput(
                    f"{self.where(node)}: {name}'s {param} must be a tensor or a number",
                    details={"column": self.expression.column(node), "function": name},
                    code=ErrorCode.INVALID_ARGUMENT,
                )
        if name in _CHEAP_CALLS:
            passes = 1.0
        elif name == "pow":
            passes = _POW_PASSES
        else:
            passes = _SCAN_PASSES if name in _SCAN_CALLS else _CALL_PASSES
        out = self.apply(
            node,
            spec.fn,
            [],
            args,
            matmul=spec.matmul,
            passes=passes,
            output_passes=REDUCTION_OUTPUT_PASSES.get(name, 0.0),
            backward_copies=BACKWARD_COPIES.get(name, 0.0),
        )
        if name in QUADRATIC_BACKWARD_CALLS:
            self._note_quadratic_backward(node, args["input"], args["dim"])
        return out

    def _note_quadratic_backward(self, node: ast.AST, input: Value, dim: Value) -> None:
        """Record a scan of ``input`` along ``dim`` (already run: both are valid) whose
        backward with a graph is quadratic; torch returns the gradient as it is for a
        dimension of one element or an input of at most one."""
        if not isinstance(input, torch.Tensor) or not input.is_floating_point():
            return
        steps = input.shape[int(cast(int, dim)) % input.dim()] if input.dim() else 1
        if steps <= 1 or input.numel() <= 1:
            return
        self.evaluation.quadratic_backwards.append(
            QuadraticBackward(
                self.where(node),
                self.expression.column(node),
                steps,
                input.numel() * steps,
                _HALF_FACTOR if input.dtype in HALF_FLOATS else 1.0,
            )
        )

    def apply(
        self,
        node: ast.AST,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None = None,
        *,
        matmul: bool = False,
        passes: float = 1.0,
        output_passes: float = 0.0,
        backward_copies: float = 0.0,
    ) -> Value:
        """Call a torch function for a node, then charge its output (a shape), its FLOPs
        at their dtype's rate, its ``passes`` over the elements and ``output_passes`` over
        its output's (a reduction's cost per output), and check the time."""
        kwargs = kwargs or {}
        try:
            out = fn(*args, **kwargs)
        except ServiceError as exc:
            exc.message = f"{self.where(node)}: {exc.message}"
            exc.details.setdefault("column", self.expression.column(node))
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
            # ArithmeticError: torch's OverflowError for a number beyond the tensor's range.
            if allocation_failed(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OpError(
                f"{self.where(node)}: {first}",
                details={"column": self.expression.column(node)},
            ) from exc
        if isinstance(out, torch.Tensor):
            operands = [v for v in [*args, *kwargs.values()] if isinstance(v, torch.Tensor)]
            self._charge(
                node,
                out,
                operands,
                matmul=matmul,
                passes=passes,
                output_passes=output_passes,
                backward_copies=backward_copies,
            )
        if self.evaluation.deadline is not None:
            self.evaluation.deadline.check()
        return out  # type: ignore[no-any-return]

    def _charge(
        self,
        node: ast.AST,
        out: torch.Tensor,
        operands: Sequence[torch.Tensor],
        *,
        matmul: bool,
        passes: float,
        output_passes: float = 0.0,
        backward_copies: float = 0.0,
    ) -> None:
        read = sum(t.numel() for t in operands)
        copies: list[int] = []
        shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        if matmul and len(operands) == 2 and min(t.dim() for t in operands) >= 1:
            shapes = tuple(operands[0].shape), tuple(operands[1].shape)
            flops = float(estimate_matmul_flops(*shapes))
            # Batch dimensions broadcast against each other: torch copies the smaller
            # operand(s) out to the whole batch first, and the backward pass computes each
            # one's gradient over the whole batch before it sums it to the operand's shape.
            copies = matmul_copies(*shapes)
        else:
            flops = float(max(read, out.numel()))
        # The dtype the work runs in: a comparison's output is bool, its operands are not.
        dtype = next((t.dtype for t in operands if t.is_floating_point()), out.dtype)
        budget = self.evaluation.budget
        widened = 0  # a half product run in float32 (service.ops.products): its copies there
        device_type = budget.device_type if budget is not None else "cpu"
        if shapes is not None and widened_product(*shapes, dtype, device_type):
            dtype, widened = torch.float32, read + out.numel()
        factor = _HALF_FACTOR if dtype in HALF_FLOATS else 1.0
        elements = (passes * max(read, out.numel()) + sum(copies)) * factor
        elements += output_passes * out.numel() + 2 * widened
        evaluation = self.evaluation
        evaluation.flops += flops
        evaluation.flops_by_dtype[dtype] = evaluation.flops_by_dtype.get(dtype, 0.0) + flops
        evaluation.passes += elements
        if copies:
            gradient = f"the backward pass of {self.where(node)}: a gradient over the batch"
            column = self.expression.column(node)
            evaluation.backward_tensors.extend((numel, gradient, column, True) for numel in copies)
        if backward_copies:
            evaluation.backward_tensors.append(
                (
                    int(backward_copies * max(read, out.numel())),
                    f"the backward pass of {self.where(node)}: its temporaries",
                    self.expression.column(node),
                    False,
                )
            )
        if budget is None:
            return
        what = self.where(node)
        try:
            for numel in copies:
                budget.charge_tensor(numel, f"{what}: a copy of an operand over the batch")
            if widened:
                budget.charge_tensor(widened, f"{what}: its operands and product in float32")
            budget.charge_shape(out.shape, what)
            budget.charge_flops(flops, what, dtype=dtype)
            budget.charge_elementwise(elements, what)
        except ServiceError as exc:
            exc.details.setdefault("column", self.expression.column(node))
            raise
