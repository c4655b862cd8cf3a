"""Logistic regression against scikit-learn, computed here: binary and multinomial, the
optimizers, the metrics, the threshold, the refusals and the class limit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, log_loss, precision_score, recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from schemas.regression import MAX_CLASSES as SCHEMA_MAX_CLASSES
from service.errors import InvalidInput, LimitExceeded
from service.ops.data.datasets import load_dataset, table_from_tensors
from tests.unit.ops.regression.helpers import LIMITS, arrays_of, logistic_fit

MAX_CLASSES = LIMITS.max_classes
"""The class limit a fit is given by default: the configured one."""


def _sklearn_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> Any:
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=1 / (l2 * len(y)), max_iter=1000)
    ).fit(x, y)


@pytest.mark.parametrize(("name", "l2"), [("breast_cancer", 1e-2), ("iris", 1e-3), ("wine", 1e-4)])
def test_logistic_accuracy_equals_sklearn(name: str, l2: float) -> None:
    table = load_dataset(name)
    x, y = arrays_of(table)
    reference = _sklearn_logistic(x, y, l2)
    fit = logistic_fit(table, l2=l2)
    assert fit.multinomial == (name != "breast_cancer")
    assert fit.converged is True
    assert fit.metrics["accuracy"] == pytest.approx(reference.score(x, y), abs=0.01)
    expected_loss = log_loss(y, reference.predict_proba(x))
    assert fit.metrics["log_loss"] == pytest.approx(expected_loss, rel=0.02, abs=1e-3)


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.5), ("adam", 0.05)])
def test_first_order_optimizers_come_close(optimizer: str, lr: float) -> None:
    table = load_dataset("breast_cancer")
    lbfgs = logistic_fit(table)
    fit = logistic_fit(table, optimizer=optimizer, lr=lr, epochs=100)
    assert fit.converged is None and fit.epochs == 100
    assert fit.metrics["accuracy"] == pytest.approx(lbfgs.metrics["accuracy"], abs=0.02)


def test_confusion_precision_and_recall_equal_sklearn() -> None:
    table = load_dataset("wine")
    fit = logistic_fit(table, test_size=0.3, seed=0, l2=0.05)
    _, y = arrays_of(table)
    params = fit.params()
    guess = params.decide(params.logits(table.x)).numpy()
    for suffix, index in (("", fit.split.train.numpy()), ("_test", fit.split.test.numpy())):
        truth, predicted = y[index], guess[index]
        assert (
            fit.metrics["confusion_matrix" + suffix]
            == confusion_matrix(truth, predicted, labels=[0, 1, 2]).tolist()
        )
        precision = precision_score(truth, predicted, average=None, zero_division=np.nan)
        recall = recall_score(truth, predicted, average=None, zero_division=np.nan)
        as_list = [None if math.isnan(v) else v for v in precision.tolist()]
        assert fit.metrics["precision" + suffix] == pytest.approx(as_list)
        assert fit.metrics["recall" + suffix] == pytest.approx(recall.tolist())
        assert fit.metrics["accuracy" + suffix] == pytest.approx(np.mean(truth == predicted))


def test_threshold_semantics() -> None:
    table = load_dataset("breast_cancer")
    base = logistic_fit(table)
    p = base.params().proba(base.params().logits(table.x))[:, 1]
    for threshold in (0.0, 0.3, 1.0):
        fit = logistic_fit(table, threshold=threshold)
        assert fit.model()["threshold"] == threshold
        predicted = fit.params().decide(fit.params().logits(table.x))
        # classes[1] strictly above the threshold: the tutorial's rule.
        assert torch.equal(predicted, (p > threshold).to(torch.int64))
    assert int(logistic_fit(table, threshold=1.0).metrics["confusion_matrix"][0][1]) == 0


def test_string_labels_and_the_model() -> None:
    x = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]])
    table = table_from_tensors(x.tolist(), ["no", "no", "yes", "no", "yes", "yes"], max_elements=99)
    fit = logistic_fit(table)
    model = fit.model()
    assert model["classes"] == ["no", "yes"]
    assert model["threshold"] == 0.5 and len(model["coef"]) == 1
    assert model["scaler"]["mean"] == [3.5]


@pytest.mark.parametrize(
    ("y", "options", "error", "code"),
    [
        ([1, 1, 1, 1], {}, InvalidInput, "single_class"),
        ([0, 1, 2, 2], {"threshold": 0.3}, InvalidInput, "threshold_not_binary"),
        ([0.5, 1.0, 0.0, 1.0], {}, InvalidInput, "labels_not_integers"),
        (list(range(MAX_CLASSES + 1)), {}, LimitExceeded, "classes_limit"),
    ],
)
def test_logistic_refusals(
    y: list[float], options: dict[str, Any], error: type[Exception], code: str
) -> None:
    table = table_from_tensors([[float(i)] for i in range(len(y))], y, max_elements=1 << 20)
    with pytest.raises(error) as info:
        logistic_fit(table, **options)
    assert info.value.code == code  # type: ignore[attr-defined]


def test_the_class_limit_is_the_schemas() -> None:
    assert MAX_CLASSES == SCHEMA_MAX_CLASSES


@pytest.mark.parametrize("max_classes", [2, 3])
def test_the_configured_class_limit_applies(max_classes: int) -> None:
    y = [0, 1, 2, 3, 0, 1, 2, 3]
    table = table_from_tensors([[float(i)] for i in range(len(y))], y, max_elements=99)
    with pytest.raises(LimitExceeded) as info:
        logistic_fit(table, max_classes=max_classes)
    assert info.value.code == "classes_limit"
    assert info.value.details["limit"] == "max_classes"
    assert info.value.details["allowed"] == max_classes
    assert info.value.details["requested"] == len(set(y))
    assert logistic_fit(table, max_classes=len(set(y))).multinomial


def test_a_binary_fit_without_intercept_or_scaler_equals_sklearn() -> None:
    table = load_dataset("breast_cancer")
    x, y = arrays_of(table)
    x = (x - x.mean(0)) / x.std(0)  # standardised here: the fit itself must not rescale
    standard = table_from_tensors(
        {"data": x.tolist(), "dtype": "float64"}, y.astype(int).tolist(), max_elements=1 << 20
    )
    l2 = 1e-2
    reference = LogisticRegression(
        C=1 / (l2 * len(y)), fit_intercept=False, tol=1e-10, max_iter=10_000
    ).fit(x, y)
    options = {"standardize": False, "fit_intercept": False, "tol": 1e-8, "epochs": 2000}
    fit = logistic_fit(standard, l2=l2, **options)
    model = fit.model()
    assert model["scaler"] is None and model["intercept"] == 0.0
    np.testing.assert_allclose(model["coef"], reference.coef_[0], rtol=1e-4, atol=1e-5)
