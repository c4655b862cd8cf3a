"""The layer :class:`~torchlab_client.Client` and :class:`~torchlab_client.AsyncClient`
share: configuration, one request builder per route, the response parsers and the retry
policy. Nothing here does I/O; the two clients only send what it builds and sleep between
tries.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import httpx
import numpy as np

from torchlab_client._codec import (
    EncodeStats,
    decode_loose,
    decode_optional,
    decode_tensor,
    is_wire_tensor,
    require_torch,
    to_json_values,
)
from torchlab_client._exceptions import (
    APIError,
    ProtocolError,
    error_from_response,
    parse_retry_after,
)
from torchlab_client._images import (
    FileInput,
    ImageInput,
    PNGImage,
    Upload,
    archive_upload,
    csv_upload,
    image_upload,
)
from torchlab_client._types import (
    ActivationFunction,
    ActivationList,
    ActivationResult,
    ActivationResults,
    Batch,
    BenchmarkResult,
    ConvResult,
    DatasetInfo,
    DeviceInfo,
    DeviceTiming,
    GradResult,
    Health,
    ImageBatch,
    ImagesResult,
    LinearLayerResult,
    LinearRegressionResult,
    LoaderResult,
    LogisticRegressionResult,
    PoolResult,
    Prediction,
    RegressionModel,
    RNNResult,
    ServiceInfo,
)
from torchlab_client._version import __version__

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_B64_THRESHOLD = 4096
"""Request tensors of more bytes than this go as base64 (see ``b64_threshold``)."""

ResponseEncoding: TypeAlias = Literal["auto", "json", "b64"]
TensorInput: TypeAlias = Any
"""A numpy array, a torch tensor, a nested list of numbers, or a number."""
ModelInput: TypeAlias = (
    "RegressionModel | LinearRegressionResult | LogisticRegressionResult | Mapping[str, Any]"
)
TimeoutTypes: TypeAlias = float | httpx.Timeout | None


@dataclass(frozen=True)
class Retry:
    """When and how long to wait before trying a request again.

    A request is retried up to ``total`` times after a 429 or 503 answer (``statuses``) or
    a connection error, never after a 4xx validation error, a 413 or a 504. The wait is
    the answer's ``Retry-After`` when it has one (an answer asking for more than
    ``max_retry_after`` seconds is raised at once), else ``backoff_factor · 2^attempt``
    seconds, at most ``max_backoff``, plus up to ``jitter`` of itself at random.
    """

    total: int = 2
    backoff_factor: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    statuses: frozenset[int] = frozenset({429, 503})
    jitter: float = 0.1
    respect_retry_after: bool = True

    def backoff(self, attempt: int) -> float:
        """The wait before retry number ``attempt + 1`` when the answer gave no hint."""
        delay = min(self.max_backoff, self.backoff_factor * 2.0**attempt)
        return delay * (1 + random.uniform(0, self.jitter)) if self.jitter else delay  # noqa: S311

    def after_response(self, error: APIError, attempt: int) -> float | None:
        """Seconds to wait before retrying after an error answer, or None to raise it."""
        if attempt >= self.total or error.status_code not in self.statuses:
            return None
        if self.respect_retry_after and error.response is not None:
            hint = parse_retry_after(error.response.headers.get("retry-after"))
            if hint is not None:
                return hint if hint <= self.max_retry_after else None
        return self.backoff(attempt)

    def after_exception(self, exc: httpx.TransportError, attempt: int) -> float | None:
        """Seconds to wait before retrying after a connection error, or None to raise it.

        Connection failures and dropped connections are retried (torchlab's routes are
        pure functions of the request); the client's own read timeout is not, since the
        service is still computing.
        """
        retryable = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
        if attempt >= self.total or not isinstance(exc, retryable):
            return None
        return self.backoff(attempt)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, built but not sent, and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    content: bytes | None = None
    form: dict[str, str] | None = None
    files: list[tuple[str, Upload]] | None = None
    params: dict[str, str] = field(default_factory=dict)


def _drop_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _shape_of(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    try:
        return tuple(int(s) for s in np.shape(value))
    except (ValueError, TypeError):
        return None


def _last_dim(value: Any) -> int | None:
    shape = _shape_of(value)
    return shape[-1] if shape else None


def _json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise ProtocolError(
            f"{response.request.method} {response.request.url.path}: the answer is not JSON "
            f"({response.headers.get('content-type')})"
        ) from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _png(response: httpx.Response) -> PNGImage:
    if not response.headers.get("content-type", "").startswith("image/png"):
        raise ProtocolError(
            f"expected image/png, got {response.headers.get('content-type')}: "
            f"{response.content[:200]!r}"
        )
    return PNGImage(response.content, dict(response.headers))


def _float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value)
    return float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _shape(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(s) for s in value)


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _regression_model(value: Any, as_torch: bool) -> RegressionModel:
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a model object, got {value!r:.200}")
    classes = value.get("classes")
    scaler = value.get("scaler")
    return RegressionModel(
        kind=str(value.get("kind", "")),
        coef=decode_loose(value.get("coef"), as_torch),
        intercept=decode_loose(value.get("intercept"), as_torch),
        features=_strings(value.get("features")) or None,
        targets=_strings(value.get("targets")) or None,
        classes=list(classes) if isinstance(classes, list) else None,
        threshold=_float(value.get("threshold")),
        scaler=dict(scaler) if isinstance(scaler, dict) else None,
        raw=value,
    )


def _model_json(model: ModelInput) -> dict[str, Any]:
    if isinstance(model, LinearRegressionResult | LogisticRegressionResult):
        return model.model.raw
    if isinstance(model, RegressionModel):
        return model.raw
    if isinstance(model, Mapping):
        inner = model.get("model")
        return dict(inner) if isinstance(inner, Mapping) else dict(model)
    raise TypeError(f"expected a fitted model or a fit's result, got {type(model).__name__}")


class BaseClient:
    """Configuration and the request building and answer parsing both clients share."""

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        *,
        api_key: str | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        retries: int | Retry = 2,
        headers: Mapping[str, str] | None = None,
        b64_threshold: int = DEFAULT_B64_THRESHOLD,
        response_encoding: ResponseEncoding = "auto",
        as_torch: bool = False,
    ) -> None:
        self.base_url = httpx.URL(
            str(base_url or os.environ.get("TORCHLAB_URL") or DEFAULT_BASE_URL).rstrip("/")
        )
        self.api_key = api_key if api_key is not None else os.environ.get("TORCHLAB_API_KEY")
        self.timeout = timeout
        self.retry = retries if isinstance(retries, Retry) else Retry(total=retries)
        if self.retry.total < 0:
            raise ValueError("retries must be >= 0")
        if b64_threshold < 0:
            raise ValueError("b64_threshold must be >= 0")
        if response_encoding not in ("auto", "json", "b64"):
            raise ValueError("response_encoding must be 'auto', 'json' or 'b64'")
        self.b64_threshold = b64_threshold
        self.response_encoding: ResponseEncoding = response_encoding
        self.as_torch = as_torch
        self.headers: dict[str, str] = {"User-Agent": f"torchlab-client/{__version__}"}
        if headers:
            self.headers.update(headers)
        if self.api_key:
            self.headers.setdefault("Authorization", f"Bearer {self.api_key}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self.base_url)!r})"

    # --- building ------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _torch(self, as_torch: bool | None) -> bool:
        wanted = self.as_torch if as_torch is None else as_torch
        if wanted:
            require_torch()
        return wanted

    def _encoding(self, large: bool) -> dict[str, str]:
        """The query asking for base64 tensors: always with ``response_encoding="b64"``,
        never with ``"json"``; with ``"auto"`` when the answer is likely large (the request
        sent base64 tensors or a picture)."""
        if self.response_encoding == "b64" or (self.response_encoding == "auto" and large):
            return {"encoding": "b64"}
        return {}

    def _json_call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any],
        parse: Callable[[httpx.Response], T],
        *,
        tensors: bool = True,
        large_output: bool = False,
        png: bool = False,
    ) -> Call[T]:
        stats = EncodeStats()
        wire = to_json_values(_drop_none(body), self.b64_threshold, stats)
        content = json.dumps(wire, allow_nan=False, separators=(",", ":")).encode()
        large = large_output or stats.b64_tensors > 0
        params = {} if png or not tensors else self._encoding(large)
        return Call(method, path, parse, content=content, params=params)

    def _form_call(
        self,
        path: str,
        fields: Mapping[str, Any],
        files: list[tuple[str, Upload]],
        parse: Callable[[httpx.Response], T],
        *,
        png: bool = False,
    ) -> Call[T]:
        form: dict[str, str] = {}
        for name, value in _drop_none(fields).items():
            if isinstance(value, str):
                form[name] = value  # a plain value: the service reads words as they are
            else:
                wire = to_json_values(value, self.b64_threshold)
                form[name] = json.dumps(wire, allow_nan=False, separators=(",", ":"))
        params = {} if png else self._encoding(True)
        return Call("POST", path, parse, form=form, files=files, params=params)

    def _get(self, path: str, parse: Callable[[httpx.Response], T]) -> Call[T]:
        return Call("GET", path, parse)

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]
    ) -> httpx.Request:
        headers = {"Accept": "application/json, image/png", **self.headers}
        if call.content is not None:
            headers["Content-Type"] = "application/json"
        return http.build_request(
            call.method,
            self._url(call.path),
            content=call.content,
            data=call.form,
            files=call.files,
            params=call.params or None,
            headers=headers,
            timeout=self.timeout,
        )

    @staticmethod
    def _finish(call: Call[T], response: httpx.Response) -> T:
        if response.is_success:
            return call.parse(response)
        raise error_from_response(response)

    # --- system --------------------------------------------------------------------------

    def _health(self) -> Call[Health]:
        return self._get("/health", lambda r: Health(str(_json_body(r).get("status"))))

    def _info(self) -> Call[ServiceInfo]:
        def parse(response: httpx.Response) -> ServiceInfo:
            body = _json_body(response)
            return ServiceInfo(
                name=body["name"],
                version=body["version"],
                torch_version=body["torch_version"],
                torchvision_version=body.get("torchvision_version"),
                cuda_available=bool(body["cuda_available"]),
                cpu_threads=int(body["cpu_threads"]),
                default_device=body["default_device"],
                devices=[
                    DeviceInfo(**{k: v for k, v in d.items() if k in _DEVICE_FIELDS})
                    for d in body.get("devices", [])
                ],
                limits=dict(body.get("limits", {})),
                auth_required=bool(body.get("auth_required", False)),
            )

        return self._get("/info", parse)

    def _metrics(self) -> Call[str]:
        return self._get("/metrics", lambda r: r.text)

    def _openapi(self) -> Call[dict[str, Any]]:
        return self._get("/openapi.json", _json_body)

    def _benchmark(self, fields: Mapping[str, Any]) -> Call[BenchmarkResult]:
        def parse(response: httpx.Response) -> BenchmarkResult:
            body = _json_body(response)
            return BenchmarkResult(
                torch_version=body["torch_version"],
                cuda_available=bool(body["cuda_available"]),
                m=int(body["m"]),
                k=int(body["k"]),
                n=int(body["n"]),
                dtype=body["dtype"],
                flops_per_run=int(body["flops_per_run"]),
                results=[
                    DeviceTiming(**{k: v for k, v in item.items() if k in _TIMING_FIELDS})
                    for item in body["results"]
                ],
                max_norm_rel_diff=_float(body.get("max_norm_rel_diff")),
                device=body["device"],
                elapsed_ms=float(body["elapsed_ms"]),
            )

        return self._json_call("POST", "/benchmark", fields, parse, tensors=False)

    # --- tensors and autograd ------------------------------------------------------------

    def _tensor_ops(
        self,
        steps: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        inputs: Mapping[str, TensorInput] | None,
        returns: str | Sequence[str] | None,
        *,
        device: str | None,
        seed: int | None,
        as_torch: bool | None,
    ) -> Call[dict[str, Any]]:
        wants_torch = self._torch(as_torch)
        step_list = [steps] if isinstance(steps, Mapping) else list(steps)
        names = [returns] if isinstance(returns, str) else returns

        def parse(response: httpx.Response) -> dict[str, Any]:
            outputs = _json_body(response).get("outputs")
            if not isinstance(outputs, dict):
                raise ProtocolError("the answer has no 'outputs'")
            return {
                name: decode_tensor(value, wants_torch) if is_wire_tensor(value) else value
                for name, value in outputs.items()
            }

        body = {
            "inputs": dict(inputs) if inputs else None,
            "steps": step_list,
            "return": list(names) if names is not None else None,
            "device": device,
            "seed": seed,
        }
        return self._json_call("POST", "/tensor/ops", body, parse)

    def _grad(
        self,
        expression: str,
        wrt: str | Sequence[str] | None,
        hessian: bool,
        *,
        inputs: Mapping[str, TensorInput],
        device: str | None,
        seed: int | None,
        as_torch: bool | None,
    ) -> Call[GradResult]:
        wants_torch = self._torch(as_torch)

        def parse(response: httpx.Response) -> GradResult:
            body = _json_body(response)
            hessians = body.get("hessians")
            return GradResult(
                value=decode_tensor(body["value"], wants_torch),
                grads={k: decode_tensor(v, wants_torch) for k, v in body["grads"].items()},
                hessians=None
                if hessians is None
                else {
                    a: {b: decode_tensor(v, wants_torch) for b, v in row.items()}
                    for a, row in hessians.items()
                },
                device=body["device"],
                elapsed_ms=float(body["elapsed_ms"]),
            )

        body = {
            "expression": expression,
            "inputs": dict(inputs),
            "wrt": [wrt] if isinstance(wrt, str) else (None if wrt is None else list(wrt)),
            "hessian": True if hessian else None,
            "device": device,
            "seed": seed,
        }
        return self._json_call("POST", "/grad", body, parse)

    # --- activations and layers ----------------------------------------------------------

    @staticmethod
    def _activate_body(
        functions: str | Sequence[str | Mapping[str, Any]] | None,
        x: TensorInput | None,
        *,
        x_range: tuple[float, float, int] | Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        dim: int | None,
        derivative: bool,
        device: str | None,
        seed: int | None,
    ) -> dict[str, Any]:
        if isinstance(x_range, tuple | list):
            start, end, steps = x_range
            x_range = {"start": start, "end": end, "steps": steps}
        return {
            "function": functions if isinstance(functions, str) else None,
            "functions": None
            if functions is None or isinstance(functions, str)
            else [f if isinstance(f, str) else dict(f) for f in functions],
            "x": x,
            "range": None if x_range is None else dict(x_range),
            "params": None if params is None else dict(params),
            "dim": dim,
            "derivative": True if derivative else None,
            "device": device,
            "seed": seed,
        }

    def _activate(self, body: dict[str, Any], as_torch: bool | None) -> Call[ActivationResults]:
        wants_torch = self._torch(as_torch)

        def parse(response: httpx.Response) -> ActivationResults:
            answer = _json_body(response)
            return ActivationResults(
                results=[
                    ActivationResult(
                        function=item["function"],
                        params=dict(item.get("params") or {}),
                        x=decode_tensor(item["x"], wants_torch),
                        y=decode_tensor(item["y"], wants_torch),
                        dydx=decode_optional(item.get("dydx"), wants_torch),
                    )
                    for item in answer["results"]
                ],
                device=answer["device"],
                elapsed_ms=float(answer["elapsed_ms"]),
            )

        return self._json_call("POST", "/activate", body, parse)

    def _activate_png(self, body: dict[str, Any], columns: int | None) -> Call[PNGImage]:
        return self._json_call(
            "POST", "/activate", {**body, "format": "png", "columns": columns}, _png, png=True
        )

    def _list_activations(self) -> Call[ActivationList]:
        def parse(response: httpx.Response) -> ActivationList:
            body = _json_body(response)
            return ActivationList(
                functions=[
                    ActivationFunction(**{k: v for k, v in item.items() if k in _ACTIVATION_FIELDS})
                    for item in body["functions"]
                ],
                default_functions=list(body.get("default_functions", [])),
                default_range=dict(body.get("default_range", {})),
                max_functions=int(body.get("max_functions", 0)),
                max_plot_points=int(body.get("max_plot_points", 0)),
            )

        return self._get("/activate", parse)

    def _linear_layer(
        self,
        input: TensorInput,
        in_features: int | None,
        out_features: int | None,
        *,
        bias: bool | None,
        weight: TensorInput | None,
        bias_values: TensorInput | None,
        device: str | None,
        seed: int | None,
        as_torch: bool | None,
    ) -> Call[LinearLayerResult]:
        wants_torch = self._torch(as_torch)
        if in_features is None:
            in_features = _last_dim(input)
        if out_features is None and weight is not None:
            shape = _shape_of(weight)
            out_features = shape[0] if shape else None

        def parse(response: httpx.Response) -> LinearLayerResult:
            body = _json_body(response)
            return LinearLayerResult(
                output=decode_tensor(body["output"], wants_torch),
                weight=decode_tensor(body["weight"], wants_torch),
                bias=decode_optional(body.get("bias"), wants_torch),
                device=body["device"],
                elapsed_ms=float(body["elapsed_ms"]),
            )

        body = {
            "in_features": in_features,
            "out_features": out_features,
            "bias": bias,
            "input": input,
            "weight": weight,
            "bias_values": bias_values,
            "device": device,
            "seed": seed,
        }
        return self._json_call("POST", "/layers/linear", body, parse)

    def _rnn(self, fields: dict[str, Any], as_torch: bool | None) -> Call[RNNResult]:
        wants_torch = self._torch(as_torch)
        if fields.get("input_size") is None:
            fields["input_size"] = _last_dim(fields["input"])
        if fields.get("hidden_size") is None and fields.get("h0") is not None:
            fields["hidden_size"] = _last_dim(fields["h0"])
        if fields.get("weights") is not None:
            fields["weights"] = dict(fields["weights"])

        def parse(response: httpx.Response) -> RNNResult:
            body = _json_body(response)
            weights = body.get("weights")
            return RNNResult(
                output=decode_tensor(body["output"], wants_torch),
                h_n=decode_tensor(body["h_n"], wants_torch),
                c_n=decode_optional(body.get("c_n"), wants_torch),
                parameters={k: tuple(v) for k, v in body.get("parameters", {}).items()},
                weights=None
                if weights is None
                else {k: decode_tensor(v, wants_torch) for k, v in weights.items()},
                device=body["device"],
                elapsed_ms=float(body["elapsed_ms"]),
            )

        return self._json_call("POST", "/layers/rnn", fields, parse)

    # --- vision --------------------------------------------------------------------------

    def _picture_call(
        self,
        path: str,
        image: ImageInput | None,
        fields: dict[str, Any],
        parse: Callable[[httpx.Response], T],
        *,
        png: bool,
    ) -> Call[T]:
        """An image goes as the upload ``image`` with the other fields as form fields; a
        tensor (``input``) as JSON."""
        if png:
            fields = {**fields, "format": "png"}
        if image is not None:
            if fields.get("input") is not None:
                raise ValueError("give `image` or `input`, not both")
            return self._form_call(path, fields, [("image", image_upload(image))], parse, png=png)
        if fields.get("input") is None:
            raise ValueError("give an `image` (a picture) or an `input` (a tensor)")
        return self._json_call("POST", path, fields, parse, large_output=True, png=png)

    def _conv(
        self, image: ImageInput | None, fields: dict[str, Any], as_torch: bool | None
    ) -> Call[ConvResult]:
        wants_torch = self._torch(as_torch)

        def parse(response: httpx.Response) -> ConvResult:
            body = _json_body(response)
            return ConvResult(
                output=decode_tensor(body["output"], wants_torch),
                weight=decode_optional(body.get("weight"), wants_torch),
                bias=decode_optional(body.get("bias"), wants_torch),
                kernels=_strings(body.get("kernels")),
                input_shape=_shape(body.get("input_shape")),
                conv_shape=_shape(body.get("conv_shape")),
                device=body.get("device"),
                elapsed_ms=_float(body.get("elapsed_ms")),
                raw=body,
            )

        return self._picture_call("/conv", image, fields, parse, png=False)

    def _pool(
        self, image: ImageInput | None, fields: dict[str, Any], as_torch: bool | None
    ) -> Call[PoolResult]:
        wants_torch = self._torch(as_torch)

        def parse(response: httpx.Response) -> PoolResult:
            body = _json_body(response)
            return PoolResult(
                output=decode_tensor(body["output"], wants_torch),
                input_shape=_shape(body.get("input_shape")),
                device=body.get("device"),
                elapsed_ms=_float(body.get("elapsed_ms")),
                raw=body,
            )

        return self._picture_call("/pool", image, fields, parse, png=False)

    def _vision_png(
        self, path: str, image: ImageInput | None, fields: dict[str, Any]
    ) -> Call[PNGImage]:
        return self._picture_call(path, image, fields, _png, png=True)

    # --- regression and data -------------------------------------------------------------

    def _data_call(
        self,
        path: str,
        fields: dict[str, Any],
        csv: FileInput | None,
        parse: Callable[[httpx.Response], T],
        *,
        png: bool = False,
    ) -> Call[T]:
        """A CSV goes as the upload ``file`` with the other fields as form fields; arrays
        (``x``, ``y``) or a dataset name as JSON."""
        if png:
            fields = {**fields, "format": "png"}
        if csv is not None:
            if fields.get("x") is not None or fields.get("dataset") is not None:
                raise ValueError("give `csv`, or `x` and `y`, or `dataset`: one of them")
            return self._form_call(path, fields, [("file", csv_upload(csv))], parse, png=png)
        return self._json_call("POST", path, fields, parse, png=png)

    def _linear_regression(
        self, fields: dict[str, Any], csv: FileInput | None, as_torch: bool | None
    ) -> Call[LinearRegressionResult]:
        wants_torch = self._torch(as_torch)

        def parse(response: httpx.Response) -> LinearRegressionResult:
            body = _json_body(response)
            correlations = body.get("correlations")
            return LinearRegressionResult(
                model=_regression_model(body.get("model"), wants_torch),
                metrics=dict(body.get("metrics") or {}),
                pearson_r=_float(body.get("pearson_r")),
                correlation=body.get("correlation"),
                correlations=list(correlations) if isinstance(correlations, list) else [],
                method=body.get("method"),
                n_train=_int(body.get("n_train")),
                n_test=_int(body.get("n_test")),
                epochs=_int(body.get("epochs")),
                loss_history=decode_loose(body.get("loss_history"), wants_torch),
                device=body.get("device"),
                elapsed_ms=_float(body.get("elapsed_ms")),
                raw=body,
            )

        return self._data_call("/regress/linear", fields, csv, parse)

    def _logistic_regression(
        self, fields: dict[str, Any], csv: FileInput | None, as_torch: bool | None
    ) -> Call[LogisticRegressionResult]:
        wants_torch = self._torch(as_torch)

        def parse(response: httpx.Response) -> LogisticRegressionResult:
            body = _json_body(response)
            multinomial = body.get("multinomial")
            converged = body.get("converged")
            return LogisticRegressionResult(
                model=_regression_model(body.get("model"), wants_torch),
                metrics=dict(body.get("metrics") or {}),
                multinomial=None if multinomial is None else bool(multinomial),
                optimizer=body.get("optimizer"),
                n_train=_int(body.get("n_train")),
                n_test=_int(body.get("n_test")),
                epochs=_int(body.get("epochs")),
                converged=None if converged is None else bool(converged),
                loss_history=decode_loose(body.get("loss_history"), wants_torch),
                device=body.get("device"),
                elapsed_ms=_float(body.get("elapsed_ms")),
                raw=body,
            )

        return self._data_call("/regress/logistic", fields, csv, parse)

    def _regression_png(
        self, path: str, fields: dict[str, Any], csv: FileInput | None
    ) -> Call[PNGImage]:
        return self._data_call(path, fields, csv, _png, png=True)

    def _predict(
        self, model: ModelInput, x: TensorInput, device: str | None, as_torch: bool | None
    ) -> Call[Prediction]:
        wants_torch = self._torch(as_torch)

        def parse(response: httpx.Response) -> Prediction:
            body = _json_body(response)
            return Prediction(
                kind=body.get("kind"),
                y=decode_loose(body.get("y"), wants_torch),
                proba=decode_loose(body.get("proba"), wants_torch),
                device=body.get("device"),
                elapsed_ms=_float(body.get("elapsed_ms")),
                raw=body,
            )

        body = {"model": _model_json(model), "x": x, "device": device}
        return self._json_call("POST", "/regress/predict", body, parse)

    def _datasets(self) -> Call[list[DatasetInfo]]:
        def parse(response: httpx.Response) -> list[DatasetInfo]:
            body = _json_body(response)
            items = body.get("datasets")
            if not isinstance(items, list):
                raise ProtocolError("the answer has no list of 'datasets'")
            return [
                DatasetInfo(
                    name=str(item["name"]),
                    task=item.get("task"),
                    n_samples=_int(item.get("n_samples")),
                    n_features=_int(item.get("n_features")),
                    feature_names=_strings(item.get("feature_names")),
                    target_names=_strings(item.get("target_names")),
                    classes=item.get("classes"),
                    class_names=item.get("class_names"),
                    image_shape=_shape(item.get("image_shape")),
                    description=item.get("description"),
                    source=item.get("source"),
                    raw=item,
                )
                for item in items
            ]

        return self._get("/datasets", parse)

    def _data_loader(
        self, fields: dict[str, Any], csv: FileInput | None, as_torch: bool | None
    ) -> Call[LoaderResult]:
        wants_torch = self._torch(as_torch)

        def parse(response: httpx.Response) -> LoaderResult:
            body = _json_body(response)
            classes = body.get("classes")
            return LoaderResult(
                dataset=body.get("dataset"),
                task=body.get("task"),
                n_samples=_int(body.get("n_samples")),
                n_features=_int(body.get("n_features")),
                features=_strings(body.get("features")),
                targets=_strings(body.get("targets")),
                classes=list(classes) if isinstance(classes, list) else None,
                x_dtype=body.get("x_dtype"),
                y_dtype=body.get("y_dtype"),
                batch_size=_int(body.get("batch_size")),
                n_batches=_int(body.get("n_batches")),
                batches=[
                    Batch(
                        index=int(batch.get("index", i)),
                        x_shape=_shape(batch.get("x_shape")) or (),
                        y_shape=_shape(batch.get("y_shape")),
                        x=decode_optional(batch.get("x"), wants_torch),
                        y=decode_optional(batch.get("y"), wants_torch),
                        indices=batch.get("indices"),
                    )
                    for i, batch in enumerate(body.get("batches") or [])
                ],
                device=body.get("device"),
                elapsed_ms=_float(body.get("elapsed_ms")),
                raw=body,
            )

        return self._data_call("/data/loader", fields, csv, parse)

    def _images_call(
        self,
        images: ImageInput | Sequence[ImageInput] | None,
        archive: FileInput | None,
        fields: dict[str, Any],
        parse: Callable[[httpx.Response], T],
        *,
        png: bool,
    ) -> Call[T]:
        """Pictures and archives go as uploads (``images``, ``archive``) with the other
        fields as form fields; a built-in dataset as JSON."""
        if png:
            fields = {**fields, "format": "png"}
        files: list[tuple[str, Upload]] = []
        if images is not None:
            items: Sequence[ImageInput] = images if isinstance(images, list | tuple) else [images]
            files += [("images", image_upload(item, i)) for i, item in enumerate(items)]
        if archive is not None:
            files.append(("archive", archive_upload(archive)))
        if files:
            return self._form_call("/data/images", fields, files, parse, png=png)
        return self._json_call("POST", "/data/images", fields, parse, png=png)

    def _images(
        self,
        images: ImageInput | Sequence[ImageInput] | None,
        archive: FileInput | None,
        fields: dict[str, Any],
        as_torch: bool | None,
    ) -> Call[ImagesResult]:
        wants_torch = self._torch(as_torch)

        def parse(response: httpx.Response) -> ImagesResult:
            body = _json_body(response)
            batch = body.get("batch")
            return ImagesResult(
                source=body.get("source"),
                n_images=_int(body.get("n_images")),
                classes=_strings(body.get("classes")),
                class_to_idx=dict(body.get("class_to_idx") or {}),
                counts=dict(body.get("counts") or {}),
                skipped=_strings(body.get("skipped")),
                transforms=_strings(body.get("transforms")),
                image_shape=_shape(body.get("image_shape")),
                batch_size=_int(body.get("batch_size")),
                n_batches=_int(body.get("n_batches")),
                batch=None
                if not isinstance(batch, dict)
                else ImageBatch(
                    x_shape=_shape(batch.get("x_shape")) or (),
                    x_dtype=batch.get("x_dtype"),
                    y_shape=_shape(batch.get("y_shape")),
                    y_dtype=batch.get("y_dtype"),
                    targets=[int(t) for t in batch.get("targets") or []],
                    x=decode_optional(batch.get("x"), wants_torch),
                    y=decode_optional(batch.get("y"), wants_torch),
                ),
                mean=_float_list(body.get("mean")),
                std=_float_list(body.get("std")),
                device=body.get("device"),
                elapsed_ms=_float(body.get("elapsed_ms")),
                raw=body,
            )

        return self._images_call(images, archive, fields, parse, png=False)

    def _images_png(
        self,
        images: ImageInput | Sequence[ImageInput] | None,
        archive: FileInput | None,
        fields: dict[str, Any],
    ) -> Call[PNGImage]:
        return self._images_call(images, archive, fields, _png, png=True)


def _float_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    if is_wire_tensor(value):
        return [float(v) for v in np.ravel(decode_tensor(value))]
    if isinstance(value, list):
        return [float(v) for v in np.ravel(np.asarray(value, dtype=np.float64))]
    return None


_DEVICE_FIELDS = frozenset(DeviceInfo.__dataclass_fields__)
_TIMING_FIELDS = frozenset(DeviceTiming.__dataclass_fields__)
_ACTIVATION_FIELDS = frozenset(ActivationFunction.__dataclass_fields__)
