"""Value, gradients and (optionally) hessians of an expression: ``POST /grad`` in pure torch.

:func:`plan_gradient` parses the expression, evaluates it on the ``meta`` device and charges
every intermediate, the backward pass and the hessian to a :class:`Budget` (the hessian also
to ``max_hessian_elements``), so nothing is allocated for a request over a limit.
:func:`compute_gradient` then evaluates it for real with ``requires_grad`` leaves and
``torch.autograd.grad``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from service.codec import DTYPE_NAMES
from service.config import Limits
from service.errors import ErrorCode, InvalidInput, LimitExceeded, OpError, ServiceError
from service.limits import Budget, Deadline
from service.memory import allocation_failed
from service.ops.autograd.check import check_input_names
from service.ops.autograd.evaluate import META, Evaluation, QuadraticBackward, evaluate
from service.ops.autograd.functions import Value
from service.ops.autograd.parse import Expression, parse_expression

# Backward costs about twice the forward; each hessian row is a backward pass through the
# graph of the gradient, about twice that again.
_BACKWARD_FACTOR = 2
_HESSIAN_ROW_FACTOR = 4
# Each hessian row is one ``torch.autograd.grad`` call from Python through the whole double
# graph: a fixed cost per row and one per syntax node of the expression (measured on a CPU:
# 0.45 ms a row for 16 nodes, 4.5 ms for 320), known before anything is evaluated.
HESSIAN_ROW_SECONDS = 2e-4
HESSIAN_NODE_SECONDS = 2e-5
# torch's cumprod backward with a graph (see QUADRATIC_BACKWARD_CALLS), measured on a CPU of
# 2 busy cores, float32, n elements scanned (one of them 0) by m along the other dimensions:
# it keeps 0.55 to 0.7·m·n² elements and 13 KB a step (n = 2000: 37 MB; 16000: 0.77 GB) and
# takes 4 ns·m·n² and 30 µs a step; each hessian row back through that graph takes 18 ns·m·n²
# and 85 to 160 µs a step (n = 16000: 0.9 s, then 4.6 s a row; 256 rows of n = 256: 10.5 s).
# Charged with a margin: m·n² elements and QUADRATIC_STEP_ELEMENTS a step, QUADRATIC_PASSES
# over the m·n² elements and QUADRATIC_STEP_SECONDS a step; each row _HESSIAN_ROW_FACTOR
# times that time.
QUADRATIC_STEP_ELEMENTS = 4096
QUADRATIC_PASSES = 8.0
QUADRATIC_STEP_SECONDS = 1e-4


@dataclass
class GradientPlan:
    """A checked request: the parsed expression, its inputs and what to differentiate."""

    expression: Expression
    inputs: dict[str, torch.Tensor]
    wrt: list[str]
    hessian: bool


@dataclass
class Gradient:
    """The value of an expression and its derivatives with respect to the ``wrt`` inputs."""

    value: torch.Tensor
    grads: dict[str, torch.Tensor]
    hessians: dict[str, dict[str, torch.Tensor]] | None


def _is_float(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point()


def _float_hint(name: str, tensor: torch.Tensor) -> str:
    return (
        f"{name!r} is {DTYPE_NAMES[tensor.dtype]}: gradients exist only for floating-point "
        f'tensors; write its numbers with a decimal point (1.0) or give "dtype": "float32"'
    )


def resolve_wrt(inputs: Mapping[str, torch.Tensor], wrt: Sequence[str] | None) -> list[str]:
    """The inputs to differentiate with respect to: ``wrt``, or every floating input.

    Raises :class:`InvalidInput` (422) for a name that is not an input, for an integer or
    bool input asked for, and when ``wrt`` is left out and the only inputs are integers.
    """
    if wrt is None:
        names = [name for name, tensor in inputs.items() if _is_float(tensor)]
        if not names and inputs:
            name, tensor = next(iter(inputs.items()))
            raise InvalidInput(
                "no floating-point input to differentiate with respect to; "
                + _float_hint(name, tensor),
                details={"name": name, "dtype": DTYPE_NAMES[tensor.dtype]},
                code=ErrorCode.INTEGER_GRADIENT,
            )
        return names
    names = list(dict.fromkeys(wrt))
    for name in names:
        if name not in inputs:
            raise InvalidInput(
                f"wrt: {name!r} is not an input; the inputs are: {', '.join(inputs) or 'none'}",
                details={"name": name, "known": list(inputs)},
                code=ErrorCode.UNKNOWN_NAME,
            )
        if not _is_float(inputs[name]):
            raise InvalidInput(
                f"wrt: {_float_hint(name, inputs[name])}",
                details={"name": name, "dtype": DTYPE_NAMES[inputs[name].dtype]},
                code=ErrorCode.INTEGER_GRADIENT,
            )
    return names


def _as_tensor(value: Value, expression: Expression, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (int, float)):  # bool too: "2 + 3" has a value and zero gradients
        return torch.as_tensor(value, device=device)
    kind = "None" if value is None else "a tuple"
    raise InvalidInput(
        f"the expression's value is {kind}, not a number or a tensor",
        details={"column": 0},
        code=ErrorCode.NOT_SCALAR,
    )


def _check_scalar(value: torch.Tensor, expression: Expression) -> None:
    if value.numel() == 1:
        return
    text = expression.text.strip()
    example = f"sum({text})" if len(text) <= 80 else "sum(...)"
    raise InvalidInput(
        f"the expression's value has shape {list(value.shape)} ({value.numel()} elements) but "
        f"a gradient needs a single number: reduce it, e.g. {example} (or mean, norm, a "
        "subscript)",
        details={"shape": list(value.shape), "suggestion": example},
        code=ErrorCode.NOT_SCALAR,
    )


def plan_gradient(
    text: str,
    inputs: Mapping[str, torch.Tensor],
    wrt: Sequence[str] | None,
    *,
    hessian: bool,
    budget: Budget,
    limits: Limits,
) -> GradientPlan:
    """Parse, check and charge a gradient request before anything real is computed.

    The expression is evaluated on the ``meta`` device: each intermediate's elements and
    FLOPs, the gradients, the backward pass and (with ``hessian``) the hessian are charged
    to ``budget``. The expression's size and the hessian's are bounded by ``limits``.
    Raises :class:`InvalidInput` / :class:`OpError` (422) or :class:`LimitExceeded` (413).
    """
    budget.charge_objects(len(inputs), f"{len(inputs):,} inputs")
    check_input_names(inputs)
    expression = parse_expression(text, inputs, limits=limits)
    names = resolve_wrt(inputs, wrt)
    for name, tensor in inputs.items():
        budget.charge_shape(tensor.shape, f"input {name!r}")
    rows = _charge_hessian_rows(expression, inputs, names, budget, limits) if hessian else 0
    evaluation = Evaluation(META, budget=budget)
    with torch.no_grad():
        meta = {name: inputs[name].to(META) for name in expression.names}
        value = _as_tensor(evaluate(expression, meta, evaluation), expression, META)
    _check_scalar(value, expression)
    budget.charge_objects(len(names), f"{len(names)} gradients")
    for name in names:
        budget.charge_shape(inputs[name].shape, f"the gradient of {name!r}")
    for numel, what, column, one_tensor in evaluation.backward_tensors:
        try:
            if one_tensor:
                budget.charge_tensor(numel, what)
            else:
                budget.charge_tensors(numel, what)
        except ServiceError as exc:
            exc.details.setdefault("column", column)
            raise
    _charge_passes(budget, evaluation, _BACKWARD_FACTOR, "the backward pass")
    if hessian:
        for scan in evaluation.quadratic_backwards:
            try:
                _charge_quadratic_backward(budget, scan, rows)
            except ServiceError as exc:
                exc.details.setdefault("column", scan.column)
                raise
        what = f"the hessian's {rows:,} rows"
        if not evaluation.flops_by_dtype:
            budget.charge_flops(_HESSIAN_ROW_FACTOR * rows, what)
        _charge_passes(budget, evaluation, _HESSIAN_ROW_FACTOR * rows, what)
    return GradientPlan(expression, dict(inputs), names, hessian)


def _charge_hessian_rows(
    expression: Expression,
    inputs: Mapping[str, torch.Tensor],
    names: Sequence[str],
    budget: Budget,
    limits: Limits,
) -> int:
    """Check the hessian's size and charge what its rows cost whatever the expression
    computes (blocks, rows, a pass from Python through the graph per row), before the
    expression is evaluated even on ``meta``; return the number of rows."""
    count = sum(inputs[name].numel() for name in names)
    allowed = limits.max_hessian_elements
    if count > allowed:
        raise LimitExceeded(
            "max_hessian_elements",
            allowed,
            count,
            "the hessian",
            message=f"the hessian is asked for {count:,} input elements "
            f"({', '.join(names)}) but the limit max_hessian_elements is {allowed:,}",
        )
    budget.charge_objects(len(names) ** 2, f"the hessian's {len(names) ** 2} blocks")
    budget.charge_tensor(count * count, "the hessian")
    what = f"the hessian's {count:,} rows"
    budget.charge_objects(count, what)
    row = HESSIAN_ROW_SECONDS + HESSIAN_NODE_SECONDS * expression.nodes
    budget.charge_seconds(count * row, f"{what} through {expression.nodes:,} syntax nodes")
    # Each row is a backward pass of many small kernels, after the last: a serial step.
    budget.count_serial_steps(count)
    return count


def _charge_quadratic_backward(budget: Budget, scan: QuadraticBackward, rows: int) -> None:
    """Charge the backward with a graph of a call whose backward is then quadratic (the
    graph's tensors toward ``max_total_elements``, its time) and each of the hessian's
    ``rows`` back through it: whether the input has a zero is not known before it runs."""
    what = f"the backward pass of {scan.what} for the hessian ({scan.steps:,} steps)"
    # The graph keeps many tensors, none larger than the call's input (charged already).
    budget.charge_tensors(scan.elements + QUADRATIC_STEP_ELEMENTS * scan.steps, what)
    passes = QUADRATIC_PASSES * scan.elements * scan.passes_factor
    for factor, part in ((1, what), (_HESSIAN_ROW_FACTOR * rows, f"{rows:,} rows of {what}")):
        budget.charge_elementwise(factor * passes, part)
        budget.charge_seconds(factor * QUADRATIC_STEP_SECONDS * scan.steps, part)


def _charge_passes(budget: Budget, evaluation: Evaluation, factor: float, what: str) -> None:
    """Charge ``factor`` times the forward evaluation's work: its FLOPs at each dtype's rate
    and its element passes."""
    for dtype, flops in evaluation.flops_by_dtype.items():
        budget.charge_flops(factor * flops, what, dtype=dtype)
    budget.charge_elementwise(factor * evaluation.passes, what)


def compute_gradient(
    plan: GradientPlan, *, device: torch.device, deadline: Deadline | None = None
) -> Gradient:
    """Evaluate a planned expression on ``device`` and differentiate it.

    A ``wrt`` input the value does not depend on gets zeros. Hessian blocks are
    ``hessians[a][b]`` = ∂²value/∂a∂b, of shape ``a.shape + b.shape``.
    """
    env: dict[str, torch.Tensor] = {}
    for name in plan.expression.names | set(plan.wrt):
        tensor = plan.inputs[name].to(device)
        env[name] = tensor.detach().requires_grad_(True) if name in plan.wrt else tensor
    leaves = [env[name] for name in plan.wrt]
    with torch.enable_grad():
        raw = evaluate(plan.expression, env, Evaluation(device, deadline=deadline))
        value = _as_tensor(raw, plan.expression, device)
        grads = _grads(value, leaves, create_graph=plan.hessian)
        hessians = _hessians(plan, grads, leaves, deadline) if plan.hessian else None
    return Gradient(
        value.detach(),
        {name: grad.detach() for name, grad in zip(plan.wrt, grads, strict=True)},
        hessians,
    )


def _grads(
    value: torch.Tensor, leaves: Sequence[torch.Tensor], *, create_graph: bool
) -> list[torch.Tensor]:
    if not leaves:
        return []
    if not value.requires_grad:  # the value depends on no wrt input (or is an integer)
        return [torch.zeros_like(leaf) for leaf in leaves]
    try:
        grads = torch.autograd.grad(
            value,
            leaves,
            create_graph=create_graph,
            allow_unused=True,
            materialize_grads=True,
        )
    except RuntimeError as exc:
        if allocation_failed(exc):
            raise
        raise OpError(f"the backward pass failed: {str(exc).splitlines()[0]}") from exc
    return list(grads)


def _hessians(
    plan: GradientPlan,
    grads: Sequence[torch.Tensor],
    leaves: Sequence[torch.Tensor],
    deadline: Deadline | None,
) -> dict[str, dict[str, torch.Tensor]]:
    sizes = [leaf.numel() for leaf in leaves]
    # blocks[i][j][r] is row r of ∂(grad i)/∂(leaf j), flattened.
    blocks = [
        [
            torch.zeros(size_i, size_j, dtype=leaf_j.dtype, device=leaf_j.device)
            for size_j, leaf_j in zip(sizes, leaves, strict=True)
        ]
        for size_i in sizes
    ]
    for i, grad in enumerate(grads):
        if not grad.requires_grad:  # linear in every leaf: the second derivatives are zero
            continue
        flat = grad.reshape(-1)
        for row in range(sizes[i]):
            try:
                second = torch.autograd.grad(
                    flat[row],
                    leaves,
                    retain_graph=True,
                    allow_unused=True,
                    materialize_grads=True,
                )
            except RuntimeError as exc:
                if allocation_failed(exc):
                    raise
                raise OpError(f"the hessian failed: {str(exc).splitlines()[0]}") from exc
            for j, piece in enumerate(second):
                blocks[i][j][row] = piece.reshape(-1)
            if deadline is not None:
                deadline.check()
    return {
        a: {
            b: blocks[i][j].reshape((*leaves[i].shape, *leaves[j].shape))
            for j, b in enumerate(plan.wrt)
        }
        for i, a in enumerate(plan.wrt)
    }
