"""Service settings, read once from ``TORCHLAB_*`` environment variables and passed in.

Every limit of the service is a field of :class:`Limits` (``Settings.limits``), settable as
``TORCHLAB_<NAME>`` and listed whole by ``GET /info``. Limits that the OpenAPI document also
states (expression length, ...) default to the constant in ``schemas/`` that states it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.autograd import (
    MAX_EXPRESSION_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_EXPRESSION_NODES,
    MAX_HESSIAN_ELEMENTS,
)
from schemas.regression import MAX_CLASSES

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
ENV_PREFIX = "TORCHLAB_"


class Limits(BaseSettings):
    """What one request may ask of the service; each is checked before the work it bounds."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", use_attribute_docstrings=True
    )

    # Requests and compute
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    """Largest request body accepted, counted while it streams in (chunked bodies too)."""

    max_body_values: Annotated[int, Field(ge=1024)] = 1 << 18
    """Most values a large JSON body may hold outside its tensors (steps, inputs, names,
    parameters): the server builds each as an object. Counted by the worker process that
    reads a body over 1 MiB, before the server parses it."""

    max_body_lists: Annotated[int, Field(ge=1024)] = 1 << 22
    """Most lists and objects (``[`` and ``{``) a large JSON body may hold, tensors' rows
    included: reading one builds each as an object of 60 bytes or more, which empty rows
    (``[[],[],…]``, no elements) or rows of one value do not otherwise pay for. Counted by
    the worker process that reads a body over 1 MiB, before it parses it; larger tensors
    come as base64 or in the binary framing."""

    max_elements: Annotated[int, Field(ge=1)] = 1 << 25
    """Largest number of elements of any one tensor, input, intermediate or output."""

    max_total_elements: Annotated[int, Field(ge=1)] = 1 << 27
    """Largest number of elements summed over every tensor one request creates."""

    max_flops: Annotated[float, Field(gt=0)] = 2e12
    """Largest estimated number of floating-point operations one request may perform."""

    max_steps: Annotated[int, Field(ge=1)] = 64
    """Largest number of steps in a ``/tensor/ops`` program (4,096 at most, whatever this
    says: a program of more is a 422 before it is read)."""

    max_objects: Annotated[int, Field(ge=1)] = 1_000_000
    """Most things one request makes one by one: tensors a step returns, names per column,
    labels per class, batches, frames, points."""

    request_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """Compute time allowed per request; past it the answer is 504."""

    max_inflight_per_device: Annotated[int, Field(ge=1)] = 2
    """Compute requests running at once on each device; more wait in a queue."""

    queue_timeout_s: Annotated[float, Field(ge=0)] = 2.0
    """How long a request waits for a free compute slot before a 429 with ``Retry-After``."""

    max_response_bytes: Annotated[int, Field(ge=1024)] = 512 * 1024 * 1024
    """Largest response body, estimated from the tensors before they are encoded (JSON at
    each element's longest text), a PNG's size once drawn; past it a 413 suggests
    ``?encoding=b64`` or less data."""

    send_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """How long a response waits for the client to take it, whole (an event stream: its
    start, and each event); past it the response is given up and what it held (a compute
    slot, its body) is freed: a client that stops reading, or reads slowly, holds nothing
    for long."""

    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """How long a request's line and headers may take to arrive, from the connection's start
    (or, on a kept-alive connection, from the request's first byte): a connection whose head
    is late is answered 408 ``header_timeout`` and closed. Kept by the server's protocol
    (``uvicorn --http service.protocol:HeadTimedProtocol``, as ``make serve`` runs it)."""

    body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """How long a request's body may take to arrive, plus a second for every
    ``body_min_rate`` bytes of it that have: a client that sends it slower, or stops, is
    answered 408 ``body_timeout`` and what the request held is freed."""

    body_min_rate: Annotated[int, Field(ge=1)] = 64 * 1024
    """Bytes per second a request's body must keep up past its first ``body_timeout_s``."""

    max_inflight_body_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    """Most bytes of request bodies held at once. A body over 16 KiB is charged its
    ``Content-Length`` (a chunked one, ``max_body_bytes``) before a byte of it is read, until
    its request is answered; one that finds no room waits up to ``queue_timeout_s``, then is
    a 429 with ``Retry-After``. At least ``max_body_bytes``."""

    # Pictures and figures
    max_image_pixels: Annotated[int, Field(ge=1)] = 1 << 26
    """Largest picture accepted (width × height), read from its header before decoding."""

    max_png_pixels: Annotated[int, Field(ge=1)] = 1 << 25
    """Largest PNG the service draws (width × height), checked before drawing."""

    max_plot_points: Annotated[int, Field(ge=1)] = 1 << 20
    """Largest number of points drawn in one figure."""

    # Uploads
    max_archive_entries: Annotated[int, Field(ge=1)] = 10_000
    """Most entries in an uploaded zip, read from its directory before decompressing."""

    max_archive_entry_bytes: Annotated[int, Field(ge=1)] = 32 << 20
    """Largest decompressed size of one entry of an uploaded zip."""

    max_archive_bytes: Annotated[int, Field(ge=1)] = 256 << 20
    """Largest decompressed size of all the entries of an uploaded zip together."""

    max_csv_rows: Annotated[int, Field(ge=1)] = 1_000_000
    """Most data rows in an uploaded CSV."""

    max_csv_columns: Annotated[int, Field(ge=1)] = 10_000
    """Most columns in an uploaded CSV."""

    max_csv_bytes: Annotated[int, Field(ge=1)] = 64 * 1024 * 1024
    """Largest uploaded CSV file."""

    # Models and expressions
    max_classes: Annotated[int, Field(ge=2, le=MAX_CLASSES)] = MAX_CLASSES
    """Most classes of a classification (labels of a logistic fit or a dataset's target)."""

    max_expression_length: Annotated[int, Field(ge=1, le=MAX_EXPRESSION_LENGTH)] = (
        MAX_EXPRESSION_LENGTH
    )
    """Longest ``/grad`` expression, in characters."""

    max_expression_nodes: Annotated[int, Field(ge=1, le=MAX_EXPRESSION_NODES)] = (
        MAX_EXPRESSION_NODES
    )
    """Most syntax-tree nodes of a ``/grad`` expression."""

    max_expression_depth: Annotated[int, Field(ge=1, le=MAX_EXPRESSION_DEPTH)] = (
        MAX_EXPRESSION_DEPTH
    )
    """Deepest nesting of a ``/grad`` expression."""

    max_hessian_elements: Annotated[int, Field(ge=1)] = MAX_HESSIAN_ELEMENTS
    """Most elements of the inputs a ``/grad`` hessian is taken over, all together."""

    @model_validator(mode="after")
    def _room_for_a_body(self) -> Limits:
        if self.max_inflight_body_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_inflight_body_bytes ({self.max_inflight_body_bytes:,}) must be at least "
                f"max_body_bytes ({self.max_body_bytes:,}): a body of the largest size must fit"
            )
        return self


