"""``POST /regress/linear``, ``/regress/logistic`` and ``/regress/predict`` without HTTP:
each request decoded and planned against the limits (``prepare_*``), then run
(``compute_*``) into the response's content or a picture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from schemas.regression import (
    LinearModel,
    LinearRegressionRequest,
    LogisticRegressionRequest,
    PredictRequest,
)
from service.limits import Deadline
from service.ops.context import ComputeContext
from service.ops.data.datasets import EncodedLabels, Table, check_wire_form, float64_wire
from service.ops.data.tables import Upload, load_table
from service.ops.regression.linear import (
    LinearOptions,
    fit_linear,
    plan_linear_fit,
    regression_targets,
)
from service.ops.regression.logistic import (
    LogisticOptions,
    check_classes,
    classification_labels,
    fit_logistic,
    plan_logistic_fit,
)
from service.ops.regression.metrics import strength
from service.ops.regression.params import (
    LinearParams,
    LogisticParams,
    charge_model,
    linear_params,
    logistic_params,
    plan_predict,
    prediction_input,
)
from service.ops.render.fits import (
    check_plot,
    linear_plot_points,
    linear_png,
    logistic_plot_points,
    logistic_png,
)
from service.ops.render.png import Png

# --- /regress/linear -------------------------------------------------------------------------


def linear_options(body: LinearRegressionRequest) -> LinearOptions:
    """The fit's options from the request: the ``gd`` options left out take their defaults."""
    defaults = LinearOptions()
    return LinearOptions(
        method=body.method,
        fit_intercept=body.fit_intercept,
        test_size=body.test_size,
        rcond=body.rcond,
        optimizer=body.optimizer or defaults.optimizer,
        epochs=body.epochs or defaults.epochs,
        lr=body.lr,
        batch_size=body.batch_size,
        standardize=defaults.standardize if body.standardize is None else body.standardize,
        seed=body.seed,
    )


@dataclass
class LinearRegressionPlan:
    """A linear fit's data and options, planned against the limits."""

    table: Table
    options: LinearOptions
    device: torch.device
    png: bool


def prepare_linear_regression(
    ctx: ComputeContext, body: LinearRegressionRequest, upload: Upload | None
) -> LinearRegressionPlan:
    """Load the data, and charge the fit (and its picture's points) to the limits."""
    options = linear_options(body)
    png = body.format == "png"
    table = load_table(ctx.limits, body, upload, text_target=False, budget=ctx.budget)
    y = regression_targets(table)
    targets = 1 if y.ndim == 1 else int(y.shape[1])
    plan_linear_fit(table.n_samples, table.n_features, targets, options, ctx.budget)
    if png:
        epochs = options.epochs if options.method == "gd" else None
        check_plot(ctx.limits, linear_plot_points(table.n_samples, targets, epochs), ctx.budget)
    return LinearRegressionPlan(table, options, ctx.device, png)


def compute_linear_regression(
    plan: LinearRegressionPlan, deadline: Deadline
) -> dict[str, Any] | Png:
    """Fit, then answer the model and its metrics, or the picture of the fit."""
    options = plan.options
    fit = fit_linear(plan.table, options, device=plan.device, deadline=deadline)
    if plan.png:
        return Png(linear_png(fit, plan.table.x, regression_targets(plan.table)))
    r = fit.pearson_r
    return {
        "model": fit.model(),
        "metrics": fit.metrics,
        "pearson_r": r,
        "correlation": None if r is None else strength(r),
        "correlations": fit.correlation_list(),
        "method": options.method,
        "n_train": int(fit.split.train.numel()),
        "n_test": int(fit.split.test.numel()),
        "epochs": fit.epochs,
        "loss_history": fit.loss_history,
    }


# --- /regress/logistic -----------------------------------------------------------------------


def logistic_options(body: LogisticRegressionRequest) -> LogisticOptions:
    """The fit's options from the request."""
    return LogisticOptions(
        optimizer=body.optimizer,
        epochs=body.epochs,
        lr=body.lr,
        batch_size=body.batch_size,
        l2=body.l2,
        tol=body.tol,
        standardize=body.standardize,
        fit_intercept=body.fit_intercept,
        threshold=body.threshold,
        test_size=body.test_size,
        seed=body.seed,
    )


