"""``POST /regress/linear``, ``/regress/logistic`` and ``/regress/predict``: load the data,
plan the fit against the limits, fit in the compute thread, answer JSON or a PNG."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.datasets import CSV_FIELD
from schemas.regression import (
    LinearRegressionRequest,
    LinearRegressionResponse,
    LogisticRegressionRequest,
    LogisticRegressionResponse,
    PredictRequest,
    PredictResponse,
)
from service.api.compute import compute_context, run_compute
from service.api.events import streams, with_events
from service.api.forms import json_or_form_body, parse_body
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse, png_or_json
from service.api.routing import ORJSONRoute
from service.api.uploads import CSV_DOC, read_csv_upload
from service.deps import EncodingDep, settings_of
from service.ops.data.tables import prepare_on_loop
from service.ops.regression.handlers import (
    compute_linear_regression,
    compute_logistic_regression,
    compute_predict,
    prepare_linear_regression,
    prepare_logistic_regression,
    prepare_predict,
)

router = APIRouter(route_class=ORJSONRoute, tags=["regression"], responses=COMPUTE_ERRORS)


@router.post(
    "/regress/linear",
    operation_id="linear_regression",
    summary="Fit a linear regression",
    response_model=LinearRegressionResponse,
    response_class=FastJSONResponse,
    responses=with_events(png_or_json(LinearRegressionResponse, "the data with the fitted line")),
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
    settings = settings_of(request)
    body, files = await parse_body(request, LinearRegressionRequest, settings, {CSV_FIELD: 1})
    stream = streams(request, png=body.format == "png")
    ctx = compute_context(request, body.device)
    upload = await read_csv_upload(files, settings)
    return await run_compute(
        request,
        ctx,
        partial(prepare_linear_regression, body=body, upload=upload),
        compute_linear_regression,
        autograd=body.method == "gd",
        prepare_on_loop=prepare_on_loop(body, upload),
        prepare_in_worker=upload is not None,  # a CSV, parsed cell by cell
        inline_when_tiny=body.format != "png",  # a picture takes tens of milliseconds
        stream=stream,
    )


@router.post(
    "/regress/logistic",
    operation_id="logistic_regression",
    summary="Fit a logistic regression (binary or multinomial)",
    response_model=LogisticRegressionResponse,
    response_class=FastJSONResponse,
    responses=with_events(
        png_or_json(LogisticRegressionResponse, "the decision regions and the loss")
    ),
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
    settings = settings_of(request)
    body, files = await parse_body(request, LogisticRegressionRequest, settings, {CSV_FIELD: 1})
    stream = streams(request, png=body.format == "png")
    ctx = compute_context(request, body.device)
    upload = await read_csv_upload(files, settings)
    return await run_compute(
        request,
        ctx,
        partial(prepare_logistic_regression, body=body, upload=upload),
        compute_logistic_regression,
        autograd=True,
        prepare_on_loop=prepare_on_loop(body, upload),
        prepare_in_worker=upload is not None,  # a CSV, parsed cell by cell
        inline_when_tiny=body.format != "png",  # a picture takes tens of milliseconds
        stream=stream,
    )


@router.post(
    "/regress/predict",
    operation_id="predict",
    summary="Predict with a fitted model",
    response_model=PredictResponse,
    response_class=FastJSONResponse,
)
async def predict(
    body: PredictRequest, request: Request, encoding: EncodingDep = "json"
) -> Response:
    """Predictions of a `model` exactly as `POST /regress/linear` or `POST /regress/logistic`
    returned it, for the samples `x` (in the model's feature order). Nothing is stored on
    the server: the model travels in the request, and its shapes are checked (coef against
    the features, rows against the classes, the scaler's length) before use.

    Linear: `y` = x·coefᵀ + intercept. Logistic: `proba` (per class, the columns in the
    order of `classes`) and `y`, the labels: binary `classes[1]` when P > `threshold`, else
    the most probable class.
    """
    ctx = compute_context(request, body.device)
    prepare = partial(prepare_predict, body=body)
    return await run_compute(
        request, ctx, prepare, compute_predict, encoding=encoding, inline_when_tiny=True
    )
