"""The activation figure of ``POST /activate`` (tutorial chapter 6.3): one panel per
function, titled with its ``torch.nn`` class name, ``y`` in red and, with derivatives,
``dy/dx`` dashed blue, over x flattened and sorted."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from service.limits import Budget
from service.ops.nn.binding import BoundActivation
from service.ops.nn.evaluation import Evaluation
from service.ops.render.plots import Line, Panel, check_figure, check_points, line_panels


def activation_plot_points(functions: int, inputs: int, *, derivative: bool) -> int:
    """Points the figure of ``functions`` panels over ``inputs`` values of x draws: one line
    per panel, two with the derivative."""
    return inputs * (2 if derivative else 1) * functions


def check_activation_plot(
    functions: int, inputs: int, *, derivative: bool, max_points: int
) -> None:
    """Refuse (413 ``plot_points_limit``) a figure over ``max_points`` points, before any
    function is evaluated."""
    lines = 2 if derivative else 1
    check_points(
        activation_plot_points(functions, inputs, derivative=derivative),
        f"a PNG of {functions} panels of {lines} × {inputs:,} points",
        max_points,
    )


def charge_activation_plot(
    budget: Budget,
    functions: int,
    inputs: int,
    *,
    derivative: bool,
    columns: int | None,
    max_points: int,
    max_pixels: int,
) -> None:
    """Refuse a figure over ``max_points`` points (413 ``plot_points_limit``) or
    ``max_pixels`` pixels (413 ``png_pixels_limit``), and charge its drawing: each panel and
    each point, and sorting x."""
    check_activation_plot(functions, inputs, derivative=derivative, max_points=max_points)
    points = activation_plot_points(functions, inputs, derivative=derivative)
    what = f"a PNG of {functions} panels of {inputs:,} points"
    budget.charge_elementwise(inputs * max(1, math.ceil(math.log2(max(inputs, 2)))), what)
    check_figure(budget, functions, points, what, columns=columns, max_pixels=max_pixels)


def activation_panels(
    functions: Sequence[BoundActivation], x: torch.Tensor, evaluations: Sequence[Evaluation]
) -> list[Panel]:
    """One panel per function, x flattened and sorted (a line plot over x)."""
    flat = x.detach().cpu().reshape(-1).to(torch.float64)
    order = torch.argsort(flat, stable=True)
    xs = flat[order].numpy()

    def along(values: torch.Tensor) -> np.ndarray:
        return values.detach().cpu().reshape(-1).to(torch.float64)[order].numpy()

    panels = []
    for bound, result in zip(functions, evaluations, strict=True):
        if result.dydx is None:
            lines = [Line(xs, along(result.y), "r-")]
        else:
            lines = [
                Line(xs, along(result.y), "r-", "y"),
                Line(xs, along(result.dydx), "b--", "dy/dx"),
            ]
        panels.append(Panel(bound.title, lines))
    return panels


def activation_figure(
    functions: Sequence[BoundActivation],
    x: torch.Tensor,
    evaluations: Sequence[Evaluation],
    *,
    columns: int | None = None,
) -> bytes:
    """The PNG of :func:`activation_panels`, ``columns`` panels per row (default: up to four)."""
    return line_panels(activation_panels(functions, x, evaluations), columns=columns)
