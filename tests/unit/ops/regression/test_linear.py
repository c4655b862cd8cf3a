"""Linear regression against scikit-learn and numpy, computed here: least squares, gradient
descent, the plan's charges."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from service.errors import ComputeTimeout, InvalidInput, LimitExceeded
from service.limits import Budget, Deadline
from service.ops.data.datasets import load_dataset, table_from_tensors
from service.ops.regression import linear
from service.ops.regression.linear import (
    TALL,
    LinearOptions,
    fit_linear,
    lstsq,
    plan_linear_fit,
)
from service.ops.regression.logistic import LogisticOptions, plan_logistic_fit
from service.ops.regression.metrics import strength
from service.ops.threads import torch_threads
from tests.unit.ops.regression.helpers import (
    CPU,
    arrays_of,
    linear_fit,
    long_deadline,
    table_of,
)

# --- closed form ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["exam", "diabetes", "linnerud"])
def test_lstsq_equals_sklearn(name: str) -> None:
    table = load_dataset(name)
    x, y = arrays_of(table)
    reference = LinearRegression().fit(x, y)
    fit = linear_fit(table)
    model = fit.model()
    np.testing.assert_allclose(model["coef"], reference.coef_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(model["intercept"], reference.intercept_, rtol=1e-9)
    assert fit.metrics["r2"] == pytest.approx(r2_score(y, reference.predict(x)), abs=1e-12)


def test_lstsq_without_intercept_equals_sklearn() -> None:
    x, y = arrays_of(load_dataset("diabetes"))
    reference = LinearRegression(fit_intercept=False).fit(x, y)
    model = linear_fit(load_dataset("diabetes"), fit_intercept=False).model()
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
    model = linear_fit(table_of(x, y)).model()
    scale = np.abs(reference.coef_).max()
    np.testing.assert_allclose(model["coef"], reference.coef_, atol=1e-6 * scale)
    assert model["intercept"] == pytest.approx(reference.intercept_, rel=1e-6)


def test_rcond_reproduces_sklearns_truncation() -> None:
    x, y = _ill_conditioned(200, 6, 1e9, 3)
    reference = LinearRegression(tol=1e-6).fit(x, y)  # singular values below 1e-6 dropped
    model = linear_fit(table_of(x, y), rcond=1e-6).model()
    np.testing.assert_allclose(model["coef"], reference.coef_, atol=1e-8)


def test_rank_deficient_data_gets_the_minimum_norm_solution() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 2))
    x = np.column_stack([base, base[:, 0]])  # a duplicated column
    y = base @ [2.0, -1.0] + 0.5
    reference = LinearRegression().fit(x, y)
    coef = linear_fit(table_of(x, y)).model()["coef"]
    np.testing.assert_allclose(coef, reference.coef_, atol=1e-10)
    assert coef[0] == pytest.approx(coef[2])  # the weight is shared, not arbitrary


def test_the_svd_path_equals_gelsd() -> None:
    x, y = _ill_conditioned(100, 5, 1e6, 4)
    a, b = torch.from_numpy(x - x.mean(0)), torch.from_numpy(y - y.mean()).unsqueeze(1)
    on_cpu = lstsq(a, b)
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    by_svd = vh.mT @ ((u.mT @ b) / s.unsqueeze(1))
    torch.testing.assert_close(on_cpu, by_svd, rtol=1e-7, atol=1e-9)


def _geqrf_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that call ``torch.geqrf`` from now on, in order."""
    threads: list[str] = []
    geqrf = torch.geqrf

    def spied(a: torch.Tensor) -> Any:
        threads.append(threading.current_thread().name)
        return geqrf(a)

    monkeypatch.setattr(torch, "geqrf", spied)
    return threads


