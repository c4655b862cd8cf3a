"""The Open Inference Protocol (KServe V2, Triton's HTTP API) with its binary tensor data
extension: torchlab's stateless operations as models, so that Triton's and KServe's
clients call them unmodified."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from schemas.common import ErrorResponse
from schemas.v2 import (
    EXAMPLE_MODEL,
    EXTENSIONS,
    MODEL_VERSION,
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelConfigResponse,
    ModelListResponse,
    ModelMetadataResponse,
    ModelStatisticsResponse,
    ReadyResponse,
    ServerMetadataResponse,
)
from service import __version__
from service.api.binary import BINARY_MEDIA_TYPE
from service.api.compute import Stages, compute_context, run_compute
from service.api.forms import json_body_doc
from service.api.inference import InferMeta, encode_infer_response, infer_call, read_infer_request
from service.api.responses import (
    BINARY_RESPONSE_DOC,
    COMPUTE_ERRORS,
    FRAME_HEADER_DOC,
    READ_ERRORS,
    FastJSONResponse,
)
from service.api.routing import ORJSONRoute
from service.api.statistics import Statistics
from service.errors import FRAME_HEADER
from service.ops.v2.handlers import compute_infer, prepare_infer
from service.ops.v2.models import MODELS, find_model

router = APIRouter(route_class=ORJSONRoute, tags=["v2"], responses=READ_ERRORS)

ModelName = Annotated[
    str,
    Path(
        description="The model: an activation's name, or an operation's.",
        examples=[EXAMPLE_MODEL],
        openapi_examples={EXAMPLE_MODEL: {"value": EXAMPLE_MODEL}},
    ),
]
Version = Annotated[
    str,
    Path(
        description="The model's version: `1`.",
        examples=[MODEL_VERSION],
        openapi_examples={MODEL_VERSION: {"value": MODEL_VERSION}},
    ),
]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such model (or version)."},
    422: {"model": ErrorResponse, "description": "An invalid path parameter."},
}


@router.get("/v2", operation_id="v2_server_metadata", summary="Server metadata")
async def server_metadata() -> ServerMetadataResponse:
    """The server's name, version and protocol extensions: `binary_tensor_data`, and
    Triton's `model_configuration` and `statistics`."""
    return ServerMetadataResponse(name="torchlab", version=__version__, extensions=EXTENSIONS)


@router.get("/v2/health/live", operation_id="v2_live", summary="Liveness")
async def live() -> LiveResponse:
    """200 while the server answers."""
    return LiveResponse(live=True)


@router.get("/v2/health/ready", operation_id="v2_ready", summary="Readiness")
async def ready() -> ReadyResponse:
    """200 once the server serves inference requests (it does once it answers)."""
    return ReadyResponse(ready=True)


@router.get("/v2/models", operation_id="v2_models", summary="Every model")
async def models() -> ModelListResponse:
    """Every model with its metadata (torchlab's addition to the protocol)."""
    return ModelListResponse(models=[model.metadata() for model in MODELS.values()])


_STATS_DOC = (
    "Triton's statistics extension: counts and total nanoseconds of the inference requests "
    "since this server process started (each process of a scaled deployment counts its "
    "own). `success` splits into `compute_input` (reading the body, decoding and planning), "
    "`queue` (waiting for a compute slot), `compute_infer` (the operation) and "
    "`compute_output` (encoding the output until the response is ready), which add up to "
    "it; `fail` counts the requests refused or failed once the model was found."
)


def statistics_of(request: Request) -> Statistics:
    """The app's V2 statistics (made on first use)."""
    state = request.app.state
    statistics: Statistics | None = getattr(state, "v2_statistics", None)
    if statistics is None:
        statistics = state.v2_statistics = Statistics()
    return statistics


# Before /v2/models/{name}, which would take "stats" for a model's name.
@router.get(
    "/v2/models/stats",
    operation_id="v2_statistics",
    summary="Every model's statistics",
    description=_STATS_DOC,
)
async def statistics(request: Request) -> ModelStatisticsResponse:
    return statistics_of(request).response(list(MODELS))


@router.get(
    "/v2/models/{name}",
    operation_id="v2_model_metadata",
    summary="A model's metadata",
    responses=_NOT_FOUND,
)
async def model_metadata(name: ModelName) -> ModelMetadataResponse:
    """Inputs (named after torch's parameters; -1 is a free size), the output `output`, and
    the parameters the request's `parameters` may set."""
    return find_model(name).metadata()


@router.get(
    "/v2/models/{name}/versions/{version}",
    operation_id="v2_model_version_metadata",
    summary="A model version's metadata",
    responses=_NOT_FOUND,
)
async def model_version_metadata(name: ModelName, version: Version) -> ModelMetadataResponse:
    """As `GET /v2/models/{name}`; every model has the one version `1`."""
    return find_model(name, version).metadata()


