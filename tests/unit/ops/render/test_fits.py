"""Pictures of fitted regressions: what each panel draws, the PNG's size and where its
colours land, the points counted before the fit, and the class regions of a logistic fit."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image

from service.config import Limits
from service.errors import LimitExceeded
from service.ops.data.datasets import Table, encode_labels, load_dataset, table_from_tensors
from service.ops.regression.linear import regression_targets
from service.ops.render.fits import (
    BOUNDARY_PANEL_IN,
    GRID_STEPS,
    check_plot,
    decision_regions,
    grid_axis,
    linear_panels,
    linear_plot_points,
    linear_png,
    logistic_plot_points,
    logistic_png,
)
from service.ops.render.plots import DPI, PANEL_HEIGHT_IN, PANEL_WIDTH_IN, figure_size_px
from tests.unit.ops.regression.helpers import linear_fit, logistic_fit

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _pixels(data: bytes) -> np.ndarray:
    """The PNG as an [height, width, 3] array of 0..255."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def _columns_of(pixels: np.ndarray, colour: tuple[int, ...], tolerance: int = 0) -> np.ndarray:
    """The x coordinates of the pixels within ``tolerance`` of ``colour``."""
    near = (np.abs(pixels - np.array(colour)) <= tolerance).all(axis=2)
    return np.nonzero(near)[1]


def _iris_petals() -> Table:
    iris = load_dataset("iris")
    assert iris.y is not None
    return table_from_tensors(
        iris.x[:, 2:4].tolist(), iris.y.to(torch.int64).tolist(), max_elements=1 << 20
    )


def _breast_cancer_pair() -> Table:
    data = load_dataset("breast_cancer")
    assert data.y is not None
    return table_from_tensors(
        data.x[:, :2].tolist(), data.y.to(torch.int64).tolist(), max_elements=1 << 20
    )


# --- linear ----------------------------------------------------------------------------------


def test_one_feature_draws_the_data_and_the_line_the_right_way_round() -> None:
    exam = load_dataset("exam")
    fit = linear_fit(exam, test_size=0.25, seed=0)
    y = regression_targets(exam)
    (panel,) = linear_panels(fit, exam.x, y)
    train, test, line = panel.lines
    assert (train.style, test.style, line.style) == ("bo", "g^", "r-")
    # The feature (hours) on x, the target (score) on y.
    assert (panel.xlabel, panel.ylabel) == ("hours", "score")
    np.testing.assert_array_equal(train.x, exam.x[fit.split.train, 0].numpy())
    np.testing.assert_array_equal(test.y, y[fit.split.test].numpy())
    hours = exam.x[:, 0].numpy()
    np.testing.assert_array_equal(line.x, [hours.min(), hours.max()])
    slope, intercept = float(fit.coef[0, 0]), float(fit.intercept[0])
    np.testing.assert_allclose(line.y, slope * line.x + intercept)
    assert fit.pearson_r is not None and f"r = {fit.pearson_r:.3f}" in panel.title


def test_several_features_draw_predicted_against_actual_beside_the_loss() -> None:
    diabetes = load_dataset("diabetes")
    fit = linear_fit(diabetes, method="gd", epochs=30, seed=0)
    y = regression_targets(diabetes)
    scatter, loss = linear_panels(fit, diabetes.x, y)
    train, identity = scatter.lines
    np.testing.assert_array_equal(train.x, y.numpy())
    np.testing.assert_allclose(train.y, fit.predictions[:, 0].numpy())
    np.testing.assert_array_equal(identity.x, identity.y)  # the line y = x
    assert identity.style == "k--"
    assert loss.lines[0].y.tolist() == fit.loss_history
    assert loss.lines[0].x.tolist() == list(range(1, 31))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("exam", {}),
        ("exam", {"method": "gd", "epochs": 40, "seed": 0, "test_size": 0.2}),
        ("linnerud", {"test_size": 0.2, "seed": 1}),
    ],
)
def test_the_points_counted_before_the_fit_are_the_points_drawn(
    name: str, options: dict[str, object]
) -> None:
    data = load_dataset(name)
    fit = linear_fit(data, **options)
    y = regression_targets(data)
    targets = 1 if y.ndim == 1 else int(y.shape[1])
    drawn = sum(panel.points for panel in linear_panels(fit, data.x, y))
    assert drawn == linear_plot_points(data.n_samples, targets, fit.epochs)


