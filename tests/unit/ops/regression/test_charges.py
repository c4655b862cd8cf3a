"""What a fit, a prediction and a figure are charged before they run: optimizer steps per
epoch and batch, L-BFGS evaluations (and a fit that never makes more), float64 arithmetic,
the answer's numbers and names (confusion matrices by classes²), the figure's points."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

import service.ops.regression.logistic as logistic
from schemas.regression import LinearModel, LogisticModel
from service.calibration import Throughput
from service.config import Limits
from service.errors import LimitExceeded
from service.limits import Budget
from service.ops.data.datasets import load_dataset
from service.ops.regression.linear import LinearOptions, plan_linear_fit
from service.ops.regression.logistic import LogisticOptions, lbfgs_evaluations, plan_logistic_fit
from service.ops.regression.params import charge_model
from service.ops.regression.training import STEP_SECONDS
from service.ops.render.fits import POINT_SECONDS, check_plot
from tests.unit.ops.regression.helpers import linear_fit, logistic_fit, table_of

THROUGHPUT = Throughput("cpu", {"float32": 1e11, "float64": 5e10, "float16": 1e9}, 1e9)


def timed(**limits: float) -> Budget:
    """The default limits, predicting time at :data:`THROUGHPUT`'s rates."""
    return Budget.from_limits(Limits(**limits), THROUGHPUT)  # type: ignore[arg-type]


def test_gradient_descent_is_charged_per_epoch_and_batch() -> None:
    """Mini-batches of one sample: 10⁷ optimizer steps of Python (hours), where the FLOPs
    of an epoch alone (a few million) looked like seconds."""
    options = LinearOptions(method="gd", epochs=1000, batch_size=1)
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        plan_linear_fit(10_000, 1, 1, options, timed())
    assert info.value.code in ("objects_limit", "over_time_budget")
    assert time.perf_counter() - start < 0.1
    spent = timed()
    plan_linear_fit(10_000, 1, 1, LinearOptions(method="gd", epochs=100, batch_size=1000), spent)
    assert spent.objects >= 100 * 10
    assert spent.seconds >= 100 * 10 * STEP_SECONDS
    sgd = LogisticOptions(optimizer="sgd", epochs=1000, batch_size=1)
    with pytest.raises(LimitExceeded):
        plan_logistic_fit(10_000, 1, 2, sgd, timed())


def test_fits_are_charged_at_float64s_rate() -> None:
    slow = Throughput("cpu", {"float32": 1e11, "float64": 1e8}, 1e9)
    options = LinearOptions()  # least squares
    plan_linear_fit(100_000, 100, 1, options, timed())
    with pytest.raises(LimitExceeded) as info:
        plan_linear_fit(100_000, 100, 1, options, Budget.from_limits(Limits(), slow))
    assert info.value.code == "over_time_budget"


def test_lbfgs_is_charged_its_evaluations_and_never_makes_more() -> None:
    assert lbfgs_evaluations(100) == 2 + 100 * logistic.LBFGS_EVALS_PER_EPOCH + 25
    made = []
    original = logistic.log_loss

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        made.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    breast_cancer = load_dataset("breast_cancer")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logistic, "log_loss", counting)
        fit = logistic_fit(breast_cancer, epochs=30)
        training = len(made) - 1  # the metrics evaluate once more
        assert training <= lbfgs_evaluations(30)
        # With no evaluations to spare, the fit stops where its last iteration began.
        patch.setattr(logistic, "LBFGS_EVALS_PER_EPOCH", 0)
        patch.setattr(logistic, "MAX_LINE_SEARCH", 1)
        made.clear()
        short = logistic_fit(breast_cancer, epochs=30)
        assert len(made) - 1 <= lbfgs_evaluations(30) == 3
    assert short.epochs < fit.epochs
    assert bool(torch.isfinite(short.weight).all())


def test_confusion_matrices_are_charged_by_classes_squared() -> None:
    split = LogisticOptions(test_size=0.2, epochs=1)
    with pytest.raises(LimitExceeded) as info:
        plan_logistic_fit(10_000, 2, 800, split, timed())  # two matrices of 640k entries
    assert info.value.code == "objects_limit"
    spent = timed()
    plan_logistic_fit(10_000, 2, 300, split, spent)
    assert spent.objects >= 2 * 300 * 300


def test_the_answers_correlations_are_charged_per_feature_and_target() -> None:
    with pytest.raises(LimitExceeded) as info:
        plan_linear_fit(10, 1000, 300, LinearOptions(), timed())
    assert info.value.code == "objects_limit"
    plan_linear_fit(10, 100, 30, LinearOptions(), timed())


def test_a_model_and_its_predictions_are_charged() -> None:
    spent = timed()
    model = LinearModel(kind="linear", coef=[[1.0, 2.0], [3.0, 4.0]], intercept=[0.0, 1.0],
                        features=["a", "b"], targets=["u", "v"])  # fmt: skip
    charge_model(model, spent)
    assert spent.objects == 4 + 2 + 2
    labels = LogisticModel(kind="logistic", classes=["x", "y"], coef=[1.0], intercept=0.0,
                           threshold=None, scaler=None, features=["a"])  # fmt: skip
    counted = timed()
    charge_model(labels, counted)
    assert counted.objects == 1 + 1 + 2


def test_a_figure_is_charged_its_points_and_classes() -> None:
    spent = timed()
    check_plot(Limits(), 100_000, spent)
    assert spent.objects == 100_000
    assert spent.seconds >= 100_000 * POINT_SECONDS
    with pytest.raises(LimitExceeded) as info:
        check_plot(Limits(max_plot_points=10**7), 5_000_000, timed())
    assert info.value.code in ("objects_limit", "over_time_budget")
    classes = timed()
    check_plot(Limits(), 1000, classes, classes=50)
    assert classes.objects == 1000 + 50


def test_a_fit_near_the_limits_runs() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + rng.normal(size=2000)
    options = LinearOptions(method="gd", epochs=20, batch_size=200, seed=0)
    spent = timed()
    plan_linear_fit(2000, 4, 1, options, spent)
    assert spent.seconds < 30
    fit = linear_fit(table_of(x, y), method="gd", epochs=20, batch_size=200, seed=0)
    assert fit.epochs == 20 and fit.loss_history is not None
    assert math.isfinite(fit.loss_history[-1])
