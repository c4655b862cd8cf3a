"""``GET /datasets`` and ``POST /data/loader`` (chapter 7.1)."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.datasets import CSV_FIELD, DataLoaderRequest, DataLoaderResponse, DatasetsResponse
from service.api.compute import compute_context, run_compute
from service.api.forms import json_or_form_body, parse_body
from service.api.responses import COMPUTE_ERRORS, READ_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.api.uploads import CSV_DOC, read_csv_upload
from service.codec import dumps
from service.deps import EncodingDep, devices_of, settings_of
from service.ops.data.datasets import describe_datasets
from service.ops.data.handlers import compute_data_loader, prepare_data_loader
from service.ops.data.tables import prepare_on_loop

router = APIRouter(route_class=ORJSONRoute, tags=["data"])


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


@router.post(
    "/data/loader",
    operation_id="data_loader",
    summary="Batches through TensorDataset and DataLoader",
    response_model=DataLoaderResponse,
    response_class=FastJSONResponse,
    responses=COMPUTE_ERRORS,
    openapi_extra=json_or_form_body(DataLoaderRequest, {CSV_FIELD: CSV_DOC}),
)
async def data_loader(request: Request, encoding: EncodingDep = "json") -> Response:
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
    devices_of(request).resolve(body.device)  # checked; a DataLoader runs on the CPU
    upload = await read_csv_upload(files, settings)
    return await run_compute(
        request,
        compute_context(request, "cpu"),
        functools.partial(prepare_data_loader, body=body, upload=upload),
        compute_data_loader,
        encoding=encoding,
        body_bytes=None if upload is None else len(upload.data),
        prepare_on_loop=prepare_on_loop(body, upload),
        prepare_in_worker=upload is not None,  # a CSV, parsed cell by cell
        inline_when_tiny=True,
    )
