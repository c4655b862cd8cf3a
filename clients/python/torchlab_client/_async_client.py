"""The async client, :class:`AsyncClient`: the source of the blocking client.

``scripts/unasync.py`` writes ``_sync_client.py`` (:class:`Client`) from this file; edit
this one and run it again. Every method hands its own arguments to its route's builder in
``_routes`` (``arguments(locals())`` comes first, while the locals are only the
arguments), so a method's parameters are its route's fields; a ``_png`` twin sends its
method's request with ``format=png`` and reads a picture instead. Every public method is
``@checked``: a keyword it does not take is a ``TypeError`` naming the parameter meant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Never, Self, TypeVar

import httpx

from torchlab_client import _deadline, _retry
from torchlab_client import _parsers as parsers
from torchlab_client import _routes as routes
from torchlab_client._base import (
    DEFAULT_B64_THRESHOLD,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    AnswerBody,
    AnswerBuffer,
    BaseClient,
    ResponseEncoding,
    TimeoutTypes,
    base_url_of,
    is_event_stream,
    is_framed,
    on_event,
)
from torchlab_client._calls import checked, grad_inputs
from torchlab_client._deadline import Deadline
from torchlab_client._exceptions import ProtocolError, error_from_response, transport_error
from torchlab_client._images import FileInput, ImageInput, PNGImage
from torchlab_client._progress import EventReader, Progress, Sink, close_sink, progress_sink
from torchlab_client._retry import Retry
from torchlab_client._routes import ModelInput, Request, TensorInput, arguments
from torchlab_client._types import (
    ActivationList,
    ActivationResults,
    BenchmarkResult,
    ConvResult,
    DatasetInfo,
    GradResult,
    Health,
    ImagesResult,
    LinearLayerResult,
    LinearRegressionResult,
    LoaderResult,
    LogisticRegressionResult,
    PoolResult,
    Prediction,
    RNNResult,
    ServiceInfo,
    TensorOpsResult,
)

T = TypeVar("T")


class AsyncClient(BaseClient):
    """A torchlab client for asyncio and trio.

    Args:
        base_url: the service, e.g. ``"http://127.0.0.1:8000"``; default ``$TORCHLAB_URL``,
            else the ``base_url`` of ``http_client``, else ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <key>``; default ``$TORCHLAB_API_KEY``.
        timeout: seconds for each try of a request, from sending it to the last byte of its
            answer (an event stream's too: the work the service does before it answers
            counts either way); an :class:`httpx.Timeout` sets httpx's waits one by one,
            its ``read`` being the try's whole time; None waits forever. Past it the try
            raises :class:`TransportTimeoutError` (not retried).
        retries: how many times to retry a 429, a 503 or a connection error (with
            exponential backoff, honouring ``Retry-After``), or a :class:`Retry`.
        transport: an httpx transport to send through (``httpx.MockTransport`` in tests).
        http_client: a ready :class:`httpx.AsyncClient` to use instead; it is not closed by
            :meth:`aclose`.
        headers: extra headers for every request.
        b64_threshold: numpy arrays and torch tensors of more bytes than this are sent as
            raw bytes: after the JSON (the binary data extension), or in base64 in a
            multipart form or without ``binary``; smaller ones as JSON lists.
        response_encoding: ``"auto"`` asks for tensors in binary (``?encoding=binary``:
            arrays are read in place, writable, without a copy), or in base64 without
            ``binary``; ``"binary"`` and ``"b64"`` ask for one of them; ``"json"`` for JSON
            lists (readable in a proxy's log).
        as_torch: return torch tensors instead of numpy arrays (each method can override).
        binary: use the binary framing (default); false keeps every body JSON (base64
            tensors both ways), for a proxy that only passes JSON.
        max_response_bytes: the largest answer read, counted as it arrives (default 1 GiB,
            twice the service's default limit); a larger one raises
            :class:`ResponseTooLargeError` before it is held. Error answers are read to
            their first MiB.

    Use it as a context manager (``async with``), or call ``await client.aclose()``; a
    closed client raises :class:`ClientClosedError`. ``client.with_options(timeout=...,
    retries=...)`` is a copy with other options over the same connections, for one call or
    several. Every compute method takes ``extra_fields={...}``: fields of the route this
    client does not know yet, sent as they are.
    """

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        *,
        api_key: str | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        retries: int | Retry = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
        b64_threshold: int = DEFAULT_B64_THRESHOLD,
        response_encoding: ResponseEncoding = "auto",
        as_torch: bool = False,
        binary: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if transport is not None and http_client is not None:
            raise ValueError("give `transport` or `http_client`, not both")
        super().__init__(
            base_url_of(base_url, http_client),
            api_key=api_key,
            timeout=timeout,
            retries=retries,
            headers=headers,
            b64_threshold=b64_threshold,
            response_encoding=response_encoding,
            as_torch=as_torch,
            binary=binary,
            max_response_bytes=max_response_bytes,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, timeout=timeout)

    async def aclose(self) -> None:
        """Close the connections (unless the httpx client was given)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(
        self, request: Request, read: Callable[[httpx.Response], T], progress: Progress = None
    ) -> T:
        """Send ``request`` and read a success answer with ``read``; retry and wait as
        ``self.retry`` says, else raise the error. With ``progress``, the answer is a stream
        of events whose progress goes to a bar or the callable (see ``_progress``)."""
        sink = progress_sink(progress, request.path)
        try:
            result = await self._send_with(request, read, sink)
        except BaseException:
            close_sink(sink)
            raise
        close_sink(sink, finished=True)
        return result

    async def _send_with(
        self, request: Request, read: Callable[[httpx.Response], T], sink: Sink | None
    ) -> T:
        encoded = self._encode(request, events=sink is not None)
        attempt = 0
        while True:
            self._check_open(self._http)
            http_request = self._build_request(self._http, encoded)
            try:
                with _deadline.async_enforced(Deadline(self.deadline_s)) as deadline:
                    response = await self._http.send(http_request, stream=True)
                    try:
                        if sink is not None and is_event_stream(response):
                            answer = await self._follow(response, sink, deadline)
                            return self._read(read, answer)
                        await self._receive(response, deadline)
                    finally:
                        await response.aclose()
            except httpx.TransportError as exc:
                delay = self.retry.after_exception(exc, attempt)
                if delay is None:
                    raise transport_error(exc) from exc
            else:
                if response.is_success:
                    return self._read(read, response)
                error = error_from_response(response)
                delay = self.retry.after_response(error, attempt)
                if delay is None:
                    raise error
            attempt += 1
            await _retry.async_sleep(delay)

    async def _follow(
        self, response: httpx.Response, sink: Sink, deadline: Deadline
    ) -> httpx.Response:
        """Read a stream of events: each progress event to ``sink``, then the result as the
        answer it stands for, or the error event raised as the error it would have had;
        within ``deadline`` and ``max_response_bytes``."""
        deadline.cap_reads(response)
        events = EventReader(self.max_response_bytes)
        async for chunk in response.aiter_bytes():
            deadline.check()
            for sse in events.feed(chunk):
                result = on_event(sse, sink, response)
                if result is not None:
                    return result
        raise ProtocolError("the event stream ended before its result")

    async def _receive(self, response: httpx.Response, deadline: Deadline) -> None:
        """Read the answer within ``deadline`` and ``max_response_bytes``: a binary one into
        one writable buffer, whose arrays are views of it (one copy of the bytes, from the
        socket's chunks); any other as httpx does, counted as it arrives."""
        deadline.cap_reads(response)
        buffer = (
            AnswerBuffer(response, self.max_response_bytes)
            if is_framed(response)
            else AnswerBody(response, self.max_response_bytes)
        )
        async for chunk in response.aiter_bytes():
            deadline.check()
            if not buffer.add(chunk):
                break
        buffer.finish()

    # --- system --------------------------------------------------------------------------

    @checked
    async def health(self) -> Health:
        """``GET /health``: whether the service is alive (never needs an API key)."""
        return await self._send(routes.health(), parsers.health)

    @checked
    async def info(self) -> ServiceInfo:
        """``GET /info``: versions, devices, the default device and the limits in force."""
        return await self._send(routes.info(), parsers.service_info)

    @checked
    async def metrics(self) -> str:
        """``GET /metrics``: request counts and latencies, in Prometheus' text format."""
        return await self._send(routes.metrics(), parsers.text)

    @checked
    async def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``: the service's OpenAPI document (which routes it has)."""
        return await self._send(routes.openapi(), parsers.json_body)

    @checked
    async def benchmark(
        self,
        m: int | None = None,
        k: int | None = None,
        n: int | None = None,
        *,
        dtype: str | None = None,
        devices: str | Sequence[str] | None = None,
        repeats: int | None = None,
        warmup: int | None = None,
        device: str | None = None,
        seed: int | None = None,
        progress: Progress = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> BenchmarkResult:
        """``POST /benchmark``: time ``randn(m, k) @ randn(k, n)`` on each device (tutorial
        chapter 1.2; the service's defaults are its sizes, 10000 × 1000 @ 1000 × 2000).

        ``first_run_s`` is the cold first multiplication; the median, min and max come from
        ``repeats`` timed runs after ``warmup``; ``norm`` lets you check devices agree.

        ``progress=True`` shows a progress bar of the runs (``unit`` ``"run"``, with the
        ``device`` and the ``run``: first, warmup or timed) (tqdm: the ``progress`` extra);
        ``progress=callable`` receives each :class:`ProgressEvent`. The result is the same
        either way.
        """
        request = routes.benchmark(**arguments(locals()))
        return await self._send(request, parsers.benchmark_result, progress)

    # --- tensors and autograd ------------------------------------------------------------

    @checked
    async def tensor_ops(
        self,
        steps: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        inputs: Mapping[str, TensorInput] | None = None,
        returns: str | Sequence[str] | None = None,
        *,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> TensorOpsResult:
        """``POST /tensor/ops``: run a program of tensor steps (tutorial chapter 3).

        Args:
            steps: one step or a list, each ``{"op": ..., "out": name, ...}`` with the
                parameter names of the README's table, or built by
                :mod:`torchlab_client.ops` (``ops.matmul("a", "b", out="c")``); tensor
                arguments are names or inline arrays.
            inputs: named input tensors (numpy arrays and scalars, torch tensors, pandas
                objects, lists of arrays, nested lists).
            returns: the name(s) to return; default what the last step stored.

        Returns:
            a :class:`TensorOpsResult`: a mapping ``{name: numpy array}`` (torch tensors
            with ``as_torch``), and ``.info[name]`` for what ``info`` steps returned.
        """
        request = routes.tensor_ops(**arguments(locals()))
        return await self._send(request, self._reader(parsers.tensor_outputs, as_torch))

    async def grad(
        self,
        expression: str,
        /,
        wrt: str | Sequence[str] | None = None,
        hessian: bool = False,
        *,
        inputs: Mapping[str, TensorInput] | None = None,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        extra_fields: Mapping[str, Any] | None = None,
        **named_inputs: Never,
    ) -> GradResult:
        """``POST /grad``: the value of ``expression`` and its gradients (tutorial ch. 5).

        ``client.grad("sum(x**2 + 2*x + 1)", inputs={"x": [[1.0], [2.0], [3.0], [4.0]]})``
        unpacks as ``value, grads``; ``grads["x"]`` is ``2x + 2``. ``wrt`` defaults to
        every floating input; ``hessian=True`` adds ``result.hessians[a][b]``. An input the
        expression never uses is a :class:`TorchlabWarning`.

        Inputs given as keywords (``x=[...]``) still work, with a ``DeprecationWarning``
        (type checkers refuse them); a keyword the expression does not use is a
        ``TypeError`` (``hesian=True`` suggests ``hessian``).
        """
        inputs = grad_inputs(self.grad, expression, inputs, named_inputs)
        named_inputs = {}
        request = routes.grad(**arguments(locals()))
        return await self._send(request, self._reader(parsers.grad_result, as_torch))

    # --- activations and layers ----------------------------------------------------------

    @checked
    async def activate(
        self,
        functions: str | Sequence[str | Mapping[str, Any]] | None = None,
        x: TensorInput | None = None,
        *,
        x_range: tuple[float, float, int] | Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        dim: int | None = None,
        derivative: bool = False,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> ActivationResults:
        """``POST /activate``: activation functions over ``x`` (or ``x_range`` =
        ``(start, end, steps)``, default the tutorial's ``linspace(-6, 6, 100)``), with
        ``dydx`` when ``derivative`` (tutorial chapter 6.3).

        ``functions`` is one name, or a list of names or ``{"function", "params"}``;
        default the tutorial's sigmoid, tanh, relu and softplus. Results are indexable by
        position or name: ``result["relu"].y``.
        """
        request = routes.activate(**arguments(locals()))
        return await self._send(request, self._reader(parsers.activation_results, as_torch))

    @checked
    async def activate_png(
        self,
        functions: str | Sequence[str | Mapping[str, Any]] | None = None,
        x: TensorInput | None = None,
        *,
        x_range: tuple[float, float, int] | Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        dim: int | None = None,
        derivative: bool = False,
        columns: int | None = None,
        device: str | None = None,
        seed: int | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> PNGImage:
        """:meth:`activate` drawn as the tutorial's figure: one panel per function
        (``columns`` per row), y in red and dy/dx dashed blue."""
        request = routes.activate(**arguments(locals()))
        return await self._send(request.as_png(), parsers.png_image)

    @checked
    async def list_activations(self) -> ActivationList:
        """``GET /activate``: every supported function, its formula and parameters."""
        return await self._send(routes.list_activations(), parsers.activation_list)

    @checked
    async def linear_layer(
        self,
        input: TensorInput,
        in_features: int | None = None,
        out_features: int | None = None,
        *,
        bias: bool | None = None,
        weight: TensorInput | None = None,
        bias_values: TensorInput | None = None,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> LinearLayerResult:
        """``POST /layers/linear``: ``torch.nn.Linear`` applied to ``input`` (tutorial 6.5).

        ``in_features`` defaults to the input's last dimension and ``out_features`` to the
        rows of ``weight``; parameters not given are torch's seeded initialisation.
        """
        request = routes.linear_layer(**arguments(locals()))
        return await self._send(request, self._reader(parsers.linear_layer_result, as_torch))

    @checked
    async def rnn(
        self,
        input: TensorInput,
        hidden_size: int | None = None,
        *,
        mode: str | None = None,
        input_size: int | None = None,
        num_layers: int | None = None,
        nonlinearity: str | None = None,
        bias: bool | None = None,
        batch_first: bool | None = None,
        bidirectional: bool | None = None,
        h0: TensorInput | None = None,
        c0: TensorInput | None = None,
        weights: Mapping[str, TensorInput] | None = None,
        return_weights: bool | None = None,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> RNNResult:
        """``POST /layers/rnn``: ``torch.nn.RNN``, ``LSTM`` or ``GRU`` (``mode``) over
        ``input`` ``[L, N, input_size]`` (tutorial 6.4). ``input_size`` defaults to the
        input's last dimension, ``hidden_size`` to ``h0``'s."""
        request = routes.rnn(**arguments(locals()))
        return await self._send(request, self._reader(parsers.rnn_result, as_torch))

    # --- vision --------------------------------------------------------------------------

    @checked
    async def conv(
        self,
        image: ImageInput | None = None,
        *,
        input: TensorInput | None = None,
        kernels: str | Sequence[str | TensorInput] | None = None,
        kernel_size: int | None = None,
        sigma: float | None = None,
        stride: int | Sequence[int] | None = None,
        padding: int | str | Sequence[int] | None = None,
        dilation: int | Sequence[int] | None = None,
        groups: int | None = None,
        bias: bool | None = None,
        bias_values: TensorInput | None = None,
        mode: str | None = None,
        activation: str | Mapping[str, Any] | None = None,
        pool: Mapping[str, Any] | None = None,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> ConvResult:
        """``POST /conv``: 2-D convolution of a picture or a tensor (tutorial chapter 6.1).

        ``image`` (a path, file bytes, a numpy ``[H, W(, C)]`` uint8 array, a PIL image, a
        :class:`PNGImage`) is uploaded and read as grayscale ``[1, 1, H, W]`` float32 in
        [0, 255] (``mode="RGB"`` keeps three channels); or give ``input``, a tensor
        ``[H, W]``, ``[C, H, W]`` or ``[N, C, H, W]``. ``kernels`` are preset names
        (``edge``, ``sobel_x``, ``sobel_y``, ``laplacian``, ``gaussian``, ``box``,
        ``sharpen``, ``emboss``, ``random``) or explicit 2-D arrays, ``kernel_size`` wide
        (default 5); one name or array is a list of one. ``activation`` and then ``pool``
        (``{"kind": "max", "kernel_size": 2}``) are applied after the convolution.
        """
        request = routes.conv(**arguments(locals()))
        return await self._send(request, self._reader(parsers.conv_result, as_torch))

    @checked
    async def conv_png(
        self,
        image: ImageInput | None = None,
        *,
        input: TensorInput | None = None,
        kernels: str | Sequence[str | TensorInput] | None = None,
        kernel_size: int | None = None,
        sigma: float | None = None,
        stride: int | Sequence[int] | None = None,
        padding: int | str | Sequence[int] | None = None,
        dilation: int | Sequence[int] | None = None,
        groups: int | None = None,
        bias: bool | None = None,
        bias_values: TensorInput | None = None,
        mode: str | None = None,
        activation: str | Mapping[str, Any] | None = None,
        pool: Mapping[str, Any] | None = None,
        device: str | None = None,
        seed: int | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> PNGImage:
        """:meth:`conv` answered as a PNG: the input and every feature map side by side,
        each scaled to 0-255."""
        request = routes.conv(**arguments(locals()))
        return await self._send(request.as_png(), parsers.png_image)

    @checked
    async def pool(
        self,
        image: ImageInput | None = None,
        *,
        input: TensorInput | None = None,
        kind: str | None = None,
        kernel_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] | None = None,
        dilation: int | Sequence[int] | None = None,
        ceil_mode: bool | None = None,
        count_include_pad: bool | None = None,
        output_size: int | Sequence[int | None] | None = None,
        norm_type: float | None = None,
        mode: str | None = None,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> PoolResult:
        """``POST /pool``: ``max`` (default), ``avg``, ``adaptive_avg``, ``adaptive_max`` or
        ``lp`` pooling (``kind``) with torch's parameters (tutorial chapter 6.2); ``image``
        and ``input`` as for :meth:`conv`. A ``ConvResult.output`` can be pooled with
        ``input=``."""
        request = routes.pool(**arguments(locals()))
        return await self._send(request, self._reader(parsers.pool_result, as_torch))

    @checked
    async def pool_png(
        self,
        image: ImageInput | None = None,
        *,
        input: TensorInput | None = None,
        kind: str | None = None,
        kernel_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] | None = None,
        dilation: int | Sequence[int] | None = None,
        ceil_mode: bool | None = None,
        count_include_pad: bool | None = None,
        output_size: int | Sequence[int | None] | None = None,
        norm_type: float | None = None,
        mode: str | None = None,
        device: str | None = None,
        seed: int | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> PNGImage:
        """:meth:`pool` answered as a PNG: the input and the pooled maps side by side."""
        request = routes.pool(**arguments(locals()))
        return await self._send(request.as_png(), parsers.png_image)

    # --- regression ----------------------------------------------------------------------

    @checked
    async def linear_regression(
        self,
        x: TensorInput | None = None,
        y: TensorInput | None = None,
        *,
        dataset: str | None = None,
        csv: FileInput | None = None,
        target: str | None = None,
        features: str | Sequence[str] | None = None,
        test_size: float | None = None,
        fit_intercept: bool | None = None,
        method: str | None = None,
        rcond: float | None = None,
        optimizer: str | None = None,
        epochs: int | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        standardize: bool | None = None,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        progress: Progress = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> LinearRegressionResult:
        """``POST /regress/linear``: fit a linear regression (tutorial chapter 2).

        The data is ``x`` (``[n]`` or ``[n, features]``: an array, nested lists, or a
        pandas DataFrame whose column names become the model's ``features``) and ``y`` (a
        named Series names the target), a built-in ``dataset`` (``"exam"``,
        ``"diabetes"``, ...), or a ``csv`` file (path, bytes or binary file) whose
        ``target`` column is y; ``features`` picks columns (one name or a list). ``method``
        is ``lstsq`` (closed form, default) or ``gd`` (``optimizer``, ``epochs``, ``lr``,
        ``batch_size``, ``standardize``). With one feature the result has ``pearson_r`` and
        the tutorial's ``correlation`` strength. ``result.model.predict(x)`` predicts here.

        A figure of the fit is :meth:`linear_regression_png`, a second request: the service
        answers one request with the fit or with its picture, not both.

        ``progress=True`` shows a progress bar of the epochs of ``gd`` (``unit``
        ``"epoch"``, with the ``loss``; ``lstsq`` has no epochs) (tqdm: the ``progress``
        extra); ``progress=callable`` receives each :class:`ProgressEvent`. The result is
        the same either way.
        """
        request = routes.linear_regression(**arguments(locals()))
        return await self._send(
            request, self._reader(parsers.linear_regression_result, as_torch, request), progress
        )

    @checked
    async def linear_regression_png(
        self,
        x: TensorInput | None = None,
        y: TensorInput | None = None,
        *,
        dataset: str | None = None,
        csv: FileInput | None = None,
        target: str | None = None,
        features: str | Sequence[str] | None = None,
        test_size: float | None = None,
        fit_intercept: bool | None = None,
        method: str | None = None,
        rcond: float | None = None,
        optimizer: str | None = None,
        epochs: int | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        standardize: bool | None = None,
        device: str | None = None,
        seed: int | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> PNGImage:
        """:meth:`linear_regression` answered as a PNG: the data and the fitted line (one
        feature) or predicted against actual values, and the loss curve with ``gd``. The
        same arguments give the same fit as :meth:`linear_regression` (its axes name the
        service's ``x0``, ``y``)."""
        request = routes.linear_regression(**arguments(locals()))
        return await self._send(request.as_png(), parsers.png_image)

    @checked
    async def logistic_regression(
        self,
        x: TensorInput | None = None,
        y: TensorInput | None = None,
        *,
        dataset: str | None = None,
        csv: FileInput | None = None,
        target: str | None = None,
        features: str | Sequence[str] | None = None,
        test_size: float | None = None,
        fit_intercept: bool | None = None,
        threshold: float | None = None,
        optimizer: str | None = None,
        epochs: int | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        l2: float | None = None,
        tol: float | None = None,
        standardize: bool | None = None,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        progress: Progress = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> LogisticRegressionResult:
        """``POST /regress/logistic``: fit a logistic regression (tutorial chapter 4),
        binary (sigmoid, then ``threshold``, default 0.5) or multinomial (softmax) as the
        labels say; labels may be integers or strings. Data as for
        :meth:`linear_regression`; ``optimizer`` ``lbfgs`` (default), ``sgd`` or ``adam``.

        ``l2`` is the L2 penalty: the loss is the mean log loss + ``l2/2 · ‖coef‖²`` (the
        intercept is not penalised), the service's default 1e-4. scikit-learn's
        ``LogisticRegression(C=C)`` is ``l2 = 1 / (C · n_train)``; ``l2=0`` is no penalty.
        With ``standardize`` (the default) the penalty applies to the weights of the
        standardised features, as in a scikit-learn pipeline of ``StandardScaler`` and
        ``LogisticRegression``. ``result.model.predict(x)`` and ``predict_proba(x)``
        predict here.

        ``progress=True`` shows a progress bar of the epochs (``unit`` ``"epoch"``, with the
        ``loss``) (tqdm: the ``progress`` extra); ``progress=callable`` receives each
        :class:`ProgressEvent`. The result is the same either way.
        """
        request = routes.logistic_regression(**arguments(locals()))
        return await self._send(
            request, self._reader(parsers.logistic_regression_result, as_torch, request), progress
        )

    @checked
    async def logistic_regression_png(
        self,
        x: TensorInput | None = None,
        y: TensorInput | None = None,
        *,
        dataset: str | None = None,
        csv: FileInput | None = None,
        target: str | None = None,
        features: str | Sequence[str] | None = None,
        test_size: float | None = None,
        fit_intercept: bool | None = None,
        threshold: float | None = None,
        optimizer: str | None = None,
        epochs: int | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        l2: float | None = None,
        tol: float | None = None,
        standardize: bool | None = None,
        device: str | None = None,
        seed: int | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> PNGImage:
        """:meth:`logistic_regression` answered as a PNG: for two features the samples over
        the predicted class regions beside the loss curve, otherwise the loss curve."""
        request = routes.logistic_regression(**arguments(locals()))
        return await self._send(request.as_png(), parsers.png_image)

    @checked
    async def predict(
        self,
        model: ModelInput,
        x: TensorInput,
        *,
        device: str | None = None,
        as_torch: bool | None = None,
    ) -> Prediction:
        """``POST /regress/predict``: predict with a fitted model (a fit's result, its
        ``.model``, or the model's JSON). Linear: ``y`` float64 values; logistic: ``y`` the
        labels as an array and ``proba`` ``[n, n_classes]``. A DataFrame's columns are
        taken in the model's feature order. ``model.predict(x)`` computes the same here."""
        request = routes.predict(**arguments(locals()))
        return await self._send(request, self._reader(parsers.prediction, as_torch))

    # --- data ----------------------------------------------------------------------------

    @checked
    async def datasets(self) -> list[DatasetInfo]:
        """``GET /datasets``: the built-in datasets (name, task, sizes, columns, classes)."""
        return await self._send(routes.datasets(), parsers.dataset_infos)

    @checked
    async def data_loader(
        self,
        dataset: str | None = None,
        *,
        x: TensorInput | None = None,
        y: TensorInput | None = None,
        csv: FileInput | None = None,
        target: str | None = None,
        features: str | Sequence[str] | None = None,
        task: str | None = None,
        batch_size: int | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        max_batches: int | Literal["all"] | None = None,
        include_data: bool | None = None,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> LoaderResult:
        """``POST /data/loader``: batches of a dataset (or ``x``/``y``, or a ``csv``) through
        ``TensorDataset`` and ``DataLoader`` (tutorial chapter 7.1). ``task``
        ``regression`` gives float32 targets, ``classification`` int64.

        The answer describes the loader (``n_batches`` is one epoch) and lists its first
        ``max_batches`` batches, **one by default** (the service's default);
        ``max_batches="all"`` lists a whole epoch (up to 1000 batches, the most one answer
        lists; a longer epoch warns). ``include_data=True`` returns each listed batch's
        tensors. The result iterates over its batches::

            for batch in client.data_loader("iris", batch_size=10, shuffle=True, seed=0,
                                            max_batches="all", include_data=True):
                batch.x, batch.y

        ``classes`` are filled for every classification: from the service for string
        labels, from ``y`` for integer labels, from ``GET /datasets`` (with
        ``class_names``) for a built-in dataset.
        """
        request = routes.data_loader(**arguments(locals()))
        result = await self._send(request, self._reader(parsers.loader_result, as_torch, request))
        if result.task == "classification" and result.classes is None:
            if y is not None:
                result = dataclasses.replace(result, classes=parsers.label_values(y))
            elif dataset is not None:
                listed = {info.name: info for info in await self.datasets()}
                if dataset in listed:
                    result = dataclasses.replace(
                        result,
                        classes=listed[dataset].classes,
                        class_names=listed[dataset].class_names,
                    )
        parsers.warn_if_incomplete(result, max_batches)
        return result

    @checked
    async def images(
        self,
        images: ImageInput | Sequence[ImageInput] | None = None,
        *,
        labels: str | Sequence[str] | None = None,
        archive: FileInput | None = None,
        dataset: str | None = None,
        mode: str | None = None,
        transforms: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        batch_size: int | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        max_images: int | None = None,
        include_data: bool | None = None,
        device: str | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        progress: Progress = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> ImagesResult:
        """``POST /data/images``: pictures through torchvision transforms and a DataLoader
        (tutorial chapter 7.2). The pictures: uploaded ``images`` (one or a list, with
        ``labels`` naming each one's class), an ``archive`` (a zip, or a folder zipped here,
        in ImageFolder layout ``class/file.png``), or a built-in ``dataset`` (``digits``,
        ``sample_images``). ``transforms`` is a list of ``{"name": <transforms.v2 class>,
        ...parameters}``. The result has the classes, counts, the first batch's shape and
        dtype, and per-channel mean and std.

        ``progress=True`` shows a progress bar of the pictures transformed (``unit``
        ``"picture"``) (tqdm: the ``progress`` extra); ``progress=callable`` receives each
        :class:`ProgressEvent`. The result is the same either way.
        """
        request = routes.images(**arguments(locals()))
        return await self._send(request, self._reader(parsers.images_result, as_torch), progress)

    @checked
    async def images_png(
        self,
        images: ImageInput | Sequence[ImageInput] | None = None,
        *,
        labels: str | Sequence[str] | None = None,
        archive: FileInput | None = None,
        dataset: str | None = None,
        mode: str | None = None,
        transforms: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        batch_size: int | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        max_images: int | None = None,
        columns: int | None = None,
        device: str | None = None,
        seed: int | None = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> PNGImage:
        """:meth:`images` answered as a PNG: a grid of the first batch after the transforms
        (``columns`` per row), each picture under its class name."""
        request = routes.images(**arguments(locals()))
        return await self._send(request.as_png(), parsers.png_image)
