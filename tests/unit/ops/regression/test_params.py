"""Models in their JSON form, checked and ready to predict; the input and the plan of a
prediction."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy.special import expit, softmax

from service.errors import InvalidInput, LimitExceeded
from service.limits import Budget
from service.ops.data.datasets import encode_labels, load_dataset
from service.ops.regression.params import (
    linear_params,
    logistic_params,
    plan_predict,
    prediction_input,
)
from tests.unit.ops.regression.helpers import linear_fit, logistic_fit


def test_a_fitted_linear_model_round_trips() -> None:
    table = load_dataset("linnerud")
    fit = linear_fit(table)
    model = fit.model()
    params = linear_params(model["coef"], model["intercept"], model["features"], model["targets"])
    torch.testing.assert_close(params.predict(table.x), fit.predictions)


def test_a_fitted_logistic_model_round_trips() -> None:
    table = load_dataset("iris")
    fit = logistic_fit(table)
    model = fit.model()
    params = logistic_params(
        classes=model["classes"],
        coef=model["coef"],
        intercept=model["intercept"],
        threshold=model["threshold"],
        scaler_mean=model["scaler"]["mean"],
        scaler_scale=model["scaler"]["scale"],
        features=model["features"],
    )
    accuracy = (params.decide(params.logits(table.x)) == encode_labels(table).indices).double()
    assert float(accuracy.mean()) == pytest.approx(fit.metrics["accuracy"])


@pytest.mark.parametrize(
    ("coef", "intercept", "features", "targets"),
    [
        ([1.0, 2.0], 0.0, ["a"], None),
        ([1.0], [0.0], ["a"], None),
        ([[1.0], [2.0]], 0.0, ["a"], None),
        ([[1.0], [2.0]], [0.0], ["a"], None),
        ([[1.0], [2.0, 3.0]], [0.0, 0.0], ["a"], None),
        ([1.0], 0.0, ["a"], ["y", "z"]),
        ([math.inf], 0.0, ["a"], None),
    ],
)
def test_linear_model_refusals(
    coef: list[Any], intercept: Any, features: list[str], targets: list[str] | None
) -> None:
    with pytest.raises(InvalidInput) as info:
        linear_params(coef, intercept, features, targets)
    assert info.value.code == "invalid_model"


GOOD_LOGISTIC: dict[str, Any] = {
    "classes": [0, 1],
    "coef": [1.0, 2.0],
    "intercept": 0.0,
    "threshold": 0.5,
    "scaler_mean": None,
    "scaler_scale": None,
    "features": ["a", "b"],
}


@pytest.mark.parametrize(
    "change",
    [
        {"coef": [[1.0, 2.0]]},
        {"coef": [1.0]},
        {"intercept": [0.0, 0.0]},
        {"classes": [0, 1, 2]},
        {"classes": [0, 1, 2], "coef": [[1.0, 2.0]] * 3, "intercept": [0.0] * 3},
        {"classes": [0, 1, 2], "coef": [[1.0, 2.0]] * 2, "intercept": [0.0] * 3, "threshold": None},
        {"classes": ["a", "a"]},
        {"scaler_mean": [0.0, 0.0]},
        {"scaler_mean": [0.0], "scaler_scale": [1.0]},
        {"scaler_mean": [0.0, 0.0], "scaler_scale": [1.0, 0.0]},
    ],
)
def test_logistic_model_refusals(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        logistic_params(**{**GOOD_LOGISTIC, **change})
    assert info.value.code == "invalid_model"


def test_prediction_input_shapes() -> None:
    assert prediction_input(torch.tensor([1.0, 2.0]), 1).shape == (2, 1)
    assert prediction_input(torch.ones(3, 2), 2).dtype == torch.float64
    for x, features in ((torch.ones(3), 2), (torch.ones(3, 3), 2), (torch.ones(1, 1, 1), 1)):
        with pytest.raises(InvalidInput) as info:
            prediction_input(x, features)
        assert info.value.code == "shape_mismatch"


def test_prediction_input_refuses_non_finite_values() -> None:
    with pytest.raises(InvalidInput) as info:
        prediction_input(torch.tensor([[1.0], [math.nan]]), 1)
    assert info.value.code == "non_finite"


def test_linear_predictions_are_x_coef_plus_intercept() -> None:
    rng = np.random.default_rng(0)
    x, coef, intercept = rng.standard_normal((6, 3)), rng.standard_normal((2, 3)), [0.5, -1.0]
    several = linear_params(coef.tolist(), intercept, ["a", "b", "c"], ["y", "z"])
    prediction = several.predict(torch.from_numpy(x))
    np.testing.assert_allclose(prediction.numpy(), x @ coef.T + intercept)
    one = linear_params(coef[0].tolist(), 0.5, ["a", "b", "c"], None)
    assert one.single_target and one.n_features == 3
    np.testing.assert_allclose(one.predict(torch.from_numpy(x)).numpy(), x @ coef[0] + 0.5)


def test_logistic_probabilities_and_decisions_equal_scipys() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 2))
    mean, scale = [0.1, -0.2], [2.0, 0.5]
    standard = (x - mean) / scale
    binary = logistic_params(
        **{**GOOD_LOGISTIC, "threshold": 0.3, "scaler_mean": mean, "scaler_scale": scale}
    )
    logits = binary.logits(torch.from_numpy(x))
    positive = expit(standard @ [1.0, 2.0])
    np.testing.assert_allclose(binary.proba(logits).numpy(), np.c_[1 - positive, positive])
    np.testing.assert_array_equal(binary.decide(logits).numpy(), positive > 0.3)

    coef, intercept = rng.standard_normal((3, 2)), rng.standard_normal(3)
    three = logistic_params(
        **{
            **GOOD_LOGISTIC,
            "classes": ["a", "b", "c"],
            "coef": coef.tolist(),
            "intercept": intercept.tolist(),
            "threshold": None,
        }
    )
    logits = three.logits(torch.from_numpy(x))
    expected = softmax(x @ coef.T + intercept, axis=1)
    np.testing.assert_allclose(three.proba(logits).numpy(), expected)
    np.testing.assert_array_equal(three.decide(logits).numpy(), expected.argmax(1))


def test_plan_predict_charges_the_input_and_the_outputs() -> None:
    budget = Budget(max_elements=100, max_total_elements=1000, max_flops=1e9)
    plan_predict(10, 5, 2, budget)
    assert budget.elements == 10 * 5 + 10 * 2
    assert budget.flops == 2.0 * 10 * 5 * 2 + 8.0 * 10 * 2
    with pytest.raises(LimitExceeded) as info:
        plan_predict(101, 1, 1, Budget(max_elements=100, max_total_elements=1000, max_flops=1e9))
    assert info.value.limit == "max_elements"