@router.get(
    "/v2/models/{name}/ready",
    operation_id="v2_model_ready",
    summary="Whether a model is ready",
    responses=_NOT_FOUND,
)
async def model_ready(name: ModelName) -> ReadyResponse:
    """200 for every model (they need no loading), 404 for an unknown name."""
    find_model(name)
    return ReadyResponse(ready=True)


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    operation_id="v2_model_version_ready",
    summary="Whether a model version is ready",
    responses=_NOT_FOUND,
)
async def model_version_ready(name: ModelName, version: Version) -> ReadyResponse:
    """200 for version `1` of every model, 404 otherwise."""
    find_model(name, version)
    return ReadyResponse(ready=True)


@router.get(
    "/v2/models/{name}/config",
    operation_id="v2_model_config",
    summary="A model's configuration",
    responses=_NOT_FOUND,
)
async def model_config(name: ModelName) -> ModelConfigResponse:
    """Triton's model configuration extension: the model's `ModelConfig` in JSON, as
    Triton's clients read it (`get_model_config`). `max_batch_size` is 0: a batch is part of
    an input's shape, never added by the server."""
    return find_model(name).config()


@router.get(
    "/v2/models/{name}/versions/{version}/config",
    operation_id="v2_model_version_config",
    summary="A model version's configuration",
    responses=_NOT_FOUND,
)
async def model_version_config(name: ModelName, version: Version) -> ModelConfigResponse:
    """As `GET /v2/models/{name}/config`; every model has the one version `1`."""
    return find_model(name, version).config()


@router.get(
    "/v2/models/{name}/stats",
    operation_id="v2_model_statistics",
    summary="A model's statistics",
    description=_STATS_DOC,
    responses=_NOT_FOUND,
)
async def model_statistics(name: ModelName, request: Request) -> ModelStatisticsResponse:
    return statistics_of(request).response([find_model(name).name])


@router.get(
    "/v2/models/{name}/versions/{version}/stats",
    operation_id="v2_model_version_statistics",
    summary="A model version's statistics",
    description=_STATS_DOC,
    responses=_NOT_FOUND,
)
async def model_version_statistics(
    name: ModelName, version: Version, request: Request
) -> ModelStatisticsResponse:
    return statistics_of(request).response([find_model(name, version).name])


_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    **COMPUTE_ERRORS,
    200: {
        "description": "The protocol's response: JSON, or binary when asked for (its JSON, "
        "then the output's bytes).",
        "content": {BINARY_MEDIA_TYPE: BINARY_RESPONSE_DOC},
        "headers": {FRAME_HEADER: FRAME_HEADER_DOC},
    },
}
_INFER_BODY = json_body_doc(
    InferenceRequest,
    "JSON, or binary: the JSON (its length in the `Inference-Header-Content-Length` header) "
    "followed by the raw bytes of every input whose `parameters` hold `binary_data_size`, in "
    "the order of `inputs` (little-endian, C order).",
)


@router.post(
    "/v2/models/{name}/infer",
    operation_id="v2_infer",
    summary="Run a model",
    response_model=InferenceResponse,
    response_class=FastJSONResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
)
async def infer(name: ModelName, request: Request) -> Response:
    """The protocol's inference request, JSON or binary (the tensors' bytes after the
    JSON, `Inference-Header-Content-Length` giving its length; inputs with
    `parameters.binary_data_size`). The output comes in binary with `binary_data` on it or
    `binary_data_output` on the request. Same limits, devices and errors as every route."""
    return await _infer(request, name, None)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    operation_id="v2_infer_version",
    summary="Run a model version",
    response_model=InferenceResponse,
    response_class=FastJSONResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
)
async def infer_version(name: ModelName, version: Version, request: Request) -> Response:
    """As `POST /v2/models/{name}/infer`; every model has the one version `1`."""
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    model = find_model(name, version)
    record = statistics_of(request).of(model.name)
    begun = time.perf_counter_ns()
    stages = Stages()
    try:
        response = await _run_model(request, model.name, stages)
    except Exception:
        record.failed(begun)
        raise
    record.succeeded(begun, stages)
    return response


async def _run_model(request: Request, name: str, stages: Stages) -> Response:
    body = await read_infer_request(request)
    call = infer_call(body, name)
    ctx = compute_context(request, call.device)
    prepare = partial(prepare_infer, name=name, inputs=call.inputs, parameters=call.parameters)
    encode = partial(encode_infer_response, InferMeta(name, MODEL_VERSION, body.id))
    return await run_compute(
        request,
        ctx,
        prepare,
        compute_infer,
        encoding=call.encoding,
        encode=encode,
        inline_when_tiny=True,
        stages=stages,
    )