@dataclass
class LogisticRegressionPlan:
    """A logistic fit's data, encoded labels and options, planned against the limits."""

    table: Table
    labels: EncodedLabels
    options: LogisticOptions
    device: torch.device
    png: bool
    max_classes: int


def prepare_logistic_regression(
    ctx: ComputeContext, body: LogisticRegressionRequest, upload: Upload | None
) -> LogisticRegressionPlan:
    """Load the data, encode its labels, check the classes, and charge the fit (and its
    picture's points) to the limits."""
    options = logistic_options(body)
    png = body.format == "png"
    table = load_table(ctx.limits, body, upload, text_target=True, budget=ctx.budget)
    labels = classification_labels(table, max_classes=ctx.limits.max_classes, budget=ctx.budget)
    check_classes(labels, options, ctx.limits.max_classes)
    plan_logistic_fit(table.n_samples, table.n_features, len(labels.classes), options, ctx.budget)
    if png:
        points = logistic_plot_points(table.n_samples, table.n_features, options.max_epochs)
        check_plot(ctx.limits, points, ctx.budget, classes=len(labels.classes))
    return LogisticRegressionPlan(table, labels, options, ctx.device, png, ctx.limits.max_classes)


def compute_logistic_regression(
    plan: LogisticRegressionPlan, deadline: Deadline
) -> dict[str, Any] | Png:
    """Fit, then answer the model and its metrics, or the picture of the fit."""
    fit = fit_logistic(
        plan.table,
        plan.labels,
        plan.options,
        device=plan.device,
        deadline=deadline,
        max_classes=plan.max_classes,
    )
    if plan.png:
        return Png(logistic_png(fit, plan.table.x, plan.labels.indices, plan.table.class_names))
    return {
        "model": fit.model(),
        "metrics": fit.metrics,
        "multinomial": fit.multinomial,
        "optimizer": plan.options.optimizer,
        "n_train": int(fit.split.train.numel()),
        "n_test": int(fit.split.test.numel()),
        "epochs": fit.epochs,
        "converged": fit.converged,
        "loss_history": fit.loss_history,
    }


# --- /regress/predict ------------------------------------------------------------------------


@dataclass
class PredictPlan:
    """A checked model and its input samples (float64 [n, d], on the CPU)."""

    params: LinearParams | LogisticParams
    x: torch.Tensor
    device: torch.device


def model_params(body: PredictRequest) -> LinearParams | LogisticParams:
    """The request's model, ready to predict (its shapes checked: 422 ``invalid_model``)."""
    model = body.model
    if isinstance(model, LinearModel):
        return linear_params(model.coef, model.intercept, model.features, model.targets)
    scaler = model.scaler
    return logistic_params(
        classes=model.classes,
        coef=model.coef,
        intercept=model.intercept,
        threshold=model.threshold,
        scaler_mean=None if scaler is None else scaler.mean,
        scaler_scale=None if scaler is None else scaler.scale,
        features=model.features,
    )


def prepare_predict(ctx: ComputeContext, body: PredictRequest) -> PredictPlan:
    """Check the model, decode ``x`` against it, and charge the predictions (and, for a
    logistic model, the label of each row)."""
    charge_model(body.model, ctx.budget)
    params = model_params(body)
    outputs = (
        int(params.coef.shape[0]) if isinstance(params, LinearParams) else 2 * len(params.classes)
    )
    check_wire_form(body.x.root, "x")
    x = prediction_input(ctx.decode(float64_wire(body.x.root), "x"), params.n_features)
    rows = int(x.shape[0])
    plan_predict(rows, params.n_features, outputs, ctx.budget)
    if isinstance(params, LogisticParams):
        ctx.budget.charge_objects(2 * rows, f"the labels of {rows:,} predictions")
    return PredictPlan(params, x, ctx.device)


def compute_predict(plan: PredictPlan, deadline: Deadline) -> dict[str, Any]:
    """The predictions: values (linear), or labels and probabilities (logistic)."""
    x = plan.x.to(plan.device)
    if isinstance(plan.params, LinearParams):
        return {"kind": "linear", "y": plan.params.predict(x), "proba": None}
    logits = plan.params.logits(x)
    chosen = plan.params.decide(logits).tolist()
    classes = plan.params.classes
    return {
        "kind": "logistic",
        "y": [classes[i] for i in chosen],
        "proba": plan.params.proba(logits),
    }
