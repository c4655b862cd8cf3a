"""Activation functions run: their values and derivatives by autograd, and their cost
charged to the budget before they run.

Derivatives: an element-wise function's Jacobian is diagonal, so one backward pass with a
vector of ones gives every ``dy_i/dx_i``. The softmax family mixes the elements along
``dim``; for it ``dydx`` is the Jacobian's diagonal as well, ``∂y_i/∂x_i`` (e.g.
``s_i·(1 − s_i)`` for softmax), computed by batched backward passes, one per position
along ``dim``. (The vector-Jacobian product with ones would be 0 for softmax everywhere.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from service.errors import OpError
from service.limits import HALF_FLOATS, Budget, Deadline
from service.memory import allocation_failed
from service.ops.nn.binding import BoundActivation

ELEMENTWISE_FLOPS = 20
"""Rough FLOPs per element of one forward pass (exp, log, a division or two)."""
ELEMENT_PASSES = 4
"""Passes over the elements of one forward pass, relative to the device's measured
elementwise pass (x * 2): an exp or a log and a few operations around it."""
HALF_FACTOR = 4
"""How much slower a 16-bit float pass is (its kernels convert every element; on a CPU 2 to
10 times slower)."""
BACKWARD_FACTOR = 2
"""A backward pass costs about twice its forward pass."""
JACOBIAN_CHUNK_ELEMENTS = 1 << 22
"""Elements of one batched backward pass of the softmax family's Jacobian diagonal."""


def as_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` as the functions take it: integer and boolean tensors become float32 (activations
    are defined on the reals, and autograd needs floats); float dtypes are kept."""
    return x if x.is_floating_point() else x.to(torch.float32)


def charge(
    functions: Sequence[BoundActivation], x: torch.Tensor, budget: Budget, *, derivative: bool
) -> None:
    """Charge every output (``y``, and ``dydx`` when asked) as a shape, and the work: the
    estimated FLOPs at x's dtype and the passes over the elements, for the softmax family's
    derivative one batched backward pass per position along ``dim`` (in chunks of
    :data:`JACOBIAN_CHUNK_ELEMENTS`, each a step of its own)."""
    numel = x.numel()
    budget.charge_objects(len(functions), f"{len(functions)} functions")
    half = x.dtype in HALF_FLOATS
    for bound in functions:
        what = f"{bound.name} over {numel:,} elements"
        budget.charge_shape(x.shape, f"{bound.name}(x)")
        flops = float(numel * ELEMENTWISE_FLOPS)
        passes = float(numel * ELEMENT_PASSES * (HALF_FACTOR if half else 1))
        if derivative:
            budget.charge_shape(x.shape, f"the derivative of {bound.name}")
            dim = bound.params.get("dim")
            length = _length_along(x, dim) if isinstance(dim, int) else 1
            flops *= 1 + BACKWARD_FACTOR * length
            # Each position along dim also builds its one-hot rows and reads the diagonal.
            passes *= 1 + (BACKWARD_FACTOR + 1) * length
            if bound.activation.along_dim:
                per_batch = max(1, JACOBIAN_CHUNK_ELEMENTS // max(numel, 1))
                chunks = -(-length // per_batch)
                budget.charge_objects(chunks, f"the derivative of {bound.name}: {chunks} batches")
        budget.charge_flops(flops, what, dtype=x.dtype)
        budget.charge_elementwise(passes, what)


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
    except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
        if allocation_failed(exc):
            raise
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
