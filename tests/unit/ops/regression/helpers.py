"""What the regression tests share: tables from arrays, fits with default limits."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from service.config import Limits
from service.limits import Deadline
from service.ops.data.datasets import Table, encode_labels, table_from_tensors
from service.ops.regression.linear import LinearFit, LinearOptions, fit_linear
from service.ops.regression.logistic import LogisticFit, LogisticOptions, fit_logistic

CPU = torch.device("cpu")
CUDA = torch.cuda.is_available()
LIMITS = Limits()


def long_deadline() -> Deadline:
    """A minute: far more than any test fit takes."""
    return Deadline(60.0)


def table_of(x: np.ndarray, y: np.ndarray) -> Table:
    """A table of float64 features ``x`` [n, d] and targets ``y``."""
    return table_from_tensors(
        {"data": x.tolist(), "dtype": "float64"},
        {"data": y.tolist(), "dtype": "float64"},
        max_elements=1 << 30,
    )


def linear_fit(data: Table, **options: Any) -> LinearFit:
    """``data`` fitted on the CPU with :class:`LinearOptions` ``options``."""
    return fit_linear(data, LinearOptions(**options), device=CPU, deadline=long_deadline())


def logistic_fit(
    data: Table, *, max_classes: int = LIMITS.max_classes, **options: Any
) -> LogisticFit:
    """``data`` fitted on the CPU with :class:`LogisticOptions` ``options``, under the
    default class limit unless ``max_classes`` says otherwise."""
    return fit_logistic(
        data,
        encode_labels(data),
        LogisticOptions(**options),
        device=CPU,
        deadline=long_deadline(),
        max_classes=max_classes,
    )


def arrays_of(data: Table) -> tuple[np.ndarray, np.ndarray]:
    """The table's features and targets as numpy arrays (for scikit-learn)."""
    assert data.y is not None
    return data.x.numpy(), data.y.numpy()
