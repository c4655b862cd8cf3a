"""Pictures of fitted regressions, as PNG bytes.

Linear: for one feature the tutorial's scatter of the data with the fitted line, drawn the
right way round (the feature, hours, on x and the target, score, on y: the tutorial's
figure swaps the axes against its own labels); for several features the predicted against
the actual values; for ``gd`` a second panel with the loss curve. These are line panels
(:func:`service.ops.render.plots.line_panels`).

Logistic: for two features the samples coloured by class over the predicted class regions
(binary: the line where P(class 1) equals the threshold), beside the loss curve; otherwise
the loss curve.

The figures are planned too: :func:`linear_plot_points` and :func:`logistic_plot_points` count
the points a figure will draw, and :func:`check_plot` refuses one over the
``max_plot_points`` limit before the fit runs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from service.config import Limits
from service.limits import Budget
from service.ops.regression.linear import LinearFit
from service.ops.regression.logistic import LogisticFit
from service.ops.render.plots import (
    DPI,
    PANEL_HEIGHT_IN,
    PANEL_WIDTH_IN,
    RENDER_LOCK,
    Line,
    Panel,
    check_points,
    legend_location,
    line_panels,
)

GRID_STEPS = 200
"""Steps of the grid the class regions are evaluated on, along each axis."""
BOUNDARY_PANEL_IN = (4.5, 4.0)
"""Width and height, in inches, of the class-regions panel (the loss panel beside it keeps
the line panels' proportions at this height)."""
_MARKERS = "os^Dv<>pPX*h"
FIGURE_SECONDS = 1.0
"""Predicted time of a figure's fixed part: matplotlib lays out the axes, ticks and titles
and encodes the PNG (up to a second; the first figure also imports matplotlib)."""
POINT_SECONDS = 2e-5
"""Predicted time of one point drawn (a marker or a line vertex: about ten microseconds)."""
CLASS_SECONDS = 1e-2
"""Predicted time of one class of the class-regions panel: two scatter calls (train and
test) and a filled contour level over the grid."""


def linear_plot_points(n_samples: int, n_targets: int, epochs: int | None) -> int:
    """Points :func:`linear_png` draws (for :func:`check_plot` before the fit)."""
    return n_samples * n_targets + 2 + (epochs or 0)


def logistic_plot_points(n_samples: int, n_features: int, epochs: int) -> int:
    """Points :func:`logistic_png` draws (for :func:`check_plot` before the fit)."""
    grid = GRID_STEPS * GRID_STEPS if n_features == 2 else 0
    return n_samples + grid + epochs


def check_plot(
    limits: Limits, points: int, budget: Budget | None = None, *, classes: int = 0
) -> None:
    """Refuse a figure of more than ``limits.max_plot_points`` points (413), before the fit,
    and charge its drawing to ``budget``: the points, and per class of a class-regions
    panel its scatter calls and contour level."""
    check_points(points, f"a PNG of {points:,} points", limits.max_plot_points)
    if budget is not None:
        what = f"drawing a PNG of {points:,} points"
        budget.charge_objects(points + classes, what)
        budget.charge_seconds(
            FIGURE_SECONDS + points * POINT_SECONDS + classes * CLASS_SECONDS, what
        )


def _number(value: float) -> str:
    return f"{value:.4g}"


def linear_panels(fit: LinearFit, x: torch.Tensor, y: torch.Tensor) -> list[Panel]:
    """The panels of :func:`linear_png`: the data and the line (one feature, one target) or
    the predicted against the actual values, then the loss curve of a ``gd`` fit."""
    y2 = y.reshape(y.shape[0], -1).to(torch.float64)
    train, test = fit.split.train, fit.split.test
    panels: list[Panel] = []
    if x.shape[1] == 1 and y2.shape[1] == 1:
        feature, target = fit.feature_names[0], fit.target_names[0]
        xs = x[:, 0].to(torch.float64)
        low, high = float(xs.min()), float(xs.max())
        ends = np.array([low, high])
        slope, intercept = float(fit.coef[0, 0]), float(fit.intercept[0])
        lines = [Line(xs[train].numpy(), y2[train, 0].numpy(), "bo", "train data")]
        if test.numel():
            lines.append(Line(xs[test].numpy(), y2[test, 0].numpy(), "g^", "test data"))
        lines.append(Line(ends, slope * ends + intercept, "r-", "fitted line"))
        title = f"{target} = {_number(slope)}·{feature} + {_number(intercept)}"
        if fit.pearson_r is not None:
            title += f"\nr = {fit.pearson_r:.3f}"
        panels.append(Panel(title, lines, xlabel=feature, ylabel=target))
    else:
        guess = fit.predictions
        actual_train, actual_test = y2[train].reshape(-1), y2[test].reshape(-1)
        lines = [Line(actual_train.numpy(), guess[train].reshape(-1).numpy(), "bo", "train")]
        if test.numel():
            lines.append(Line(actual_test.numpy(), guess[test].reshape(-1).numpy(), "g^", "test"))
        low, high = float(y2.min()), float(y2.max())
        lines.append(Line(np.array([low, high]), np.array([low, high]), "k--", "y = x"))
        r2 = fit.metrics.get("r2")
        title = "predicted vs actual" + ("" if r2 is None else f" (r2 = {r2:.3f})")
        target = ", ".join(fit.target_names)
        panels.append(Panel(title, lines, xlabel=f"actual {target}", ylabel=f"predicted {target}"))
    if fit.loss_history is not None:
        panels.append(_loss_panel(fit.loss_history, "MSE"))
    return panels


def linear_png(fit: LinearFit, x: torch.Tensor, y: torch.Tensor) -> bytes:
    """The fit's picture: ``x`` [n, d] and ``y`` [n] or [n, k], every sample; its panels
    (:func:`linear_panels`) side by side."""
    panels = linear_panels(fit, x, y)
    return line_panels(panels, columns=len(panels))


def _loss_panel(history: Sequence[float], what: str) -> Panel:
    epochs = np.arange(1, len(history) + 1)
    return Panel(
        "training loss",
        [Line(epochs, np.asarray(history, dtype=np.float64), "r-", what)],
        xlabel="epoch",
        ylabel=what,
    )


def logistic_png(
    fit: LogisticFit,
    x: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str] | None = None,
) -> bytes:
    """The fit's picture: ``x`` [n, d] and the class indices ``labels`` [n]; a dataset's
    ``class_names`` (what each integer label means) go into the legend."""
    if x.shape[1] != 2:
        return line_panels([_loss_panel(fit.loss_history, "log loss")], columns=1)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (slow import)
    from matplotlib.figure import Figure  # noqa: PLC0415

    x = x.to(torch.float64)
    grid = decision_regions(fit, x)
    grid_x, grid_y = grid.x.numpy(), grid.y.numpy()
    n_classes = len(fit.classes)
    width, height = BOUNDARY_PANEL_IN
    with RENDER_LOCK:
        figure = Figure(
            figsize=(width + PANEL_WIDTH_IN * height / PANEL_HEIGHT_IN, height),
            dpi=DPI,
            layout="constrained",
        )
        FigureCanvasAgg(figure)
        boundary, loss = figure.subplots(
            1, 2, gridspec_kw={"width_ratios": [width, PANEL_WIDTH_IN * height / PANEL_HEIGHT_IN]}
        )
        colors = [f"C{i % 10}" for i in range(n_classes)]
        boundary.contourf(
            grid_x,
            grid_y,
            grid.regions.numpy(),
            levels=np.arange(n_classes + 1) - 0.5,
            colors=colors,
            alpha=0.25,
        )
        if grid.positive is not None:
            positive = grid.positive.numpy()
            threshold = 0.5 if fit.threshold is None else fit.threshold
            if positive.min() < threshold < positive.max():
                boundary.contour(
                    grid_x,
                    grid_y,
                    positive,
                    levels=[threshold],
                    colors="k",
                    linestyles="--",
                )
        _scatter_classes(boundary, x, labels, fit, colors=colors, class_names=class_names)
        boundary.set_xlabel(fit.feature_names[0])
        boundary.set_ylabel(fit.feature_names[1])
        title = "decision regions"
        if n_classes == 2:
            title += f" (P > {fit.threshold:g})" if fit.threshold is not None else ""
        boundary.set_title(title)
        boundary.grid(visible=True)
        _draw_loss(loss, fit.loss_history)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def grid_axis(values: torch.Tensor) -> torch.Tensor:
    """:data:`GRID_STEPS` points over the range of ``values``, widened on each side by a
    tenth of its span (when the values are all equal, of their magnitude or 1, the larger),
    so that no sample sits on the panel's edge."""
    low, high = float(values.min()), float(values.max())
    span = high - low if high > low else max(abs(low), 1.0)
    return torch.linspace(low - 0.1 * span, high + 0.1 * span, GRID_STEPS, dtype=torch.float64)


