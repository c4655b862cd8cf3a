"""The routes' prepare and compute without HTTP: plans, refusals before any work, content."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression

from schemas.regression import (
    LinearRegressionRequest,
    LogisticRegressionRequest,
    PredictRequest,
)
from service.config import Limits
from service.errors import InvalidInput, LimitExceeded
from service.ops.context import ComputeContext
from service.ops.data.datasets import EXAM_HOURS, EXAM_SCORES
from service.ops.data.tables import Upload
from service.ops.regression.handlers import (
    compute_linear_regression,
    compute_logistic_regression,
    compute_predict,
    linear_options,
    prepare_linear_regression,
    prepare_logistic_regression,
    prepare_predict,
)
from service.ops.regression.linear import LinearOptions
from service.ops.render.png import Png
from tests.unit.ops.regression.helpers import CPU, long_deadline

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _ctx(**limits: Any) -> ComputeContext:
    return ComputeContext(Limits(**limits), CPU)


def _linear(body: dict[str, Any], **limits: Any) -> Any:
    ctx = _ctx(**limits)
    plan = prepare_linear_regression(ctx, LinearRegressionRequest(**body), None)
    return compute_linear_regression(plan, long_deadline())


def test_the_exam_fit_equals_sklearn() -> None:
    hours, scores = np.array(EXAM_HOURS).reshape(-1, 1), np.array(EXAM_SCORES, dtype=float)
    reference = LinearRegression().fit(hours, scores)
    content = _linear({"dataset": "exam"})
    assert content["model"]["coef"] == pytest.approx(reference.coef_.tolist())
    assert content["model"]["intercept"] == pytest.approx(reference.intercept_)
    assert content["pearson_r"] == pytest.approx(np.corrcoef(hours[:, 0], scores)[0, 1])
    assert content["correlation"] == "strong"
    assert (content["method"], content["n_train"], content["n_test"]) == ("lstsq", 20, 0)
    assert content["epochs"] is None and content["loss_history"] is None


def test_a_csv_upload_is_the_data() -> None:
    rows = ["score,hours", *(f"{s},{h}" for h, s in zip(EXAM_HOURS, EXAM_SCORES, strict=True))]
    upload = Upload("\n".join(rows).encode(), "exam.csv")
    body = LinearRegressionRequest(target="score")
    plan = prepare_linear_regression(_ctx(), body, upload)
    assert plan.table.feature_names == ("hours",) and plan.table.target_names == ("score",)
    content = compute_linear_regression(plan, long_deadline())
    assert content["model"]["coef"] == pytest.approx(_linear({"dataset": "exam"})["model"]["coef"])


def test_the_gd_options_left_out_take_their_defaults() -> None:
    defaults = LinearOptions()
    options = linear_options(LinearRegressionRequest(dataset="exam", method="gd"))
    assert (options.optimizer, options.epochs, options.standardize) == (
        defaults.optimizer,
        defaults.epochs,
        defaults.standardize,
    )
    given = linear_options(
        LinearRegressionRequest(dataset="exam", method="gd", optimizer="adam", epochs=5)
    )
    assert (given.optimizer, given.epochs) == ("adam", 5)


def test_the_plan_is_charged_to_the_budget_and_travels_whole() -> None:
    ctx = _ctx()
    plan = prepare_linear_regression(
        ctx, LinearRegressionRequest(dataset="exam", method="gd", epochs=20, seed=0), None
    )
    assert ctx.budget.elements > 0 and ctx.budget.flops > 0
    # Everything compute needs is in the plan: a copy computes the same fit.
    copy = pickle.loads(pickle.dumps(plan))
    first = compute_linear_regression(plan, long_deadline())
    again = compute_linear_regression(copy, long_deadline())
    assert isinstance(first, dict) and isinstance(again, dict)
    assert first["loss_history"] == again["loss_history"]


def test_a_picture_is_a_png() -> None:
    content = _linear({"dataset": "exam", "format": "png"})
    assert isinstance(content, Png)
    assert content.data.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("body", "limits", "limit"),
    [
        ({"dataset": "exam", "format": "png"}, {"max_plot_points": 10}, "max_plot_points"),
        ({"dataset": "exam", "method": "gd", "epochs": 1000}, {"max_flops": 1e8}, "max_flops"),
        ({"dataset": "diabetes"}, {"max_elements": 1000}, "max_elements"),
    ],
)
def test_limits_refuse_in_prepare(body: dict[str, Any], limits: dict[str, Any], limit: str) -> None:
    with pytest.raises(LimitExceeded) as info:
        prepare_linear_regression(_ctx(**limits), LinearRegressionRequest(**body), None)
    assert info.value.limit == limit
    assert isinstance(info.value.details["requested"], int | float)


def test_json_needs_no_plot_points() -> None:
    plan = prepare_linear_regression(
        _ctx(max_plot_points=10), LinearRegressionRequest(dataset="exam"), None
    )
    assert not plan.png


def test_a_logistic_fit_answers_its_model_and_metrics() -> None:
    plan = prepare_logistic_regression(
        _ctx(), LogisticRegressionRequest(dataset="iris", test_size=0.2, seed=0), None
    )
    assert plan.labels.classes == [0, 1, 2] and plan.max_classes == Limits().max_classes
    content = compute_logistic_regression(plan, long_deadline())
    assert isinstance(content, dict)
    assert content["multinomial"] is True and content["optimizer"] == "lbfgs"
    assert (content["n_train"], content["n_test"]) == (120, 30)
    assert content["epochs"] == len(content["loss_history"])
    picture = prepare_logistic_regression(
        _ctx(),
        LogisticRegressionRequest(
            dataset="iris", features=["petal length (cm)", "petal width (cm)"], format="png"
        ),
        None,
    )
    drawn = compute_logistic_regression(picture, long_deadline())
    assert isinstance(drawn, Png) and drawn.data.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("body", "limits", "code"),
    [
        ({"dataset": "iris"}, {"max_classes": 2}, "classes_limit"),
        ({"dataset": "iris", "format": "png"}, {"max_plot_points": 100}, "plot_points_limit"),
        ({"dataset": "diabetes"}, {}, "not_classification"),
    ],
)
def test_logistic_refusals_in_prepare(
    body: dict[str, Any], limits: dict[str, Any], code: str
) -> None:
    with pytest.raises((LimitExceeded, InvalidInput)) as info:
        prepare_logistic_regression(_ctx(**limits), LogisticRegressionRequest(**body), None)
    assert info.value.code == code


LINEAR_MODEL = {"kind": "linear", "coef": [2.0], "intercept": 1.0, "features": ["hours"]}


def test_predict_with_a_linear_and_a_logistic_model() -> None:
    plan = prepare_predict(_ctx(), PredictRequest(model=LINEAR_MODEL, x=[1.0, 3.0]))
    content = compute_predict(plan, long_deadline())
    assert content["kind"] == "linear" and content["proba"] is None
    torch.testing.assert_close(content["y"], torch.tensor([3.0, 7.0], dtype=torch.float64))
    logistic = {
        "kind": "logistic",
        "classes": ["fail", "pass"],
        "coef": [1.0],
        "intercept": -2.0,
        "threshold": 0.5,
        "scaler": None,
        "features": ["hours"],
    }
    plan = prepare_predict(_ctx(), PredictRequest(model=logistic, x=[[1.0], [3.0]]))
    content = compute_predict(plan, long_deadline())
    assert content["y"] == ["fail", "pass"]
    positive = torch.sigmoid(torch.tensor([-1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(content["proba"], torch.stack([1 - positive, positive], dim=1))


def test_predict_checks_the_model_then_x_then_the_limits() -> None:
    bad_model = {**LINEAR_MODEL, "coef": [1.0, 2.0]}
    with pytest.raises(InvalidInput) as info:
        prepare_predict(_ctx(), PredictRequest(model=bad_model, x=[[1.0, 2.0, 3.0]]))
    assert info.value.code == "invalid_model"
    with pytest.raises(InvalidInput) as info:
        prepare_predict(_ctx(), PredictRequest(model=LINEAR_MODEL, x=[[1.0, 2.0]]))
    assert info.value.code == "shape_mismatch"
    with pytest.raises(LimitExceeded) as info:
        prepare_predict(_ctx(max_elements=4), PredictRequest(model=LINEAR_MODEL, x=[1.0] * 5))
    assert info.value.limit == "max_elements"
