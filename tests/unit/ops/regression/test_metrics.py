"""The fits' metrics against scikit-learn and numpy, computed here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix
from sklearn.metrics import log_loss as sklearn_log_loss
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from service.ops.regression.metrics import (
    confusion_matrix,
    finite_or_none,
    linear_metrics,
    log_loss,
    logistic_metrics,
    pearson,
    strength,
)
from service.ops.regression.metrics import r2_score as service_r2
from service.ops.regression.params import LogisticParams
from service.ops.regression.split import Split


@pytest.mark.parametrize(
    ("r", "expected"),
    [(0.0, "weak"), (0.299, "weak"), (0.3, "moderate"), (-0.59, "moderate"), (0.6, "strong"),
     (-0.95, "strong")],
)  # fmt: skip
def test_strength_scale(r: float, expected: str) -> None:
    assert strength(r) == expected


def test_r2_matches_sklearn_including_constant_targets() -> None:
    rng = np.random.default_rng(0)
    y, guess = rng.standard_normal((30, 2)), rng.standard_normal((30, 2))
    assert service_r2(torch.from_numpy(y), torch.from_numpy(guess)) == pytest.approx(
        r2_score(y, guess)
    )
    constant = np.ones((4, 1))
    for prediction in (constant, constant + 1):
        assert service_r2(torch.from_numpy(constant), torch.from_numpy(prediction)) == (
            r2_score(constant, prediction)
        )
    assert service_r2(torch.ones(1, 1), torch.ones(1, 1)) is None


@pytest.mark.parametrize(
    ("value", "expected"), [(1.5, 1.5), (0.0, 0.0), (math.nan, None), (-math.inf, None)]
)
def test_finite_or_none(value: float, expected: float | None) -> None:
    assert finite_or_none(value) == expected


def test_linear_metrics_on_each_side_of_the_split() -> None:
    rng = np.random.default_rng(2)
    y, guess = rng.standard_normal((12, 2)), rng.standard_normal((12, 2))
    split = Split(torch.arange(8), torch.arange(8, 12))
    metrics = linear_metrics(torch.from_numpy(y), torch.from_numpy(guess), split)
    for suffix, rows in (("", slice(0, 8)), ("_test", slice(8, 12))):
        assert metrics["r2" + suffix] == pytest.approx(r2_score(y[rows], guess[rows]))
        assert metrics["mse" + suffix] == pytest.approx(mean_squared_error(y[rows], guess[rows]))
        assert metrics["mae" + suffix] == pytest.approx(mean_absolute_error(y[rows], guess[rows]))
    unsplit = linear_metrics(
        torch.from_numpy(y), torch.from_numpy(guess), Split(torch.arange(12), torch.arange(0))
    )
    assert (
        unsplit["r2_test"] is None and unsplit["mse_test"] is None and unsplit["mae_test"] is None
    )


def test_pearson_equals_numpys_and_is_nan_for_a_constant_column() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((20, 3)), rng.standard_normal((20, 2))
    x[:, 2] = 4.0
    r = pearson(torch.from_numpy(x - x.mean(0)), torch.from_numpy(y - y.mean(0)))
    assert r.shape == (3, 2)
    for i in range(2):
        for j in range(2):
            assert float(r[i, j]) == pytest.approx(np.corrcoef(x[:, i], y[:, j])[0, 1])
    assert bool(torch.isnan(r[2]).all())


def test_log_loss_equals_sklearns() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 30)
    logits = rng.standard_normal((30, 3))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    multinomial = log_loss(torch.from_numpy(logits), torch.from_numpy(labels), binary=False)
    assert float(multinomial) == pytest.approx(sklearn_log_loss(labels, proba, labels=[0, 1, 2]))
    binary_labels = labels % 2
    logit = logits[:, :1]
    positive = 1 / (1 + np.exp(-logit[:, 0]))
    binary = log_loss(torch.from_numpy(logit), torch.from_numpy(binary_labels), binary=True)
    expected = sklearn_log_loss(binary_labels, np.c_[1 - positive, positive])
    assert float(binary) == pytest.approx(expected)


def test_confusion_matrix_equals_sklearns() -> None:
    rng = np.random.default_rng(5)
    truth, guess = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    matrix = confusion_matrix(torch.from_numpy(truth), torch.from_numpy(guess), 4)
    np.testing.assert_array_equal(
        matrix.numpy(), sklearn_confusion_matrix(truth, guess, labels=[0, 1, 2, 3])
    )


def test_logistic_metrics_leave_the_test_side_empty_without_a_split() -> None:
    params = LogisticParams(
        torch.tensor([[1.0]], dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
        [0, 1],
        0.5,
        None,
        None,
    )
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1])
    metrics = logistic_metrics(params, x, labels, Split(torch.arange(4), torch.arange(0)))
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["confusion_matrix"] == [[1, 0], [1, 2]]
    # Class 0 is predicted once, rightly; class 1 three times, missed once.
    assert metrics["precision"] == pytest.approx([0.5, 1.0])
    assert metrics["recall"] == pytest.approx([1.0, 2 / 3])
    names = ("accuracy", "log_loss", "confusion_matrix", "precision", "recall")
    assert all(metrics[name + "_test"] is None for name in names)
