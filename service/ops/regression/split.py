"""Which samples a fit trains on, tests on, and sees together in a mini-batch.

Every draw comes from the fit's private generator (seeded by the request's ``seed``), so a
seeded fit splits and shuffles the same way on every run and on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from service.errors import ErrorCode, InvalidInput


@dataclass(frozen=True)
class Split:
    """Sample indices (sorted) of the training and test sets."""

    train: torch.Tensor
    test: torch.Tensor


def split_samples(n: int, test_size: float, generator: torch.Generator, minimum: int = 2) -> Split:
    """``ceil(test_size·n)`` samples for testing, drawn by a seeded permutation; the rest
    train. Raises :class:`InvalidInput` when fewer than ``minimum`` samples would train."""
    n_test = math.ceil(test_size * n) if test_size > 0 else 0
    if n - n_test < minimum:
        raise InvalidInput(
            f"{n} samples with test_size {test_size:g} leave {n - n_test} to train; at "
            f"least {minimum} are needed",
            details={"n_samples": n, "n_test": n_test, "min_train": minimum},
            code=ErrorCode.TOO_FEW_SAMPLES,
        )
    if n_test == 0:
        return Split(torch.arange(n), torch.arange(0))
    order = torch.randperm(n, generator=generator)
    return Split(order[n_test:].sort().values, order[:n_test].sort().values)


def minibatches(n: int, batch_size: int | None, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's mini-batches of ``n`` samples (a seeded shuffle); one batch of everything
    when ``batch_size`` is None or covers them all."""
    if batch_size is None or batch_size >= n:
        return [torch.arange(n)]
    order = torch.randperm(n, generator=generator)
    return list(torch.split(order, batch_size))
