"""What the linear and the logistic fit share in training: the data's charge to the budget,
the standardiser, the refusal of a diverged run."""

from __future__ import annotations

import math

import torch

from service.errors import ErrorCode, InvalidInput
from service.limits import Budget

EPOCH_OVERHEAD_FLOPS = 1e6
"""Charged per epoch on top of the arithmetic: on small data an epoch's time is Python and
kernel launches (tens of microseconds), which the FLOP count alone would not bound."""
STEP_SECONDS = 5e-4
"""Predicted time of one optimizer step beyond its arithmetic: ``zero_grad``, the forward
pass, the loss, ``backward``, the update and the batch's gather are a score of small
kernels launched from Python (hundreds of microseconds on a busy CPU)."""
EVALUATION_SECONDS = 5e-4
"""Predicted time of one L-BFGS loss-and-gradient evaluation beyond its arithmetic (its
closure also copies the parameters and gradients, and the step does the two-loop
recursion over its history)."""
X_PASSES = 3
"""Passes over x per loss-and-gradient evaluation: the forward product reads it, the
backward product reads it again, a mini-batch gathers its rows. A product with one or a
few outputs is bound by reading x, not by its FLOPs."""
RANDPERM_UNITS = 4
"""Element passes of shuffling one sample index (``torch.randperm``), per epoch."""
F64 = torch.float64
"""Every fit computes in float64."""


def charge_data(n: int, d: int, k: int, budget: Budget) -> None:
    """Charge the float64 copies every fit makes of ``n`` samples × ``d`` features and their
    ``k`` outputs: x, the targets, the training copy of x, the predictions."""
    budget.charge_tensor(n * d, f"x of {n:,} samples × {d:,} features (float64)")
    budget.charge_tensor(n * k, "the targets")
    budget.charge_tensor(n * d, "the training copy of x")
    budget.charge_tensor(n * k, "the predictions")


def batches_per_epoch(n: int, batch_size: int | None) -> int:
    """Mini-batches of one epoch of ``n`` samples (one when ``batch_size`` covers them)."""
    if batch_size is None or batch_size >= n:
        return 1
    return math.ceil(n / batch_size)


def charge_evaluations(
    budget: Budget,
    count: int,
    *,
    samples: int,
    d: int,
    outputs: int,
    seconds: float,
    what: str,
) -> None:
    """Charge ``count`` loss-and-gradient evaluations (optimizer steps), each over
    ``samples`` samples of ``d`` features and a Python-level unit of ``seconds`` beyond its
    arithmetic: their number is bounded as things made one by one, their passes over x and
    over the outputs are memory-bound work."""
    budget.charge_objects(count, what)
    budget.charge_seconds(count * seconds, what)
    budget.count_serial_steps(count)
    budget.charge_elementwise(float(count) * samples * (X_PASSES * d + 8 * outputs), what)


def charge_minibatch_steps(
    budget: Budget,
    *,
    epochs: int,
    n: int,
    batch_size: int | None,
    d: int,
    outputs: int,
    what: str,
) -> None:
    """Charge ``epochs`` of SGD or Adam over ``n`` samples in mini-batches of
    ``batch_size``: every optimizer step (see :func:`charge_evaluations`) and, with more
    than one batch, each epoch's shuffle of the samples."""
    batches = batches_per_epoch(n, batch_size)
    samples = n if batch_size is None else min(n, batch_size)
    steps = epochs * batches
    charge_evaluations(
        budget,
        steps,
        samples=samples,
        d=d,
        outputs=outputs,
        seconds=STEP_SECONDS,
        what=f"{steps:,} optimizer steps",
    )
    if batches > 1:
        budget.charge_elementwise(float(epochs) * n * RANDPERM_UNITS, what)


def charge_answer(budget: Budget, *, numbers: int, names: int) -> None:
    """Charge what the answer lists one by one: ``numbers`` (coefficients, metrics, the loss
    history, the confusion matrices) and ``names`` (features, targets, classes)."""
    count = numbers + names
    budget.charge_objects(count, f"the answer's {count:,} numbers and names")


def diverged(epoch: int, lr: float) -> InvalidInput:
    """The 422 ``diverged`` for a loss that stopped being finite after ``epoch``."""
    return InvalidInput(
        f"training diverged: the loss is not finite after epoch {epoch} (lr {lr:g}); lower "
        "lr, or standardise the data",
        details={"epoch": epoch, "lr": lr},
        code=ErrorCode.DIVERGED,
    )


def standardizer(x: torch.Tensor, center: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (zeros without ``center``) and standard deviation of each column, with 1 for a
    constant column, as scikit-learn's StandardScaler: two passes (the mean, then the mean
    square about it), and a column is constant when its variance is within the rounding
    error of that algorithm (scikit-learn's ``_is_constant_feature``). Such a column's mean
    is its first value, so that it centres to exact zeros.

    (torch's ``std(0)`` updates a running mean element by element: 0.9 ms for a
    16000 × 20 float64 table, against 0.3 ms for these passes.)"""
    n = x.shape[0]
    mean = x.mean(0)
    var = (x - mean).square_().mean(0)
    eps = torch.finfo(x.dtype).eps
    constant = var <= n * eps * var + (n * eps * mean).square()
    scale = torch.where(constant | ~(var > 0), 1.0, var.sqrt())
    if not center:
        mean = torch.zeros_like(mean)
    elif n:
        mean = torch.where(constant, x[0], mean)
    return mean, scale
