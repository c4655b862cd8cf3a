"""The Open Inference Protocol (KServe V2, Triton's HTTP/REST API): its models and the
names its binary tensor data extension uses, shared by every route that takes tensors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from schemas.common import DTYPE_SCHEMA, MAX_TENSORS, Int, StrictModel, shape_schema, values_schema

MAX_SHAPE_ITEMS = 64
"""Sizes of an input's shape that are validated, at most: the codec refuses more than 8
(422 ``too_many_dims``), this keeps a long list of them from being read one by one."""

ResponseEncoding = Literal["json", "b64", "binary"]
"""How a response carries its tensors: JSON lists, base64, or the binary data extension."""

BINARY_EXTENSION = "binary_tensor_data"
"""The extension's name in the server metadata (``GET /v2``)."""
CONFIG_EXTENSION = "model_configuration"
"""Triton's extension: ``GET /v2/models/{name}/config``."""
STATISTICS_EXTENSION = "statistics"
"""Triton's extension: ``GET /v2/models[/{name}[/versions/{version}]]/stats``."""
EXTENSIONS = [BINARY_EXTENSION, CONFIG_EXTENSION, STATISTICS_EXTENSION]
"""The protocol extensions the server metadata lists."""
OUTPUT_NAME = "output"
"""The one output of every model."""
MODEL_VERSION = "1"
EXAMPLE_MODEL = "relu"
"""The model the documentation's examples call."""
"""The one version of every model (the operations do not change between requests)."""
IGNORED_PARAMETERS = frozenset(
    {
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "priority",
        "timeout",
        "headers",
        "binary_data_output",
        "device",
    }
)
"""Request parameters that are not the model's: Triton's reserved ones (also any name that
starts with ``triton_``), which stateless operations have no use for, and ``device``."""


class ServerMetadataResponse(BaseModel):
    """``GET /v2``: who the server is and which protocol extensions it has."""

    name: str = Field(description="The server's name.", examples=["torchlab"])
    version: str = Field(description="The server's version.", examples=["0.1.0"])
    extensions: list[str] = Field(
        description="Protocol extensions: binary tensor data, and Triton's model "
        "configuration and statistics.",
        examples=[EXTENSIONS],
    )


class LiveResponse(BaseModel):
    """``GET /v2/health/live``: the server answers (always true with a 200)."""

    live: bool = Field(description="True: the server is up.", examples=[True])


class ReadyResponse(BaseModel):
    """``GET /v2/health/ready`` and ``GET /v2/models/{name}/ready``."""

    ready: bool = Field(description="True: requests are served.", examples=[True])


class MetadataTensor(BaseModel):
    """An input or output of a model."""

    name: str = Field(description="The tensor's name (torch's parameter name).", examples=["input"])
    datatype: str = Field(
        description="The protocol's dtype name. Floating models declare FP32 and also take "
        "FP16, BF16 and FP64 (the output has the input's dtype).",
        examples=["FP32"],
    )
    shape: list[int] = Field(description="Sizes; -1 is a free size.", examples=[[-1, -1]])
    optional: bool = Field(
        default=False, description="Whether the input may be left out.", examples=[False]
    )


class ModelParameter(BaseModel):
    """A request parameter a model takes (in the request's ``parameters``)."""

    name: str = Field(description="torch's parameter name.", examples=["negative_slope"])
    type: str = Field(description="What a value is, in words.", examples=["a number"])
    default: Any = Field(
        default=None, description="torch's default; null when it must be given.", examples=[0.01]
    )
    description: str = Field(default="", description="What it does.")


class ModelMetadataResponse(BaseModel):
    """``GET /v2/models/{name}``: a model's inputs, outputs and parameters."""

    name: str = Field(description="The model's name: torch's function name.", examples=["relu"])
    versions: list[str] = Field(description="Its versions.", examples=[[MODEL_VERSION]])
    platform: str = Field(description="What runs it.", examples=["pytorch"])
    description: str = Field(default="", description="What it computes.")
    inputs: list[MetadataTensor] = Field(description="Its inputs, named after torch's.")
    outputs: list[MetadataTensor] = Field(description=f"Its one output, `{OUTPUT_NAME}`.")
    parameters: list[ModelParameter] = Field(
        default_factory=list, description="Request parameters it takes (torchlab's addition)."
    )