def _on_one_thread_of(cores: int, work: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``work`` as a worker runs a one-thread job: on one of torch's ``cores`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(cores)
    try:
        with torch_threads(1):
            return work()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("side_by_side", [1, 3, 4])
@pytest.mark.parametrize("rcond", [None, 1e-6])
@pytest.mark.parametrize("case", ["ill-conditioned", "rank-deficient", "two-targets"])
def test_a_tall_matrix_reduced_by_qr_first_gets_gelsds_solution(
    case: str, rcond: float | None, side_by_side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The QR reduction, whole, or by blocks of rows on threads side by side (on one of
    torch's threads with ``side_by_side`` cores: 3 splits 400 rows unevenly)."""
    threads = _geqrf_threads(monkeypatch)
    monkeypatch.setattr(linear, "BLOCKS_MIN_FLOPS", 0.0)  # blocks even for this small QR
    x, y = _ill_conditioned(400, 8, 1e9, 6)
    if case == "rank-deficient":
        x[:, 3] = 2 * x[:, 1]
    a = torch.from_numpy(x - x.mean(0))
    b = torch.from_numpy(y - y.mean()).unsqueeze(1)
    if case == "two-targets":
        b = torch.cat([b, b**2], dim=1)
    assert a.shape[0] >= TALL * a.shape[1]
    direct = torch.linalg.lstsq(a, b, rcond=rcond, driver="gelsd").solution
    solution = _on_one_thread_of(side_by_side, lambda: lstsq(a, b, rcond))
    # Both within the problem's conditioning (1e9 × machine precision) of the exact
    # solution: against one computed to 60 digits, gelsd was off by 4.9e-7, the QR-first
    # path by 4.8e-7 and four blocks by 1.3e-6 (relative). So the two may be twice as far
    # apart as either is from the exact one: 1.07e-6 on another CPU's BLAS kernels.
    rtol = 2e-6 if side_by_side == 1 else 1e-5
    torch.testing.assert_close(solution, direct, rtol=rtol, atol=1e-9 * direct.abs().max())
    # The first block's QR on this thread, the others' on the pool's, then the stacked
    # triangles' on this thread again.
    here = threading.current_thread().name
    on_pool = [name for name in threads if name.startswith("qr-block")]
    assert len(on_pool) == side_by_side - 1, threads
    assert threads.count(here) == (2 if side_by_side > 1 else 1), threads


@pytest.mark.gpu
def test_lstsq_on_cuda_equals_the_cpu() -> None:
    x, y = _ill_conditioned(300, 6, 1e5, 5)
    table = table_of(x, y)
    on_cpu = linear_fit(table).model()
    on_cuda = fit_linear(
        table, LinearOptions(), device=torch.device("cuda:0"), deadline=long_deadline()
    ).model()
    np.testing.assert_allclose(on_cuda["coef"], on_cpu["coef"], rtol=1e-6)


def test_pearson_r_equals_numpys() -> None:
    table = load_dataset("diabetes")
    x, y = arrays_of(table)
    fit = linear_fit(table)
    expected = [np.corrcoef(x[:, j], y)[0, 1] for j in range(x.shape[1])]
    np.testing.assert_allclose(fit.correlations[:, 0].numpy(), expected, rtol=1e-10)
    assert fit.pearson_r is None  # several features
    rows = fit.correlation_list()
    assert [row["feature"] for row in rows] == list(table.feature_names)
    assert all(row["strength"] == strength(row["r"]) for row in rows)


@pytest.mark.parametrize("side_by_side", [1, 3])
@pytest.mark.parametrize("rows", [600, 15])
def test_correlations_from_the_qr_equal_numpys(
    rows: int, side_by_side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tall x's correlations come from its QR (R's column norms and ``Rᵀ Qᵀy``, also
    after blocks); a wide one's from x itself. Either way they equal numpy's, for features
    on scales 1e12 apart, a constant feature (no correlation) and two targets."""
    monkeypatch.setattr(linear, "BLOCKS_MIN_FLOPS", 0.0)  # blocks even for this small QR
    rng = np.random.default_rng(7)
    x = rng.standard_normal((rows, 8)) * np.logspace(-6, 6, 8)
    x[:, 5] = 3.0
    y = np.stack([x[:, 0] * 1e6 + rng.standard_normal(rows), rng.standard_normal(rows)], 1)
    reductions: list[linear.Reduction | None] = []
    solve = linear.solve_lstsq

    def spied(*args: Any) -> Any:
        solved = solve(*args)
        reductions.append(solved[1])
        return solved

    monkeypatch.setattr(linear, "solve_lstsq", spied)
    fit = _on_one_thread_of(side_by_side, lambda: linear_fit(table_of(x, y)))
    assert (reductions[0] is not None) == (rows >= TALL * 8)
    for j in range(8):
        for t in range(2):
            r = fit.correlations[j, t].item()
            if j == 5:
                assert math.isnan(r)
            else:
                assert r == pytest.approx(np.corrcoef(x[:, j], y[:, t])[0, 1], rel=1e-10)


def test_a_constant_feature_has_no_correlation() -> None:
    fit = linear_fit(table_of(np.ones((5, 1)), np.arange(5.0)))
    assert fit.pearson_r is None
    assert fit.correlation_list()[0] == {
        "feature": "x0",
        "target": "y",
        "r": None,
        "strength": None,
    }


def test_metrics_on_the_test_set() -> None:
    table = load_dataset("diabetes")
    fit = linear_fit(table, test_size=0.2, seed=0)
    x, y = arrays_of(table)
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
    closed = linear_fit(table)
    fit = linear_fit(table, method="gd", epochs=300, seed=0, **options)
    assert fit.metrics["r2"] == pytest.approx(closed.metrics["r2"], abs=0.01)
    assert len(fit.loss_history) == fit.epochs == 300
    assert fit.loss_history[-1] < fit.loss_history[0]
    # The loss is the MSE in the target's units: it ends at the fit's MSE.
    assert fit.loss_history[-1] == pytest.approx(fit.metrics["mse"], rel=0.05)


def test_gd_is_reproducible_under_a_seed() -> None:
    table = load_dataset("exam")
    first = linear_fit(table, method="gd", epochs=20, seed=3).loss_history
    assert linear_fit(table, method="gd", epochs=20, seed=3).loss_history == first
    assert linear_fit(table, method="gd", epochs=20, seed=4).loss_history != first


def test_gd_on_raw_features_can_diverge() -> None:
    with pytest.raises(InvalidInput) as info:
        linear_fit(load_dataset("exam"), method="gd", standardize=False, lr=1.0, epochs=200)
    assert info.value.code == "diverged"


def test_a_late_deadline_stops_training() -> None:
    deadline = Deadline(60.0)
    deadline.cancelled = True
    with pytest.raises(ComputeTimeout):
        fit_linear(load_dataset("exam"), LinearOptions(method="gd"), device=CPU, deadline=deadline)


def test_a_least_squares_plan_counts_the_qr_reflections_as_serial_steps() -> None:
    budget = Budget(max_elements=1 << 22, max_total_elements=1 << 24, max_flops=1e10)
    plan_linear_fit(20000, 40, 1, LinearOptions(), budget)
    assert budget.serial_steps == 1 + 40


def test_plans_charge_epochs_and_sizes() -> None:
    budget = Budget(max_elements=1 << 20, max_total_elements=1 << 22, max_flops=1e9)
    plan_linear_fit(1000, 10, 1, LinearOptions(), budget)
    with pytest.raises(LimitExceeded) as info:
        plan_linear_fit(1000, 10, 1, LinearOptions(method="gd", epochs=10_000), budget)
    assert info.value.limit == "max_flops"
    with pytest.raises(LimitExceeded) as info:
        plan_logistic_fit(1000, 10, 3, LogisticOptions(epochs=5000), Budget(1 << 20, 1 << 22, 1e9))
    assert info.value.limit == "max_flops"


def test_linear_fit_needs_numeric_targets() -> None:
    table = table_from_tensors([[1.0], [2.0]], ["a", "b"], max_elements=99)
    with pytest.raises(InvalidInput) as info:
        linear_fit(table)
    assert info.value.code == "targets_not_numeric"
    with pytest.raises(InvalidInput) as info:
        linear_fit(replace(table, labels=None))
    assert info.value.code == "no_targets"


def test_a_small_qr_stays_whole_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``BLOCKS_MIN_FLOPS`` the hand-over to another thread would cost more than the
    QR: a 442×10 fit (diabetes) runs its QR whole, on the calling thread."""
    threads = _geqrf_threads(monkeypatch)
    x, y = arrays_of(load_dataset("diabetes"))
    assert 4.0 * x.shape[0] * x.shape[1] ** 2 < linear.BLOCKS_MIN_FLOPS
    a, b = torch.from_numpy(x - x.mean(0)), torch.from_numpy(y - y.mean(0)).reshape(-1, 1)
    solution = _on_one_thread_of(4, lambda: lstsq(a, b))
    assert threads == [threading.current_thread().name]
    reference = LinearRegression().fit(x, y)
    np.testing.assert_allclose(solution.squeeze(1).numpy(), reference.coef_, rtol=1e-9)