def test_a_linear_png_decodes_at_its_size_with_its_colours_in_place() -> None:
    exam = load_dataset("exam")
    y = regression_targets(exam)
    one = _pixels(linear_png(linear_fit(exam), exam.x, y))
    width, height = figure_size_px(1, 1)
    assert one.shape == (height, width, 3)
    assert _columns_of(one, RED).size and _columns_of(one, BLUE).size

    two = _pixels(linear_png(linear_fit(exam, method="gd", epochs=20, seed=0), exam.x, y))
    width, height = figure_size_px(2, 2)
    assert two.shape == (height, width, 3)
    half = width // 2
    blue, red = _columns_of(two, BLUE), _columns_of(two, RED)
    assert (blue < half).all()  # the data: left panel only
    assert (red < half).any() and (red >= half).any()  # the fitted line; the loss curve


# --- logistic --------------------------------------------------------------------------------


def test_the_regions_are_the_models_decisions_on_the_grid() -> None:
    petals = _iris_petals()
    fit = logistic_fit(petals)
    grid = decision_regions(fit, petals.x)
    assert grid.regions.shape == (GRID_STEPS, GRID_STEPS) and grid.positive is None
    np.testing.assert_array_equal(grid.x[0].numpy(), grid_axis(petals.x[:, 0]).numpy())
    np.testing.assert_array_equal(grid.y[:, 0].numpy(), grid_axis(petals.x[:, 1]).numpy())
    params = fit.params()
    points = torch.stack([grid.x.reshape(-1), grid.y.reshape(-1)], dim=1)
    expected = params.decide(params.logits(points)).reshape(GRID_STEPS, GRID_STEPS)
    assert torch.equal(grid.regions, expected)
    assert set(grid.regions.unique().tolist()) == {0, 1, 2}


def test_two_classes_also_give_the_probability_of_the_second() -> None:
    pair = _breast_cancer_pair()
    fit = logistic_fit(pair, threshold=0.3)
    grid = decision_regions(fit, pair.x)
    assert grid.positive is not None
    assert torch.equal(grid.regions, (grid.positive > 0.3).to(torch.int64))


@pytest.mark.parametrize(
    ("values", "low", "high"),
    [([1.0, 3.0, 2.0], 0.8, 3.2), ([5.0, 5.0], 4.5, 5.5), ([0.0, 0.0], -0.1, 0.1)],
)
def test_the_grid_spans_the_values_and_a_tenth_more(
    values: list[float], low: float, high: float
) -> None:
    axis = grid_axis(torch.tensor(values, dtype=torch.float64))
    assert axis.shape == (GRID_STEPS,)
    assert (float(axis[0]), float(axis[-1])) == pytest.approx((low, high))


def test_a_logistic_png_on_two_features_puts_the_regions_left_of_the_loss() -> None:
    petals = _iris_petals()
    fit = logistic_fit(petals)
    labels = encode_labels(petals).indices
    pixels = _pixels(logistic_png(fit, petals.x, labels))
    width_in, height_in = BOUNDARY_PANEL_IN
    expected_width = (width_in + PANEL_WIDTH_IN * height_in / PANEL_HEIGHT_IN) * DPI
    assert pixels.shape[0] == round(height_in * DPI)
    assert abs(pixels.shape[1] - expected_width) < 1
    boundary_width = width_in * DPI
    for index in range(3):
        # Each class's region: its colour at alpha 0.25 over white.
        region = tuple(round(255 * (0.75 + 0.25 * c)) for c in to_rgb(f"C{index}"))
        columns = _columns_of(pixels, region, tolerance=2)
        assert columns.size > 100, f"no region of class {index}"
        assert (columns < boundary_width).all()


def test_a_logistic_png_on_other_features_is_the_loss_curve() -> None:
    iris = load_dataset("iris")
    fit = logistic_fit(iris)
    pixels = _pixels(logistic_png(fit, iris.x, encode_labels(iris).indices))
    width, height = figure_size_px(1, 1)
    assert pixels.shape == (height, width, 3)
    assert _columns_of(pixels, RED).size  # the loss curve, "r-"


@pytest.mark.parametrize(("n_features", "grid"), [(2, GRID_STEPS * GRID_STEPS), (3, 0)])
def test_logistic_plot_points(n_features: int, grid: int) -> None:
    assert logistic_plot_points(150, n_features, 40) == 150 + grid + 40


# --- the points limit ------------------------------------------------------------------------


def test_check_plot_refuses_over_the_configured_points() -> None:
    limits = Limits(max_plot_points=1000)
    check_plot(limits, 1000)
    with pytest.raises(LimitExceeded) as info:
        check_plot(limits, 1001)
    assert info.value.code == "plot_points_limit"
    assert info.value.details == {"limit": "max_plot_points", "allowed": 1000, "requested": 1001}