LIMIT_NAMES = frozenset(Limits.model_fields)


class Settings(BaseSettings):
    """Every limit and switch of the service. ``GET /info`` reports the limits in force.

    The limits may also be given flat, as keyword arguments (``Settings(max_elements=8)``):
    they go to :attr:`limits`, whose other fields keep their environment or defaults.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", use_attribute_docstrings=True
    )

    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    """Default compute device: ``auto`` picks ``cuda:0`` when CUDA is available, else ``cpu``."""

    limits: Limits = Field(default_factory=Limits)
    """Every limit (``TORCHLAB_MAX_ELEMENTS``, ...)."""

    calibration: dict[str, float] = {}
    """Fixed device rates instead of the start-up probe, as JSON: ``{"cpu/float32": 1e11,
    "cpu/float16": 1e9, "cpu/elements": 1e9}`` (FLOP/s of a matrix multiply per dtype,
    elements per second of a memory-bound pass)."""

    api_keys: Annotated[list[str], NoDecode] = []
    """Accepted API keys, comma-separated; empty means no authentication."""

    cors_origins: Annotated[list[str], NoDecode] = []
    """Origins allowed by CORS, comma-separated (``*`` for any); empty disables CORS."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of the service's logs, the access log included."""

    opentelemetry: bool = False
    """FastAPI's own OpenTelemetry spans, metrics and logs of each request, sent to the
    providers of an OpenTelemetry SDK set up in the process (``opentelemetry-instrument``,
    or ``FASTAPI_OTEL_AUTO_CONFIGURE=true``). Off, no request pays FastAPI's check for such
    providers; the Prometheus metrics at ``/metrics`` are kept either way."""

    isolate: bool = True
    """Run compute in worker processes, which are killed at the request's deadline; false
    runs it in threads of the server's process, which finish their work past a deadline."""

    worker_spares: Annotated[int, Field(ge=0)] = 1
    """Worker processes per device started ahead of need, to replace one killed at once."""

    worker_max_rss_bytes: Annotated[int, Field(ge=1 << 20)] = 4 << 30
    """Resident memory past which a worker process is replaced between requests."""

    worker_max_memory_bytes: Annotated[int, Field(ge=0)] = 0
    """Private memory (heap and anonymous mappings) a CPU compute worker may take beyond
    what it holds at rest; an allocation past it fails and the request is answered 503
    ``device_out_of_memory``. 0: three quarters of the host's memory (its cgroup's limit in a
    container) shared among the processes that may compute at once
    (``max_inflight_per_device`` and the two body workers), and at least four times
    ``max_response_bytes`` (room to encode the largest answer)."""

    worker_threads: Annotated[int, Field(ge=0)] = 0
    """torch's threads in each worker process; 0 keeps torch's default (one per core)."""

    @model_validator(mode="before")
    @classmethod
    def _gather_limits(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        flat = {key: values[key] for key in LIMIT_NAMES if key in values}
        if not flat:
            return values
        rest = {key: value for key, value in values.items() if key not in flat}
        given = rest.get("limits")
        if isinstance(given, Limits):
            rest["limits"] = given.model_copy(update=flat)
        else:
            rest["limits"] = Limits(**{**(given or {}), **flat})
        return rest

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
