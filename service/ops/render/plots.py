"""Figures as PNG bytes: a grid of line-plot panels, drawn with matplotlib's Agg backend.

Built on ``matplotlib.figure.Figure`` with an Agg canvas, never ``pyplot``: pyplot keeps
global state (the current figure) that threads would share. matplotlib is imported on first
use, as its import takes a noticeable fraction of a second.

The layout follows the tutorial's activation figure (chapter 6.3): ``figsize=(14, 3)`` for
four panels in one row, so each panel is 3.5 × 3 inches, at 100 dpi 350 × 300 pixels, with a
title and a grid; its curves are red lines (``"r-"``).
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.config import Limits
from service.errors import ErrorCode, InvalidInput, LimitExceeded
from service.limits import Budget

PANEL_WIDTH_IN = 3.5
PANEL_HEIGHT_IN = 3.0
DPI = 100
DEFAULT_COLUMNS = 4
"""Panels per row unless the caller says otherwise: the tutorial's four side by side."""
_DEFAULT_MAX_POINTS: int = Limits.model_fields["max_plot_points"].default
PANEL_SECONDS = 0.2
"""Time matplotlib takes to lay out and draw one panel with its title, grid and legend
(measured on a CPU: 0.1 to 0.2 s; 32 panels 5 s)."""
POINT_SECONDS = 5e-7
"""Time of one more point of a line (measured: 10⁶ points add 0.2 to 0.4 s)."""

MAX_PLOT_MAGNITUDE = 1e100
"""Largest magnitude a drawn value may have: matplotlib's ticks over ±1.7e308 overflow (its
range is infinite) and it fails. Non-finite values are left out of a line, as matplotlib
leaves them."""

BEST_LEGEND_POINTS = 10_000
"""Points over which a legend goes in a fixed corner: matplotlib's ``loc="best"`` tries
each place against every point (1M points of a jagged line: 5.6 s, charged 0.7 s)."""


def legend_location(points: int) -> str:
    """Where a panel of ``points`` points puts its legend."""
    return "best" if points <= BEST_LEGEND_POINTS else "upper left"


# matplotlib's module-level caches (fonts, text layout, rcParams) are not documented as safe
# to share between threads, so one figure renders at a time.
RENDER_LOCK = threading.Lock()


@dataclass(frozen=True)
class Line:
    """One curve of a panel: ``y`` over ``x`` in a matplotlib format string (``"r-"``)."""

    x: np.ndarray
    y: np.ndarray
    style: str = "r-"
    label: str | None = None


@dataclass(frozen=True)
class Panel:
    """One subplot: a title, its lines and optional axis labels. The grid is always on."""

    title: str
    lines: Sequence[Line] = field(default_factory=tuple)
    xlabel: str | None = None
    ylabel: str | None = None

    @property
    def points(self) -> int:
        """Points drawn in this panel, summed over its lines."""
        return sum(int(line.x.size) for line in self.lines)


def check_points(points: int, what: str, max_points: int | None = None) -> None:
    """Refuse (413 ``plot_points_limit``) a figure of more than ``max_points`` points, summed
    over its lines, before anything is computed for it: the limit bounds the time a PNG
    takes. ``max_points`` is the configured ``Limits.max_plot_points``; left out, that
    setting's default applies."""
    allowed = _DEFAULT_MAX_POINTS if max_points is None else max_points
    if points > allowed:
        raise LimitExceeded("max_plot_points", allowed, points, what)


def check_figure(
    budget: Budget, panels: int, points: int, what: str, *, columns: int | None, max_pixels: int
) -> None:
    """Refuse (413 ``png_pixels_limit``) a figure of :func:`line_panels` over ``max_pixels``
    and charge its drawing to ``budget``: every panel (laid out, titled, gridded and drawn by
    matplotlib one by one) and every point, as time."""
    width, height = figure_size_px(panels, columns)
    if width * height > max_pixels:
        raise LimitExceeded("max_png_pixels", max_pixels, width * height, what)
    budget.charge_objects(panels, f"{what}: {panels} panels")
    budget.charge_seconds(panels * PANEL_SECONDS + points * POINT_SECONDS, what)


def panel_grid(count: int, columns: int | None = None) -> tuple[int, int]:
    """``(rows, columns)`` of the grid holding ``count`` panels, ``columns`` per row at most
    (default :data:`DEFAULT_COLUMNS`); one row when they fit in it."""
    per_row = max(1, min(count, columns or DEFAULT_COLUMNS))
    return max(1, math.ceil(count / per_row)), per_row


def figure_size_px(count: int, columns: int | None = None) -> tuple[int, int]:
    """``(width, height)`` in pixels of the PNG that :func:`line_panels` draws."""
    rows, cols = panel_grid(count, columns)
    return round(cols * PANEL_WIDTH_IN * DPI), round(rows * PANEL_HEIGHT_IN * DPI)


def line_panels(panels: Sequence[Panel], *, columns: int | None = None) -> bytes:
    """A PNG of ``panels`` in a grid (see :func:`panel_grid`), each with its title and grid,
    and a legend where any line has a label. The image is exactly
    :func:`figure_size_px` pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (slow import)
    from matplotlib.figure import Figure  # noqa: PLC0415

    _check_magnitudes(panels)
    rows, cols = panel_grid(len(panels), columns)
    with RENDER_LOCK:
        figure = Figure(
            figsize=(cols * PANEL_WIDTH_IN, rows * PANEL_HEIGHT_IN), dpi=DPI, layout="constrained"
        )
        FigureCanvasAgg(figure)
        axes: Any = figure.subplots(rows, cols, squeeze=False)
        for index, ax in enumerate(axes.flat):
            if index >= len(panels):
                ax.set_visible(False)
                continue
            _draw(ax, panels[index])
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _draw(ax: Any, panel: Panel) -> None:
    for line in panel.lines:
        ax.plot(line.x, line.y, line.style, label=line.label)
    ax.set_title(panel.title)
    if panel.xlabel:
        ax.set_xlabel(panel.xlabel)
    if panel.ylabel:
        ax.set_ylabel(panel.ylabel)
    ax.grid(visible=True)
    if any(line.label for line in panel.lines):
        ax.legend(loc=legend_location(panel.points))


def _check_magnitudes(panels: Sequence[Panel]) -> None:
    """422 ``values_too_large`` for a panel with a finite value beyond
    :data:`MAX_PLOT_MAGNITUDE`, before matplotlib sees it."""
    for panel in panels:
        for line in panel.lines:
            for axis, values in (("x", line.x), ("y", line.y)):
                finite = values[np.isfinite(values)]
                if finite.size and float(np.abs(finite).max()) > MAX_PLOT_MAGNITUDE:
                    raise InvalidInput(
                        f"the panel {panel.title!r} has {axis} values beyond "
                        f"±{MAX_PLOT_MAGNITUDE:g}, which its axes cannot span; narrow the "
                        "range or rescale",
                        code=ErrorCode.VALUES_TOO_LARGE,
                        details={
                            "panel": panel.title,
                            "axis": axis,
                            "max_magnitude": MAX_PLOT_MAGNITUDE,
                        },
                    )