@dataclass(frozen=True)
class DecisionRegions:
    """The fitted model evaluated on a grid over two features, each [GRID_STEPS, GRID_STEPS]:
    ``x`` and ``y`` the grid's coordinates (``indexing="xy"``: rows follow the second
    feature), ``regions`` the predicted class index, and for two classes ``positive``, the
    probability of ``classes[1]``."""

    x: torch.Tensor
    y: torch.Tensor
    regions: torch.Tensor
    positive: torch.Tensor | None


def decision_regions(fit: LogisticFit, x: torch.Tensor) -> DecisionRegions:
    """The class regions of a fit on two features over a grid spanning ``x`` [n, 2]."""
    xx, yy = (grid_axis(x[:, i].to(torch.float64)) for i in range(2))
    grid_x, grid_y = torch.meshgrid(xx, yy, indexing="xy")
    params = fit.params()
    logits = params.logits(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1))
    regions = params.decide(logits).reshape(grid_x.shape)
    positive = None
    if len(fit.classes) == 2:
        positive = params.proba(logits)[:, 1].reshape(grid_x.shape)
    return DecisionRegions(grid_x, grid_y, regions, positive)


def _legend_name(label: int | str, class_names: Sequence[str] | None) -> str:
    if class_names is not None and isinstance(label, int) and 0 <= label < len(class_names):
        return f"{label} ({class_names[label]})"
    return str(label)


def _scatter_classes(
    ax: Any,
    x: torch.Tensor,
    labels: torch.Tensor,
    fit: LogisticFit,
    *,
    colors: list[str],
    class_names: Sequence[str] | None,
) -> None:
    is_test = torch.zeros(x.shape[0], dtype=torch.bool)
    is_test[fit.split.test] = True
    names = [_legend_name(label, class_names) for label in fit.classes]
    for index, name in enumerate(names):
        marker = _MARKERS[index % len(_MARKERS)]
        for test in (False, True):
            chosen = (labels == index) & (is_test == test)
            if not bool(chosen.any()):
                continue
            ax.scatter(
                x[chosen, 0].numpy(),
                x[chosen, 1].numpy(),
                c=colors[index],
                marker=marker,
                s=18,
                edgecolors="k" if test else "none",
                label=name + (", test" if test else ""),
            )
    if len(fit.classes) <= 12:
        ax.legend(fontsize="small", loc=legend_location(len(x)))


def _draw_loss(ax: Any, history: Sequence[float]) -> None:
    ax.plot(np.arange(1, len(history) + 1), np.asarray(history, dtype=np.float64), "r-")
    ax.set_title("training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("log loss")
    ax.grid(visible=True)
