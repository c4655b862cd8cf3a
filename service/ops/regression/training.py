"""What the linear and the logistic fit share in training: the data's charge to the budget,
the standardiser, the refusal of a diverged run."""

from __future__ import annotations

import torch

from service.errors import ErrorCode, InvalidInput
from service.limits import Budget

EPOCH_OVERHEAD_FLOPS = 1e6
"""Charged per epoch on top of the arithmetic: on small data an epoch's time is Python and
kernel launches (tens of microseconds), which the FLOP count alone would not bound."""


def charge_data(n: int, d: int, k: int, budget: Budget) -> None:
    """Charge the float64 copies every fit makes of ``n`` samples × ``d`` features and their
    ``k`` outputs: x, the targets, the training copy of x, the predictions."""
    budget.charge_tensor(n * d, f"x of {n:,} samples × {d:,} features (float64)")
    budget.charge_tensor(n * k, "the targets")
    budget.charge_tensor(n * d, "the training copy of x")
    budget.charge_tensor(n * k, "the predictions")


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
    constant column (as scikit-learn's StandardScaler)."""
    mean = x.mean(0) if center else torch.zeros_like(x[0])
    scale = x.std(0, correction=0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return mean, scale
