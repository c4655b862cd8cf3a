"""``POST /regress/linear``, ``/regress/logistic`` and ``/regress/predict``: load the data,
plan the fit against the limits, fit in the compute thread, answer JSON or a PNG."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.datasets import CSV_FIELD
from schemas.regression import (
    LinearModel,
    LinearRegressionRequest,
    LinearRegressionResponse,
    LogisticRegressionRequest,
    LogisticRegressionResponse,
    PredictRequest,
    PredictResponse,
)
from service.api.compute import run_compute_legacy
from service.api.forms import json_or_form_body, parse_body
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse, png_or_json, png_response
from service.api.routing import ORJSONRoute
from service.api.uploads import CSV_DOC, read_csv_upload
from service.codec import decode_tensor
from service.deps import EncodingDep, devices_of, settings_of
from service.limits import Budget, Deadline
from service.ops.data.datasets import EncodedLabels, Table, check_wire_form, float64_wire
from service.ops.data.tables import load_table, prepare_on_loop
from service.ops.regression.fits import (
    LinearOptions,
    LinearParams,
    LogisticOptions,
    LogisticParams,
    check_classes,
    classification_labels,
    fit_linear,
    fit_logistic,
    linear_params,
    logistic_params,
    plan_linear_fit,
    plan_logistic_fit,
    plan_predict,
    prediction_input,
    regression_targets,
    strength,
)
from service.ops.render.fits import (
    check_plot,
    linear_plot_points,
    linear_png,
    logistic_plot_points,
    logistic_png,
)

router = APIRouter(route_class=ORJSONRoute, tags=["regression"], responses=COMPUTE_ERRORS)


@dataclass(frozen=True)
class _FitPlan:
    table: Table
    budget: Budget
    labels: EncodedLabels | None = None


def _inline_budget(png: bool) -> Callable[[_FitPlan], Budget | None]:
    """The budget :func:`run_compute` judges a plan tiny by; none for a picture, which takes
    tens of milliseconds to draw and so never runs on the event loop."""
    return (lambda plan: None) if png else (lambda plan: plan.budget)


def _linear_options(body: LinearRegressionRequest) -> LinearOptions:
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


@router.post(
    "/regress/linear",
    operation_id="linear_regression",
    summary="Fit a linear regression",
    response_model=LinearRegressionResponse,
    response_class=FastJSONResponse,
    responses=png_or_json(LinearRegressionResponse, "the data with the fitted line"),
    openapi_extra=json_or_form_body(LinearRegressionRequest, {CSV_FIELD: CSV_DOC}),
)
async def linear_regression(request: Request) -> Response:
    """Chapter 2: fit y ≈ x·coef + intercept to a `dataset`, to `x` and `y`, or to an
    uploaded CSV (`file`, with `target` naming its target column).

    `lstsq` (default) solves the least-squares problem in closed form in float64 with
    `torch.linalg.lstsq` (SVD-based): scikit-learn's `LinearRegression` gives the same
    coefficients. `gd` trains an `nn.Linear` on the MSE with SGD or Adam for `epochs`, as a
    tutorial writes it, and returns the `loss_history`. Metrics r2, MSE and MAE come for the
    training and (with `test_size`) the test samples; with one feature, `pearson_r` and the
    tutorial's `correlation` strength (weak < 0.3 ≤ moderate < 0.6 ≤ strong).

    The tutorial's example is `{"dataset": "exam"}`; add `"format": "png"` for its figure,
    hours on x and score on y. The returned `model` goes to `POST /regress/predict` as it is.
    """
    settings, devices = settings_of(request), devices_of(request)
    body, files = await parse_body(request, LinearRegressionRequest, settings, {CSV_FIELD: 1})
    device = devices.resolve(body.device)
    upload = await read_csv_upload(files, settings)
    options = _linear_options(body)
    png = body.format == "png"

    def prepare() -> _FitPlan:
        table = load_table(settings.limits, body, upload, text_target=False)
        y = regression_targets(table)
        targets = 1 if y.ndim == 1 else int(y.shape[1])
        budget = Budget.from_settings(settings)
        plan_linear_fit(table.n_samples, table.n_features, targets, options, budget)
        if png:
            epochs = options.epochs if options.method == "gd" else None
            check_plot(linear_plot_points(table.n_samples, targets, epochs))
        return _FitPlan(table, budget)

    def compute(plan: _FitPlan, deadline: Deadline) -> dict[str, Any] | bytes:
        fit = fit_linear(plan.table, options, device=device, deadline=deadline)
        if png:
            return linear_png(fit, plan.table.x, regression_targets(plan.table))
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

    content = await run_compute_legacy(
        request,
        device,
        prepare,
        compute,
        autograd=options.method == "gd",
        budget=_inline_budget(png),
        cheap_to_prepare=prepare_on_loop(body, upload),
    )
    return png_response(content) if png else FastJSONResponse(content)


def _logistic_options(body: LogisticRegressionRequest) -> LogisticOptions:
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


@router.post(
    "/regress/logistic",
    operation_id="logistic_regression",
    summary="Fit a logistic regression (binary or multinomial)",
    response_model=LogisticRegressionResponse,
    response_class=FastJSONResponse,
    responses=png_or_json(LogisticRegressionResponse, "the decision regions and the loss"),
    openapi_extra=json_or_form_body(LogisticRegressionRequest, {CSV_FIELD: CSV_DOC}),
)
async def logistic_regression(request: Request) -> Response:
    """Chapter 4: a linear score of the features, mapped to a probability, then a class.

    Two classes: P(classes[1]) = sigmoid(x·coef + intercept), and the class is `classes[1]`
    when P > `threshold` (default 0.5), else `classes[0]`. More classes: the softmax of one
    score per class, and the most probable class. Labels may be integers or strings; the
    model's `classes` maps the indices back. The loss is the mean log loss + l2/2·‖coef‖²,
    minimised by L-BFGS on the whole training set (default) or by SGD/Adam epochs, on
    standardised features (the scaler is part of the model). Metrics: accuracy, log loss,
    confusion matrix and per-class precision and recall, on the training and test samples.
    """
    settings, devices = settings_of(request), devices_of(request)
    body, files = await parse_body(request, LogisticRegressionRequest, settings, {CSV_FIELD: 1})
    device = devices.resolve(body.device)
    upload = await read_csv_upload(files, settings)
    options = _logistic_options(body)
    png = body.format == "png"

    def prepare() -> _FitPlan:
        table = load_table(settings.limits, body, upload, text_target=True)
        labels = classification_labels(table)
        check_classes(labels, options)
        budget = Budget.from_settings(settings)
        plan_logistic_fit(table.n_samples, table.n_features, len(labels.classes), options, budget)
        if png:
            check_plot(logistic_plot_points(table.n_samples, table.n_features, options.max_epochs))
        return _FitPlan(table, budget, labels)

    def compute(plan: _FitPlan, deadline: Deadline) -> dict[str, Any] | bytes:
        assert plan.labels is not None
        fit = fit_logistic(plan.table, plan.labels, options, device=device, deadline=deadline)
        if png:
            return logistic_png(fit, plan.table.x, plan.labels.indices, plan.table.class_names)
        return {
            "model": fit.model(),
            "metrics": fit.metrics,
            "multinomial": fit.multinomial,
            "optimizer": options.optimizer,
            "n_train": int(fit.split.train.numel()),
            "n_test": int(fit.split.test.numel()),
            "epochs": fit.epochs,
            "converged": fit.converged,
            "loss_history": fit.loss_history,
        }

    content = await run_compute_legacy(
        request,
        device,
        prepare,
        compute,
        autograd=True,
        budget=_inline_budget(png),
        cheap_to_prepare=prepare_on_loop(body, upload),
    )
    return png_response(content) if png else FastJSONResponse(content)


@dataclass(frozen=True)
class _PredictPlan:
    params: LinearParams | LogisticParams
    x: torch.Tensor
    budget: Budget


@router.post(
    "/regress/predict",
    operation_id="predict",
    summary="Predict with a fitted model",
    response_model=PredictResponse,
    response_class=FastJSONResponse,
)
async def predict(
    body: PredictRequest, request: Request, encoding: EncodingDep = "json"
) -> FastJSONResponse:
    """Predictions of a `model` exactly as `POST /regress/linear` or `POST /regress/logistic`
    returned it, for the samples `x` (in the model's feature order). Nothing is stored on
    the server: the model travels in the request, and its shapes are checked (coef against
    the features, rows against the classes, the scaler's length) before use.

    Linear: `y` = x·coefᵀ + intercept. Logistic: `proba` (per class, the columns in the
    order of `classes`) and `y`, the labels: binary `classes[1]` when P > `threshold`, else
    the most probable class.
    """
    settings, devices = settings_of(request), devices_of(request)
    device = devices.resolve(body.device)
    model = body.model

    def prepare() -> _PredictPlan:
        params: LinearParams | LogisticParams
        if isinstance(model, LinearModel):
            params = linear_params(model.coef, model.intercept, model.features, model.targets)
            outputs = int(params.coef.shape[0])
        else:
            scaler = model.scaler
            params = logistic_params(
                classes=model.classes,
                coef=model.coef,
                intercept=model.intercept,
                threshold=model.threshold,
                scaler_mean=None if scaler is None else scaler.mean,
                scaler_scale=None if scaler is None else scaler.scale,
                features=model.features,
            )
            outputs = 2 * len(model.classes)
        check_wire_form(body.x.root, "x")
        x = decode_tensor(
            float64_wire(body.x.root), max_elements=settings.limits.max_elements, where="x"
        )
        x = prediction_input(x, params.n_features)
        budget = Budget.from_settings(settings)
        plan_predict(int(x.shape[0]), params.n_features, outputs, budget)
        return _PredictPlan(params, x, budget)

    def compute(plan: _PredictPlan, deadline: Deadline) -> dict[str, Any]:
        x = plan.x.to(device)
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

    content = await run_compute_legacy(
        request, device, prepare, compute, encoding=encoding, budget=lambda plan: plan.budget
    )
    return FastJSONResponse(content)
