"""Linear and logistic regression against scikit-learn, computed here; models and predict."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import confusion_matrix, log_loss, precision_score, r2_score, recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from schemas.regression import MAX_CLASSES as SCHEMA_MAX_CLASSES
from service.errors import ComputeTimeout, InvalidInput, LimitExceeded
from service.limits import Budget, Deadline
from service.ops.context import make_generator
from service.ops.data.datasets import Table, encode_labels, load_dataset, table_from_tensors
from service.ops.regression.fits import (
    MAX_CLASSES,
    LinearOptions,
    LogisticOptions,
    fit_linear,
    fit_logistic,
    linear_params,
    logistic_params,
    lstsq,
    plan_linear_fit,
    plan_logistic_fit,
    prediction_input,
    split_samples,
    strength,
)
from service.ops.regression.fits import (
    r2_score as service_r2,
)

CPU = torch.device("cpu")
CUDA = torch.cuda.is_available()


def _deadline() -> Deadline:
    return Deadline(60.0)


def _table(x: np.ndarray, y: np.ndarray) -> Table:
    return table_from_tensors(
        {"data": x.tolist(), "dtype": "float64"},
        {"data": y.tolist(), "dtype": "float64"},
        max_elements=1 << 30,
    )


def _linear(table: Table, **options: Any) -> Any:
    return fit_linear(table, LinearOptions(**options), device=CPU, deadline=_deadline())


def _logistic(table: Table, **options: Any) -> Any:
    return fit_logistic(
        table, encode_labels(table), LogisticOptions(**options), device=CPU, deadline=_deadline()
    )


def _arrays(table: Table) -> tuple[np.ndarray, np.ndarray]:
    assert table.y is not None
    return table.x.numpy(), table.y.numpy()


# --- linear, closed form ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["exam", "diabetes", "linnerud"])
def test_lstsq_equals_sklearn(name: str) -> None:
    table = load_dataset(name)
    x, y = _arrays(table)
    reference = LinearRegression().fit(x, y)
    fit = _linear(table)
    model = fit.model()
    np.testing.assert_allclose(model["coef"], reference.coef_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(model["intercept"], reference.intercept_, rtol=1e-9)
    assert fit.metrics["r2"] == pytest.approx(r2_score(y, reference.predict(x)), abs=1e-12)


def test_lstsq_without_intercept_equals_sklearn() -> None:
    x, y = _arrays(load_dataset("diabetes"))
    reference = LinearRegression(fit_intercept=False).fit(x, y)
    model = _linear(load_dataset("diabetes"), fit_intercept=False).model()
    np.testing.assert_allclose(model["coef"], reference.coef_, rtol=1e-9)
    assert model["intercept"] == 0.0


def _ill_conditioned(n: int, d: int, condition: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns whose centred singular values span ``condition``, and a noisy target."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    u -= u.mean(0)  # centred columns keep the spectrum through scikit-learn's centring
    x = (u * np.logspace(0, -math.log10(condition), d)) @ v.T + rng.standard_normal(d)
    return x, x @ rng.standard_normal(d) + 0.01 * rng.standard_normal(n) + 3.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ill_conditioned_data_equals_sklearn(seed: int) -> None:
    x, y = _ill_conditioned(200, 8, 1e5, seed)
    assert np.linalg.cond(x - x.mean(0)) > 1e4
    reference = LinearRegression().fit(x, y)
    model = _linear(_table(x, y)).model()
    scale = np.abs(reference.coef_).max()
    np.testing.assert_allclose(model["coef"], reference.coef_, atol=1e-6 * scale)
    assert model["intercept"] == pytest.approx(reference.intercept_, rel=1e-6)


def test_rcond_reproduces_sklearns_truncation() -> None:
    x, y = _ill_conditioned(200, 6, 1e9, 3)
    reference = LinearRegression(tol=1e-6).fit(x, y)  # singular values below 1e-6 dropped
    model = _linear(_table(x, y), rcond=1e-6).model()
    np.testing.assert_allclose(model["coef"], reference.coef_, atol=1e-8)


def test_rank_deficient_data_gets_the_minimum_norm_solution() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 2))
    x = np.column_stack([base, base[:, 0]])  # a duplicated column
    y = base @ [2.0, -1.0] + 0.5
    reference = LinearRegression().fit(x, y)
    coef = _linear(_table(x, y)).model()["coef"]
    np.testing.assert_allclose(coef, reference.coef_, atol=1e-10)
    assert coef[0] == pytest.approx(coef[2])  # the weight is shared, not arbitrary


def test_the_svd_path_equals_gelsd() -> None:
    x, y = _ill_conditioned(100, 5, 1e6, 4)
    a, b = torch.from_numpy(x - x.mean(0)), torch.from_numpy(y - y.mean()).unsqueeze(1)
    on_cpu = lstsq(a, b)
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    by_svd = vh.mT @ ((u.mT @ b) / s.unsqueeze(1))
    torch.testing.assert_close(on_cpu, by_svd, rtol=1e-7, atol=1e-9)


@pytest.mark.gpu
def test_lstsq_on_cuda_equals_the_cpu() -> None:
    x, y = _ill_conditioned(300, 6, 1e5, 5)
    table = _table(x, y)
    on_cpu = _linear(table).model()
    on_cuda = fit_linear(
        table, LinearOptions(), device=torch.device("cuda:0"), deadline=_deadline()
    ).model()
    np.testing.assert_allclose(on_cuda["coef"], on_cpu["coef"], rtol=1e-6)


def test_pearson_r_equals_numpys() -> None:
    table = load_dataset("diabetes")
    x, y = _arrays(table)
    fit = _linear(table)
    expected = [np.corrcoef(x[:, j], y)[0, 1] for j in range(x.shape[1])]
    np.testing.assert_allclose(fit.correlations[:, 0].numpy(), expected, rtol=1e-10)
    assert fit.pearson_r is None  # several features
    rows = fit.correlation_list()
    assert [row["feature"] for row in rows] == list(table.feature_names)
    assert all(row["strength"] == strength(row["r"]) for row in rows)


def test_a_constant_feature_has_no_correlation() -> None:
    fit = _linear(_table(np.ones((5, 1)), np.arange(5.0)))
    assert fit.pearson_r is None
    assert fit.correlation_list()[0] == {
        "feature": "x0",
        "target": "y",
        "r": None,
        "strength": None,
    }


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


# --- splits ----------------------------------------------------------------------------------


def test_split_sizes_and_seeds() -> None:
    first = split_samples(20, 0.25, make_generator(0))
    assert (first.train.numel(), first.test.numel()) == (15, 5)
    assert sorted([*first.train.tolist(), *first.test.tolist()]) == list(range(20))
    again = split_samples(20, 0.25, make_generator(0))
    assert torch.equal(first.test, again.test)
    other = split_samples(20, 0.25, make_generator(1))
    assert not torch.equal(first.test, other.test)
    assert split_samples(20, 0.01, make_generator(0)).test.numel() == 1  # ceil, as sklearn
    with pytest.raises(InvalidInput) as info:
        split_samples(3, 0.5, make_generator(0))
    assert info.value.code == "too_few_samples"


def test_metrics_on_the_test_set() -> None:
    table = load_dataset("diabetes")
    fit = _linear(table, test_size=0.2, seed=0)
    x, y = _arrays(table)
    test = fit.split.test.numpy()
    reference = LinearRegression().fit(x[fit.split.train.numpy()], y[fit.split.train.numpy()])
    guess = reference.predict(x[test])
    assert fit.metrics["r2_test"] == pytest.approx(r2_score(y[test], guess), rel=1e-9)
    assert fit.metrics["mse_test"] == pytest.approx(np.mean((guess - y[test]) ** 2), rel=1e-9)
    assert fit.metrics["mae_test"] == pytest.approx(np.mean(np.abs(guess - y[test])), rel=1e-9)


# --- linear, gradient descent ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"optimizer": "sgd"}, {"optimizer": "adam", "lr": 0.05}, {"batch_size": 5, "lr": 0.05}],
)
def test_gd_reaches_the_closed_forms_r2(options: dict[str, Any]) -> None:
    table = load_dataset("exam")
    closed = _linear(table)
    fit = _linear(table, method="gd", epochs=300, seed=0, **options)
    assert fit.metrics["r2"] == pytest.approx(closed.metrics["r2"], abs=0.01)
    assert len(fit.loss_history) == fit.epochs == 300
    assert fit.loss_history[-1] < fit.loss_history[0]
    # The loss is the MSE in the target's units: it ends at the fit's MSE.
    assert fit.loss_history[-1] == pytest.approx(fit.metrics["mse"], rel=0.05)


def test_gd_is_reproducible_under_a_seed() -> None:
    table = load_dataset("exam")
    first = _linear(table, method="gd", epochs=20, seed=3).loss_history
    assert _linear(table, method="gd", epochs=20, seed=3).loss_history == first
    assert _linear(table, method="gd", epochs=20, seed=4).loss_history != first


def test_gd_on_raw_features_can_diverge() -> None:
    with pytest.raises(InvalidInput) as info:
        _linear(load_dataset("exam"), method="gd", standardize=False, lr=1.0, epochs=200)
    assert info.value.code == "diverged"


def test_a_late_deadline_stops_training() -> None:
    deadline = Deadline(60.0)
    deadline.cancelled = True
    with pytest.raises(ComputeTimeout):
        fit_linear(load_dataset("exam"), LinearOptions(method="gd"), device=CPU, deadline=deadline)


def test_plans_charge_epochs_and_sizes() -> None:
    budget = Budget(max_elements=1 << 20, max_total_elements=1 << 22, max_flops=1e9)
    plan_linear_fit(1000, 10, 1, LinearOptions(), budget)
    with pytest.raises(LimitExceeded) as info:
        plan_linear_fit(1000, 10, 1, LinearOptions(method="gd", epochs=10_000), budget)
    assert info.value.limit == "max_flops"
    with pytest.raises(LimitExceeded) as info:
        plan_logistic_fit(1000, 10, 3, LogisticOptions(epochs=5000), Budget(1 << 20, 1 << 22, 1e9))
    assert info.value.limit == "max_flops"


# --- logistic --------------------------------------------------------------------------------


def _sklearn_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> Any:
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=1 / (l2 * len(y)), max_iter=1000)
    ).fit(x, y)


@pytest.mark.parametrize(("name", "l2"), [("breast_cancer", 1e-2), ("iris", 1e-3), ("wine", 1e-4)])
def test_logistic_accuracy_equals_sklearn(name: str, l2: float) -> None:
    table = load_dataset(name)
    x, y = _arrays(table)
    reference = _sklearn_logistic(x, y, l2)
    fit = _logistic(table, l2=l2)
    assert fit.multinomial == (name != "breast_cancer")
    assert fit.converged is True
    assert fit.metrics["accuracy"] == pytest.approx(reference.score(x, y), abs=0.01)
    expected_loss = log_loss(y, reference.predict_proba(x))
    assert fit.metrics["log_loss"] == pytest.approx(expected_loss, rel=0.02, abs=1e-3)


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.5), ("adam", 0.05)])
def test_first_order_optimizers_come_close(optimizer: str, lr: float) -> None:
    table = load_dataset("breast_cancer")
    lbfgs = _logistic(table)
    fit = _logistic(table, optimizer=optimizer, lr=lr, epochs=100)
    assert fit.converged is None and fit.epochs == 100
    assert fit.metrics["accuracy"] == pytest.approx(lbfgs.metrics["accuracy"], abs=0.02)


def test_confusion_precision_and_recall_equal_sklearn() -> None:
    table = load_dataset("wine")
    fit = _logistic(table, test_size=0.3, seed=0, l2=0.05)
    _, y = _arrays(table)
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
    base = _logistic(table)
    p = base.params().proba(base.params().logits(table.x))[:, 1]
    for threshold in (0.0, 0.3, 1.0):
        fit = _logistic(table, threshold=threshold)
        assert fit.model()["threshold"] == threshold
        predicted = fit.params().decide(fit.params().logits(table.x))
        # classes[1] strictly above the threshold: the tutorial's rule.
        assert torch.equal(predicted, (p > threshold).to(torch.int64))
    assert int(_logistic(table, threshold=1.0).metrics["confusion_matrix"][0][1]) == 0


def test_string_labels_and_the_model() -> None:
    x = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]])
    table = table_from_tensors(x.tolist(), ["no", "no", "yes", "no", "yes", "yes"], max_elements=99)
    fit = _logistic(table)
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
        _logistic(table, **options)
    assert info.value.code == code  # type: ignore[attr-defined]


def test_the_class_limit_is_the_schemas() -> None:
    assert MAX_CLASSES == SCHEMA_MAX_CLASSES


# --- models for predict ----------------------------------------------------------------------


def test_a_fitted_linear_model_round_trips() -> None:
    table = load_dataset("linnerud")
    fit = _linear(table)
    model = fit.model()
    params = linear_params(model["coef"], model["intercept"], model["features"], model["targets"])
    torch.testing.assert_close(params.predict(table.x), fit.predictions)


def test_a_fitted_logistic_model_round_trips() -> None:
    table = load_dataset("iris")
    fit = _logistic(table)
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


def test_linear_fit_needs_numeric_targets() -> None:
    table = table_from_tensors([[1.0], [2.0]], ["a", "b"], max_elements=99)
    with pytest.raises(InvalidInput) as info:
        _linear(table)
    assert info.value.code == "targets_not_numeric"
    with pytest.raises(InvalidInput) as info:
        _linear(replace(table, labels=None))
    assert info.value.code == "no_targets"
