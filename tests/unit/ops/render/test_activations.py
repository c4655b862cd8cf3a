"""The activation figure: its panels (x flattened and sorted, y and dy/dx against torch), its
points and its size, without HTTP."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from service.errors import LimitExceeded
from service.ops.nn.activations import bind, evaluate
from service.ops.render.activations import (
    activation_figure,
    activation_panels,
    activation_plot_points,
    check_activation_plot,
)
from service.ops.render.plots import figure_size_px


def test_a_panel_plots_y_over_x_flattened_and_sorted() -> None:
    x = torch.tensor([[1.5, -2.0], [0.0, 3.0], [-0.5, 2.0]])
    functions = bind([("tanh", {}), ("LeakyReLU", {"negative_slope": 0.2})], {})
    evaluations = [evaluate(bound, x) for bound in functions]
    panels = activation_panels(functions, x, evaluations)
    xs = np.sort(x.reshape(-1).double().numpy())
    references = [np.tanh(xs), torch.nn.LeakyReLU(0.2)(torch.from_numpy(xs)).numpy()]
    assert [panel.title for panel in panels] == ["Tanh", "LeakyReLU(negative_slope=0.2)"]
    for panel, reference in zip(panels, references, strict=True):
        (line,) = panel.lines
        assert line.style == "r-" and line.label is None
        np.testing.assert_array_equal(line.x, xs)
        np.testing.assert_allclose(line.y, reference, rtol=1e-6)


def test_with_the_derivative_a_panel_has_two_labelled_lines() -> None:
    x = torch.linspace(-3, 3, 25, dtype=torch.float64).flip(0)  # sorting puts it back in order
    (bound,) = bind([("sigmoid", {})], {})
    (panel,) = activation_panels([bound], x, [evaluate(bound, x, derivative=True)])
    y, dydx = panel.lines
    s = torch.sigmoid(x.flip(0)).numpy()
    assert (y.style, y.label, dydx.style, dydx.label) == ("r-", "y", "b--", "dy/dx")
    np.testing.assert_array_equal(y.x, x.flip(0).numpy())
    np.testing.assert_allclose(y.y, s)
    np.testing.assert_allclose(dydx.y, s * (1 - s))
    assert panel.points == 2 * x.numel()


@pytest.mark.parametrize("derivative", [False, True])
def test_the_points_are_those_the_panels_draw(derivative: bool) -> None:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    functions = bind([("relu", {}), ("elu", {}), ("softsign", {})], {})
    evaluations = [evaluate(bound, x, derivative=derivative) for bound in functions]
    panels = activation_panels(functions, x, evaluations)
    expected = sum(panel.points for panel in panels)
    assert activation_plot_points(len(functions), x.numel(), derivative=derivative) == expected


def test_a_figure_over_the_configured_points_is_refused() -> None:
    check_activation_plot(4, 100, derivative=True, max_points=800)
    with pytest.raises(LimitExceeded) as caught:
        check_activation_plot(4, 101, derivative=True, max_points=800)
    assert caught.value.details == {
        "limit": "max_plot_points",
        "allowed": 800,
        "requested": 4 * 2 * 101,
    }


@pytest.mark.parametrize(("count", "columns"), [(1, None), (4, None), (5, 2)])
def test_the_figure_is_a_png_of_the_grids_size(count: int, columns: int | None) -> None:
    x = torch.linspace(-6, 6, 60)
    functions = bind([("relu", {})] * count, {})
    evaluations = [evaluate(bound, x, derivative=True) for bound in functions]
    image = Image.open(io.BytesIO(activation_figure(functions, x, evaluations, columns=columns)))
    assert image.format == "PNG"
    assert image.size == figure_size_px(count, columns)
