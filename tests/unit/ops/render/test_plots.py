"""Line-panel figures as PNG bytes: the grid, the pixel size and the points limit, without
HTTP."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.config import Limits
from service.errors import LimitExceeded
from service.ops.render.plots import (
    DPI,
    PANEL_HEIGHT_IN,
    PANEL_WIDTH_IN,
    Line,
    Panel,
    check_points,
    figure_size_px,
    line_panels,
    panel_grid,
)

MAX_POINTS = Limits.model_fields["max_plot_points"].default
"""What ``check_points`` allows when it is not given the configured limit."""


def png_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("count", "columns", "grid"),
    [(1, None, (1, 1)), (4, None, (1, 4)), (5, None, (2, 4)), (4, 2, (2, 2)), (26, 8, (4, 8))],
)
def test_panel_grid(count: int, columns: int | None, grid: tuple[int, int]) -> None:
    assert panel_grid(count, columns) == grid
    assert figure_size_px(count, columns) == (350 * grid[1], 300 * grid[0])


@pytest.mark.parametrize(("count", "columns"), [(1, None), (3, None), (7, 3), (2, 8)])
def test_the_size_is_the_panel_size_times_the_grid(count: int, columns: int | None) -> None:
    rows, cols = panel_grid(count, columns)
    assert rows * cols >= count > (rows - 1) * cols  # no empty row
    assert figure_size_px(count, columns) == (
        round(cols * PANEL_WIDTH_IN * DPI),
        round(rows * PANEL_HEIGHT_IN * DPI),
    )


def test_line_panels_draws_a_png_of_the_announced_size() -> None:
    x = np.linspace(-6, 6, 100)
    panels = [
        Panel(
            "Tanh", [Line(x, np.tanh(x), "r-", "y"), Line(x, 1 - np.tanh(x) ** 2, "b--", "dy/dx")]
        ),
        Panel("Empty"),
        Panel("Odd values", [Line(x, np.where(x > 0, np.inf, np.nan))]),
    ]
    png = line_panels(panels, columns=2)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == figure_size_px(3, 2) == (700, 600)
    assert panels[0].points == 200


def test_panels_fill_the_grid_row_by_row_and_the_rest_stays_blank() -> None:
    x = np.linspace(-1, 1, 50)
    panels = [Panel(f"Panel {i}", [Line(x, x * (i + 1), "r-")]) for i in range(5)]
    image = png_image(line_panels(panels))  # 5 panels, 4 per row: a 2 × 4 grid
    rows, cols = panel_grid(len(panels))
    assert (rows, cols) == (2, 4)
    assert image.size == figure_size_px(len(panels))
    pixels = np.asarray(image.convert("RGB"))
    cell_w, cell_h = image.size[0] // cols, image.size[1] // rows

    def cell(row: int, col: int) -> np.ndarray:
        # The inner part of the cell: the layout lets a neighbour's edge reach a few pixels
        # over the cell's border.
        top, left = row * cell_h + cell_h // 10, col * cell_w + cell_w // 10
        return pixels[top : top + cell_h * 8 // 10, left : left + cell_w * 8 // 10]

    def is_red(block: np.ndarray) -> np.ndarray:
        return (block[..., 0] > 200) & (block[..., 1] < 60) & (block[..., 2] < 60)

    for index in range(len(panels)):
        assert is_red(cell(*divmod(index, cols))).sum() > 50, index
    for index in range(len(panels), rows * cols):
        blank = cell(*divmod(index, cols))
        assert (blank == 255).all(), index  # the unused axes are hidden


def test_points_are_summed_over_a_panels_lines() -> None:
    panel = Panel("Two", [Line(np.zeros(3), np.zeros(3)), Line(np.zeros(5), np.zeros(5))])
    assert panel.points == 3 + 5
    assert Panel("None").points == 0


def test_check_points() -> None:
    check_points(MAX_POINTS, "a plot")
    with pytest.raises(LimitExceeded) as caught:
        check_points(MAX_POINTS + 1, "a plot")
    assert caught.value.code == "plot_points_limit"
    assert caught.value.details == {
        "limit": "max_plot_points",
        "allowed": MAX_POINTS,
        "requested": MAX_POINTS + 1,
    }


@pytest.mark.parametrize("limit", [1, 1000, MAX_POINTS * 4])
def test_check_points_takes_the_configured_limit(limit: int) -> None:
    check_points(limit, "a plot", limit)
    with pytest.raises(LimitExceeded) as caught:
        check_points(limit + 1, "a plot", limit)
    assert caught.value.status_code == 413
    assert caught.value.details == {
        "limit": "max_plot_points",
        "allowed": limit,
        "requested": limit + 1,
    }
    assert "a plot" in caught.value.message


@pytest.mark.parametrize(("points", "where"), [(1_000, "best"), (300_000, "upper left")])
def test_a_legend_over_many_points_goes_in_a_corner(
    monkeypatch: pytest.MonkeyPatch, points: int, where: str
) -> None:
    """matplotlib's ``loc="best"`` tries each place against every point: 300,000 points of a
    jagged line took 2.4 s to draw with it, 0.34 s without."""
    from matplotlib.axes import Axes  # noqa: PLC0415 (as plots imports it: on first use)

    placed: list[str] = []
    legend = Axes.legend

    def watched(self: Axes, *args: Any, **kwargs: Any) -> Any:
        placed.append(kwargs.get("loc", "best"))
        return legend(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "legend", watched)
    x = np.arange(points // 2, dtype=np.float64)
    y = np.where(x % 2, 1.0, -1.0)
    line_panels([Panel("jagged", [Line(x, y, "r-", "y"), Line(x, -y, "b--", "dy/dx")])])
    assert placed == [where]
