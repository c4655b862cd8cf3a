"""``GET /datasets`` and ``POST /data/loader`` (chapter 7.1), and where every fit's data
comes from: a built-in dataset, ``x``/``y`` tensors, or an uploaded CSV."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import APIRouter, Request
from starlette.responses import Response
from torch.utils.data import DataLoader, TensorDataset

from schemas.datasets import CSV_FIELD, DataLoaderRequest, DataLoaderResponse, DatasetsResponse
from service.api.compute import run_compute_legacy
from service.api.forms import json_or_form_body, parse_body
from service.api.responses import COMPUTE_ERRORS, READ_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.api.uploads import CSV_DOC, read_csv_upload
from service.codec import DTYPE_NAMES, dumps
from service.deps import EncodingDep, devices_of, settings_of
from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline
from service.ops.context import make_generator
from service.ops.data.datasets import (
    Table,
    describe_datasets,
    encode_labels,
)
from service.ops.data.tables import load_table, prepare_on_loop
from service.ops.regression.fits import regression_targets

router = APIRouter(route_class=ORJSONRoute, tags=["data"])

SAMPLE_OVERHEAD_FLOPS = 1e4
"""Charged per sample the loader fetches: TensorDataset and the collate work sample by
sample in Python (microseconds each), which the element count alone would not bound."""


# --- GET /datasets ---------------------------------------------------------------------------


@functools.cache
def _listing() -> bytes:
    return dumps({"datasets": describe_datasets()})


@router.get(
    "/datasets",
    operation_id="datasets",
    summary="List the built-in datasets",
    response_model=DatasetsResponse,
    response_class=FastJSONResponse,
    responses=READ_ERRORS,
)
def datasets() -> Response:
    """Every built-in dataset: name, task, sample and feature counts, feature and target
    names, classes, and what it is. All ship with the installed packages: `exam` is the
    tutorial's chapter 2 data, written out in torchlab; the others are scikit-learn's bundled
    datasets (`diabetes` stands in for the tutorial's Boston housing, which scikit-learn
    removed). `sample_images` is a dataset of pictures, for `POST /data/images`."""
    return FastJSONResponse(_listing())


# --- POST /data/loader -----------------------------------------------------------------------


@dataclass(frozen=True)
class _LoaderPlan:
    dataset: TensorDataset
    table: Table
    task: str
    classes: list[int] | list[str] | None
    budget: Budget


def _task(body: DataLoaderRequest, table: Table) -> str:
    if body.task is not None:
        return body.task
    if table.task in ("regression", "classification"):
        return table.task
    if table.labels is not None:
        return "classification"
    if table.y is not None and not table.y.is_floating_point():
        return "classification"
    return "regression"


def _class_targets(table: Table) -> tuple[torch.Tensor, list[int] | list[str] | None]:
    """int64 targets: integer labels as they are, string labels as class indices."""
    if table.labels is not None:
        encoded = encode_labels(table)
        return encoded.indices, encoded.classes
    assert table.y is not None
    y = table.y
    if y.is_floating_point() and not bool((y == torch.round(y)).all()):
        raise InvalidInput(
            "task classification needs integer (or string) labels; these targets are not "
            "whole numbers (use task regression)",
            code=ErrorCode.LABELS_NOT_INTEGERS,
        )
    if y.is_floating_point() and y.numel() and float(y.abs().max()) >= 2**63:
        raise InvalidInput("labels must fit int64", code=ErrorCode.LABELS_NOT_INTEGERS)
    return y.to(torch.int64), None


@router.post(
    "/data/loader",
    operation_id="data_loader",
    summary="Batches through TensorDataset and DataLoader",
    response_model=DataLoaderResponse,
    response_class=FastJSONResponse,
    responses=COMPUTE_ERRORS,
    openapi_extra=json_or_form_body(DataLoaderRequest, {CSV_FIELD: CSV_DOC}),
)
async def data_loader(request: Request, encoding: EncodingDep = "json") -> FastJSONResponse:
    """The tutorial's chapter 7.1: features as float32 and targets as float32 (regression)
    or int64 (classification), `TensorDataset(x, y)`, and a `DataLoader` with `batch_size`,
    `shuffle` and `drop_last`; the first `max_batches` batches are described (shapes), and
    with `include_data` returned.

    The tutorial's cases: `{"dataset": "iris", "batch_size": 10, "shuffle": true}` gives
    x [10, 4] float32 and y [10] int64; `{"dataset": "diabetes", "task": "regression",
    "batch_size": 64}` x [64, 10] float32 and y [64] float32. Shuffling draws from a
    generator seeded with `seed`, so a seed always gives the same batches. The loader runs
    on the CPU, as a DataLoader does (`device` is checked, and the response says `cpu`).
    """
    settings = settings_of(request)
    body, files = await parse_body(request, DataLoaderRequest, settings, {CSV_FIELD: 1})
    devices_of(request).resolve(body.device)
    upload = await read_csv_upload(files, settings)

    def prepare() -> _LoaderPlan:
        text_target = body.task != "regression"
        table = load_table(settings.limits, body, upload, text_target=text_target)
        task = _task(body, table)
        x = table.x.to(torch.float32)
        classes = None
        tensors = [x]
        if table.has_targets:
            if task == "regression":
                tensors.append(regression_targets(table).to(torch.float32))
            else:
                y, classes = _class_targets(table)
                tensors.append(y)
        for tensor, what in zip(tensors, ("x", "y"), strict=False):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise InvalidInput(
                    f"{what} holds values beyond float32's range (±3.4e38), the loader's dtype",
                    code=ErrorCode.VALUES_TOO_LARGE,
                )
        n, d = table.n_samples, table.n_features
        budget = Budget.from_settings(settings)
        for tensor, what in zip(tensors, ("x (float32)", "y"), strict=False):
            budget.charge_tensor(tensor.numel(), what)
        listed = min(n, body.max_batches * body.batch_size)
        if body.include_data:
            budget.charge_tensor(listed * (d + 1), "the listed batches' data")
        budget.charge_flops(listed * SAMPLE_OVERHEAD_FLOPS, f"fetching {listed:,} samples")
        # The sample indices travel with the batches, so that include_data can name them.
        dataset = TensorDataset(*tensors, torch.arange(n))
        return _LoaderPlan(dataset, table, task, classes, budget)

    def compute(plan: _LoaderPlan, deadline: Deadline) -> dict[str, Any]:
        loader = DataLoader(
            plan.dataset,
            batch_size=body.batch_size,
            shuffle=body.shuffle,
            drop_last=body.drop_last,
            generator=make_generator(body.seed),
        )
        has_y = len(plan.dataset.tensors) == 3
        batches = []
        for index, batch in enumerate(loader):
            if index >= body.max_batches:
                break
            deadline.check()
            x, indices = batch[0], batch[-1]
            y = batch[1] if has_y else None
            entry: dict[str, Any] = {
                "index": index,
                "x_shape": list(x.shape),
                "y_shape": None if y is None else list(y.shape),
            }
            if body.include_data:
                entry.update({"x": x, "y": y, "indices": indices.tolist()})
            batches.append(entry)
        tensors = plan.dataset.tensors
        return {
            "dataset": plan.table.name,
            "task": plan.task,
            "n_samples": plan.table.n_samples,
            "n_features": plan.table.n_features,
            "features": list(plan.table.feature_names),
            "targets": list(plan.table.target_names) if has_y else [],
            "classes": plan.classes,
            "x_dtype": DTYPE_NAMES[tensors[0].dtype],
            "y_dtype": DTYPE_NAMES[tensors[1].dtype] if has_y else None,
            "batch_size": body.batch_size,
            "n_batches": len(loader),
            "batches": batches,
        }

    cpu = torch.device("cpu")
    content = await run_compute_legacy(
        request,
        cpu,
        prepare,
        compute,
        encoding=encoding,
        budget=lambda plan: plan.budget,
        cheap_to_prepare=prepare_on_loop(body, upload),
    )
    return FastJSONResponse(content)