class ModelListResponse(BaseModel):
    """``GET /v2/models`` (torchlab's addition to the protocol): every model."""

    models: list[ModelMetadataResponse] = Field(description="Every model, as its metadata.")


class RequestInput(StrictModel):
    """An input tensor of an inference request."""

    name: str = Field(description="The input's name.", examples=["input"])
    shape: list[Int] = Field(
        max_length=MAX_SHAPE_ITEMS,
        fail_fast=True,
        description="Its sizes.",
        examples=[[2, 2]],
        json_schema_extra=shape_schema(),
    )
    datatype: str = Field(
        description="BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, BF16, FP32 or FP64 (torch's "
        "names are accepted too); BYTES is not supported (a 400 `unsupported_datatype`).",
        examples=["FP32"],
        json_schema_extra=DTYPE_SCHEMA,
    )
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="`binary_data_size`: the tensor's bytes follow the JSON (binary data "
        "extension; the request then has the `Inference-Header-Content-Length` header).",
    )
    data: Any = Field(
        default=None,
        description="The values, flat in row-major order (or nested); absent when the tensor "
        'is binary. Non-finite floats are "NaN", "Infinity", "-Infinity".',
        examples=[[1.0, -2.0, 3.0, -4.0]],
        json_schema_extra=values_schema(),
    )


class RequestOutput(StrictModel):
    """An output asked for, and how."""

    name: str = Field(description=f"`{OUTPUT_NAME}`.", examples=[OUTPUT_NAME])
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="`binary_data`: true for the output's bytes after the JSON.",
        examples=[{"binary_data": True}],
    )


class InferenceRequest(StrictModel):
    """``POST /v2/models/{name}/infer``: the protocol's inference request."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [2, 2],
                            "datatype": "FP32",
                            "data": [1.0, -2.0, 3.0, -4.0],
                        }
                    ]
                }
            ]
        }
    }

    id: str | None = Field(default=None, description="Echoed in the response.")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="The model's parameters (see its metadata), `device` (`cpu`, `cuda:0`, "
        "...) and `binary_data_output` (true: every output in binary); Triton's reserved "
        "parameters are accepted and ignored.",
        examples=[{"negative_slope": 0.1}],
    )
    inputs: list[RequestInput] = Field(
        max_length=MAX_TENSORS, fail_fast=True, description="The input tensors, by name."
    )
    outputs: (
        Annotated[list[RequestOutput], Field(max_length=MAX_TENSORS, fail_fast=True)] | None
    ) = Field(default=None, description=f"The outputs asked for (default: `{OUTPUT_NAME}`).")


class ResponseOutput(BaseModel):
    """An output tensor of an inference response."""

    name: str = Field(description="Its name.", examples=[OUTPUT_NAME])
    shape: list[int] = Field(description="Its sizes.", examples=[[2, 2]])
    datatype: str = Field(description="Its dtype, by the protocol's name.", examples=["FP32"])
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_size` when its bytes follow the JSON."
    )
    data: Any = Field(
        default=None,
        description='Flat values in row-major order (non-finite floats as "NaN", "Infinity", '
        '"-Infinity"); absent when binary.',
        examples=[[1.0, 0.0, 3.0, 0.0]],
    )


class InferenceResponse(BaseModel):
    """The protocol's inference response."""

    model_name: str = Field(description="The model.", examples=["relu"])
    model_version: str = Field(description="Its version.", examples=[MODEL_VERSION])
    id: str | None = Field(default=None, description="The request's id, when it had one.")
    parameters: dict[str, Any] = Field(
        description="`device` (where it ran) and `elapsed_ms` (compute time).",
        examples=[{"device": "cpu", "elapsed_ms": 0.05}],
    )
    outputs: list[ResponseOutput] = Field(description="The output tensors.")


# -- Triton's model configuration extension ---------------------------------------------------


class ConfigInput(BaseModel):
    """An input in a model configuration (Triton's ``ModelInput``)."""

    name: str = Field(description="The input's name.", examples=["input"])
    data_type: str = Field(description="Triton's type name.", examples=["TYPE_FP32"])
    format: str = Field(default="FORMAT_NONE", description="No image format.")
    dims: list[int] = Field(description="Sizes; -1 is a free size.", examples=[[-1]])
    is_shape_tensor: bool = Field(default=False, description="Never a shape tensor.")
    allow_ragged_batch: bool = Field(default=False, description="No batching.")
    optional: bool = Field(default=False, description="Whether the input may be left out.")


class ConfigOutput(BaseModel):
    """An output in a model configuration (Triton's ``ModelOutput``)."""

    name: str = Field(description="The output's name.", examples=[OUTPUT_NAME])
    data_type: str = Field(
        description="Triton's type name (the output has the input's dtype).",
        examples=["TYPE_FP32"],
    )
    dims: list[int] = Field(description="Sizes; -1 is a free size.", examples=[[-1]])
    label_filename: str = Field(default="", description="No labels.")
    is_shape_tensor: bool = Field(default=False, description="Never a shape tensor.")


class ModelConfigResponse(BaseModel):
    """``GET /v2/models/{name}/config``: the model's configuration, as Triton writes its
    ``ModelConfig`` (``model_config.proto``) in JSON."""

    name: str = Field(description="The model's name.", examples=["relu"])
    platform: str = Field(description="What runs it.", examples=["pytorch"])
    backend: str = Field(description="What runs it.", examples=["pytorch"])
    version_policy: dict[str, Any] = Field(
        description="One version: the latest.", examples=[{"latest": {"num_versions": 1}}]
    )
    max_batch_size: int = Field(
        description="0: the dims are whole shapes, with no batch dimension added by the "
        "server (a batch is part of the input's shape).",
        examples=[0],
    )
    input: list[ConfigInput] = Field(description="Its inputs.")
    output: list[ConfigOutput] = Field(description="Its one output.")


# -- Triton's statistics extension -------------------------------------------------------------


class DurationStat(BaseModel):
    """A count and a total time."""

    count: int = Field(description="How many times it was measured.", examples=[3])
    ns: int = Field(description="The total time in nanoseconds.", examples=[1_250_000])


class InferenceStats(BaseModel):
    """Where the time of a model's inference requests went."""

    success: DurationStat = Field(
        description="Requests answered: from the route's start (the body unread) until the "
        "response was ready to send."
    )
    fail: DurationStat = Field(
        description="Requests refused or failed (4xx, 5xx) once the model was found, until "
        "the error."
    )
    queue: DurationStat = Field(
        description="Waiting for a compute slot of the device (0 for a tiny plan, which runs "
        "at once)."
    )
    compute_input: DurationStat = Field(
        description="Reading the body, decoding the inputs and planning the work."
    )
    compute_infer: DurationStat = Field(description="Running the operation.")
    compute_output: DurationStat = Field(
        description="Encoding the output and handing it back to the server (from the end "
        "of the computation to the response ready)."
    )
    cache_hit: DurationStat = Field(description="Always 0: there is no response cache.")
    cache_miss: DurationStat = Field(description="Always 0: there is no response cache.")


class ModelStats(BaseModel):
    """A model's statistics since this server process started."""

    name: str = Field(description="The model.", examples=["relu"])
    version: str = Field(description="Its version.", examples=[MODEL_VERSION])
    last_inference: int = Field(
        description="When its last request ended, in milliseconds since the epoch; 0 if none has.",
        examples=[1764489600000],
    )
    inference_count: int = Field(description="Requests answered.", examples=[3])
    execution_count: int = Field(
        description="Executions: one per request answered (no batching).", examples=[3]
    )
    inference_stats: InferenceStats = Field(description="Where their time went.")
    batch_stats: list[dict[str, Any]] = Field(
        default_factory=list, description="Empty: requests are not batched together."
    )


class ModelStatisticsResponse(BaseModel):
    """``GET /v2/models/stats`` and the forms for one model: per-model statistics."""

    model_stats: list[ModelStats] = Field(description="One entry per model (and version).")
