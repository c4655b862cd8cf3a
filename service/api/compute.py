"""The one pipeline every compute route uses: decode → plan → compute → encode.

A route hands :func:`run_compute` a ``prepare`` (decode the request and charge its plan to
the context's budget: every refusal happens here, before a compute slot is taken and before
anything big is allocated) and a ``compute`` (the real work on the plan, returning the
response content with tensors in it, or a :class:`~service.api.responses.Png`).

``compute`` is a module-level function of the plan and the deadline, and the plan holds
what the work needs (tensors, the device, the seed): nothing of the request or the app.

Small bodies are prepared on the event loop (a thread hop would cost more than the work);
big ones in a worker thread that holds no compute slot, so that an over-limit request is a
fast 413, never a 429 from waiting in the queue. A plan that is tiny on the CPU runs on the
event loop too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import torch
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Receive

from schemas.v2 import ResponseEncoding
from service.api.binary import BinaryBody, Blob, content_length, frame_body
from service.api.events import Progress, event_stream
from service.api.forms import INLINE_BODY_BYTES
from service.api.responses import BinaryResponse, FastJSONResponse, png_response
from service.calibration import Calibrations
from service.codec import binary_header, dumps, encode_tensor, estimate_encoded_bytes, raw_bytes
from service.deps import devices_of, settings_of
from service.errors import ClientLeft, LimitExceeded
from service.limits import Budget, Deadline, PlanOffLoop
from service.ops.context import ComputeContext
from service.ops.render.png import Png
from service.ops.threads import torch_threads
from service.waits import PacedBodyResponse

P = TypeVar("P")
T = TypeVar("T")

INLINE_ELEMENTS = 4096
INLINE_FLOPS = 1e5
INLINE_OBJECTS = 256
"""Objects (pieces of a split, names, ...) that a plan made on the event loop, or work run
there, may make one by one: each costs tens of microseconds."""
INLINE_SECONDS = 1e-3
"""Work predicted to take longer than this runs in a worker, however few its elements,
FLOPs and objects: a hessian of 14 scalars through 1,000 syntax nodes (predicted at 0.29 s)
held the event loop for 140 to 240 ms."""
LOOP_PLAN_ELEMENTS = 1 << 20
"""The largest tensor a plan made on the event loop may charge (it may build it: drawing a
convolution's random weight of 33 million values took 0.3 to 1 s); a larger one sends the
plan to a thread."""
LOOP_PLAN_SECONDS = 5e-3
"""A plan made on the event loop (a small body's) that has taken longer than this is made
again in a thread: 63 floor divisions of a [4, 4] tensor took 400 to 600 ms to plan."""
LEFT_GRACE_SECONDS = 0.05
"""Work predicted to take at most this is let finish when its client leaves (within this
long; the answer is dropped), rather than its worker killed: replacing a worker costs about
40 ms of CPU. Clients that sent a 1 ms request and closed at once, every 20 ms, had a
worker killed and replaced for one request in five, and a neighbour's p90 went from 14 ms
to 190–420 ms."""
ONE_THREAD_SECONDS = 5e-3
"""Work predicted to take less than this runs on one of torch's threads in the worker
process. Parallel work waits, at each of its parallel regions, for every thread of the
team; on a machine shared with the server, its clients or other workers, one thread left
waiting for a core costs a scheduler slice (milliseconds). On 2 cores a 64x64 matmul
request took 0.94 ms (p90 5.4 ms) in the worker on two threads, 0.15 ms (p90 0.16) on one.
Larger work keeps every thread: there the parallel speed-up outweighs the waits."""
ONE_THREAD_STEP_SECONDS = 2e-2
"""So does work made of serial steps (``Budget.serial_steps``: an RNN's time steps, an
optimizer's, a least-squares QR's reflections) each predicted under this on one thread
(the predicted step times torch's thread count: on many cores, steps that would take long
on one keep every thread): every step pays the waits. An LSTM over 300 steps gained
nothing from a second thread on an idle machine and took 7 to 25 times as long beside one
busy process (twice as long on one thread). A logistic fit of 20000×20 (L-BFGS, steps
predicted at about 4 ms) took 41 ms on two threads and 36 ms on one back to back on an
idle machine, 86 and 103 ms after a pause, and beside one busy process 364 and 38 ms."""


Content = dict[str, Any] | Png
Body = bytes | Blob | BinaryBody
"""A response body as a worker process returns it: JSON (a :class:`Blob` in shared memory
when large), or a framed binary body."""


class Envelope(NamedTuple):
    """What a response body says beside its content, and how it is written."""

    encoding: ResponseEncoding
    device: str
    """The device(s) the work ran on."""
    elapsed_ms: float
    shared: bool
    """Written in a worker process: a large binary body goes in shared memory."""


Encoder = Callable[[dict[str, Any], Envelope], Body]
"""Writes the response body of computed content (in the worker process)."""


def tensors_as(
    encoding: ResponseEncoding, payloads: list[torch.Tensor] | None = None
) -> Callable[[Any], Any]:
    """orjson's ``default`` for a body with tensors: each tensor it meets, in the body's
    dicts and lists, written as ``encoding`` (:func:`~service.codec.encode_tensor`; for
    ``binary``, its header, its bytes appended to ``payloads`` in the order orjson meets
    them, which is the order of the JSON text), and a tuple it leaves (``torch.Size``, a
    named tuple) as a list. orjson walks the body's own dicts and lists in C: walking them
    first in Python cost a tiny request more than its tensor's encoding."""

    def default(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            if encoding == "binary":
                assert payloads is not None
                payloads.append(raw_bytes(value))
                return binary_header(value)
            return encode_tensor(value, encoding)
        if isinstance(value, tuple):
            return list(value)
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    return default


_WRITE_TENSORS: dict[ResponseEncoding, Callable[[Any], Any]] = {
    "json": tensors_as("json"),
    "b64": tensors_as("b64"),
}
"""The JSON encodings' ``default`` (a binary body's collects its payloads: one a body)."""


def encode_response(content: dict[str, Any], envelope: Envelope) -> Body:
    """torchlab's response: the content with its tensors encoded, ``device`` and
    ``elapsed_ms``; JSON, or framed with the tensors' bytes after it (``binary``)."""
    timing = {"device": envelope.device, "elapsed_ms": envelope.elapsed_ms}
    if envelope.encoding == "binary":
        payloads: list[torch.Tensor] = []
        header = dumps({**content, **timing}, tensors_as("binary", payloads))
        return frame_body(header, payloads, envelope.shared)
    body = dumps({**content, **timing}, _WRITE_TENSORS[envelope.encoding])
    return Blob(body) if envelope.shared else body


def is_small(request: Request, body_bytes: int | None = None) -> bool:
    """Whether the body is small enough to decode and plan on the event loop: by the bytes
    read when the route read them (or FastAPI did, for a JSON model), else by
    ``Content-Length`` (a chunked body is not)."""
    if body_bytes is None and isinstance(body := getattr(request, "_body", None), bytes):
        body_bytes = len(body)
    if body_bytes is None:
        body_bytes = content_length(request.headers)
    return body_bytes is not None and body_bytes <= INLINE_BODY_BYTES


def compute_context(request: Request, device: str | None) -> ComputeContext:
    """The request's context: the limits in force, its device (422 for one absent) and the
    device's measured rates, against which the plan's time is predicted."""
    resolved = devices_of(request).resolve(device)
    calibrations: Calibrations = request.app.state.calibrations
    return ComputeContext(settings_of(request).limits, resolved, calibrations.get(resolved))


@dataclass
class ComputeJob(Generic[P]):
    """What a worker process needs to compute and encode one request: picklable (its tensors
    cross by shared memory), with nothing of the request or the app in it."""

    compute: Callable[[P, Deadline], Content]
    plan: P
    encoding: ResponseEncoding
    devices: list[torch.device]
    max_response_bytes: int
    encode: Encoder = encode_response
    """A module-level function (or a partial of one): it runs in the worker process."""
    shared: bool = False
    """Runs in a worker process (not inline, nor in a thread)."""
    one_thread: bool = False
    """Runs on one of torch's threads (:data:`ONE_THREAD_SECONDS`,
    :data:`ONE_THREAD_STEP_SECONDS`); in a worker process only, where torch's thread count
    is this task's alone."""
    sized: bool = False
    """The answer was sized before the work, from the plan's own shapes and dtypes of the
    tensors it returns (``plan.answer``): not again after it."""


def prepare_elsewhere(
    job: tuple[Callable[[ComputeContext], P], ComputeContext], deadline: Deadline
) -> tuple[P, Budget]:
    """``prepare(ctx)`` in a body worker process: the plan, and the budget it charged."""
    prepare, ctx = job
    return prepare(ctx), ctx.budget


class SharedPng(NamedTuple):
    """A picture as a worker process returns it: its bytes a :class:`Blob` (in shared
    memory when large, not pickled through the worker's socket)."""

    blob: Blob
    headers: dict[str, str]


class Ran(NamedTuple):
    """What :func:`run_job` returns: the response body, and how long computing it took
    (before encoding) in nanoseconds."""

    body: Body | Png | SharedPng
    compute_ns: int


def run_job(job: ComputeJob[Any], deadline: Deadline) -> Ran:
    """Compute, then encode the content into the response body (in the worker, so that the
    server's process never holds the tensors): refused (413) before encoding when the
    body would be over ``max_response_bytes``."""
    if job.shared and job.one_thread:
        # The encoding too: its copies of the tensors' bytes are parallel regions like any
        # other (after one, the team's idle threads spin for a while on their cores).
        with torch_threads(1):
            return _compute_and_encode(job, deadline)
    return _compute_and_encode(job, deadline)


def _compute_and_encode(job: ComputeJob[Any], deadline: Deadline) -> Ran:
    start = time.perf_counter_ns()
    content = job.compute(job.plan, deadline)
    for device in job.devices:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    compute_ns = time.perf_counter_ns() - start
    if isinstance(content, Png):
        check_picture_size(content, job.max_response_bytes)
        if job.shared:
            return Ran(SharedPng(Blob(content.data), content.headers), compute_ns)
        return Ran(content, compute_ns)
    if not job.sized:
        check_response_size(content, job.encoding, job.max_response_bytes)
    envelope = Envelope(job.encoding, _names(*job.devices), compute_ns / 1e6, job.shared)
    return Ran(job.encode(content, envelope), compute_ns)


@functools.lru_cache(maxsize=64)
def _names(*devices: torch.device) -> str:
    """The devices as a response's ``device`` says them (``cpu``, ``cuda:0,cuda:1``)."""
    return ",".join(map(str, devices))


@dataclass
class Stages:
    """When a request passed each stage of :func:`run_compute` (``time.perf_counter_ns``),
    filled in as it goes: the plan ready, the work started (a compute slot held, or on the
    event loop for a tiny plan), the result back; and the computation's own time."""

    planned: int = 0
    started: int = 0
    finished: int = 0
    compute_ns: int = 0


def _tensors(content: Any, into: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors in ``content`` (in dicts and lists), appended to ``into``."""
    if isinstance(content, torch.Tensor):
        into.append(content)
    elif isinstance(content, dict):
        for value in content.values():
            _tensors(value, into)
    elif isinstance(content, list | tuple):
        for value in content:
            _tensors(value, into)
    return into


def runs_on_one_thread(budget: Budget, threads: int) -> bool:
    """Whether the work ``budget`` predicts runs on one of the worker's ``threads``: in all
    under :data:`ONE_THREAD_SECONDS`, or in serial steps each under
    :data:`ONE_THREAD_STEP_SECONDS` on one thread. (The device's rates are measured on all
    of torch's threads, so a step on one takes up to ``threads`` times as long.)"""
    return (
        budget.seconds < ONE_THREAD_SECONDS
        or budget.seconds * threads / budget.serial_steps < ONE_THREAD_STEP_SECONDS
    )


def check_picture_size(picture: Png, allowed: int) -> None:
    """Refuse a picture of more than ``allowed`` bytes (its pixels were bounded before it
    was drawn, by ``max_png_pixels``; its bytes are known once it is)."""
    if len(picture.data) > allowed:
        raise LimitExceeded(
            "max_response_bytes",
            allowed,
            len(picture.data),
            "the picture",
            message=f"the picture takes {len(picture.data):,} bytes but the limit "
            f"max_response_bytes is {allowed:,}; ask for a smaller figure or fewer panels",
        )


def check_response_size(content: Any, encoding: ResponseEncoding, allowed: int) -> None:
    """Refuse a response whose tensors would encode to more than ``allowed`` bytes."""
    check_answer_size([(t.shape, t.dtype) for t in _tensors(content, [])], encoding, allowed)


def check_answer_size(
    tensors: Iterable[tuple[Sequence[int], torch.dtype]],
    encoding: ResponseEncoding,
    allowed: int,
) -> None:
    """Refuse a response whose ``tensors`` (their shapes and dtypes) would encode to more
    than ``allowed`` bytes: checked after the work, or before it where the plan knows the
    answer's tensors (``plan.answer``: the shapes and dtypes the planning pass produced,
    as its charges are), so that an answer too large is refused before the work it would
    cost (a float64 5000×3000 by 3000×5000 matmul in JSON had computed for 2 s, then been
    refused)."""
    estimate = 0
    for shape, dtype in tensors:
        estimate += _estimate(tuple(shape), dtype, encoding)
    if estimate > allowed:
        hint = {
            "json": "ask for ?encoding=binary (3 to 6× smaller) or ",
            "b64": "ask for ?encoding=binary (a quarter smaller) or ",
        }.get(encoding, "")
        raise LimitExceeded(
            "max_response_bytes",
            allowed,
            estimate,
            "the response",
            message=f"the response would take up to {estimate:,} bytes but the limit "
            f"max_response_bytes is {allowed:,}; {hint}ask for less data",
        )


_estimate = functools.lru_cache(maxsize=1024)(estimate_encoded_bytes)
""":func:`~service.codec.estimate_encoded_bytes` of the shapes answered lately."""


async def run_compute(
    request: Request,
    ctx: ComputeContext,
    prepare: Callable[[ComputeContext], P],
    compute: Callable[[P, Deadline], Content],
    *,
    encoding: ResponseEncoding = "json",
    encode: Encoder = encode_response,
    autograd: bool = False,
    body_bytes: int | None = None,
    devices: list[torch.device] | None = None,
    prepare_on_loop: bool = True,
    prepare_in_worker: bool = False,
    inline_when_tiny: bool = False,
    stream: bool = False,
    stages: Stages | None = None,
) -> Response:
    """Prepare, compute on the context's device (or every one of ``devices``) and answer:
    JSON with the content's tensors encoded plus ``device`` and ``elapsed_ms`` (the compute
    time), the same framed with the tensors' bytes after it (``encoding="binary"``), or the
    PNG that ``compute`` drew. ``encode`` writes another protocol's body (the V2 routes').

    The work runs in a worker process of the device (killed at the deadline), which keeps
    the compute slot until the response has been sent, so that the bodies held in memory
    are bounded by the slots. A plan that is tiny on the CPU runs on the event loop instead.

    ``body_bytes``: the body's size when the route has read it (uploads), for the choice to
    prepare on the event loop; ``prepare_on_loop`` false keeps even a small body's
    preparation off it (a dataset to load). ``prepare_in_worker``: prepared in a body worker
    process (a CSV to parse, cell by cell: a thread would hold the interpreter lock, and so
    the event loop, for as long), stopped at the deadline. ``inline_when_tiny``: the
    budget measures the whole cost of the work, so a tiny plan may run on the event loop.
    ``stream``: answer with server-sent events of the work's progress and its JSON result
    (:mod:`service.api.events`), once the plan is admitted and the slots are taken.
    ``stages``: filled in with the time each stage was reached (not for a stream).
    """
    stages = stages or Stages()
    manager = devices_of(request)
    if prepare_in_worker and settings_of(request).isolate:
        plan, ctx.budget = await manager.run_body(prepare_elsewhere, (prepare, ctx))
    elif prepare_on_loop and is_small(request, body_bytes):
        try:
            plan = _prepare_on_loop(prepare, ctx)
        except PlanOffLoop:
            ctx.budget = Budget.from_limits(ctx.limits, ctx.throughput)
            plan = await run_in_threadpool(prepare, ctx)
    else:
        plan = await run_in_threadpool(prepare, ctx)
    stages.planned = time.perf_counter_ns()
    used = devices or [ctx.device]
    limit = settings_of(request).limits.max_response_bytes
    answer = getattr(plan, "answer", None)  # the answer's tensors, where the plan knows them
    if answer is not None:
        check_answer_size(answer, encoding, limit)
    job = ComputeJob(compute, plan, encoding, used, limit, encode, sized=answer is not None)
    budget = ctx.budget
    if stream:
        return await _stream(request, job, used, autograd)
    if (
        inline_when_tiny
        and devices is None
        and ctx.device.type == "cpu"
        and budget.elements <= INLINE_ELEMENTS
        and budget.flops <= INLINE_FLOPS
        and budget.objects <= INLINE_OBJECTS
        and budget.seconds <= INLINE_SECONDS
    ):
        stages.started = time.perf_counter_ns()
        return _answer(manager.run_inline(run_job, job, autograd=autograd), stages)
    settings = settings_of(request)
    job.shared = settings.isolate
    job.one_thread = runs_on_one_thread(budget, settings.worker_threads or torch.get_num_threads())
    lease = await manager.lease(used)
    stages.started = time.perf_counter_ns()
    try:
        work = manager.run_isolated(run_job, job, used, autograd=autograd, lease=lease)
        grace = LEFT_GRACE_SECONDS if budget.seconds <= LEFT_GRACE_SECONDS else 0.0
        response = _answer(await unless_client_leaves(request, work, grace), stages)
    except BaseException:
        lease.release()
        raise
    response.on_sent = lease.release
    return response


async def unless_client_leaves(
    request: Request, work: Coroutine[Any, Any, T], grace: float = 0.0
) -> T:
    """``work``'s result; if the client closes its connection first, ``work`` is given
    ``grace`` seconds more to finish, then cancelled (a worker process running it is killed,
    its slots are free at once), and :class:`ClientLeft` raised. Else the work would run to
    its end, holding its slots, for nobody: uvicorn does not cancel a request whose client
    has left."""
    task = asyncio.ensure_future(work)
    left = asyncio.ensure_future(_disconnect(request.receive))
    gone = False
    try:
        await asyncio.wait((task, left), return_when=asyncio.FIRST_COMPLETED)
        gone = left.done()
        if gone and not task.done() and grace > 0:
            await asyncio.wait((task,), timeout=grace)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        left.cancel()
    if not gone:
        return task.result()
    if not task.cancelled():
        task.exception()  # retrieved: the answer (or error) of a client that left is dropped
    raise ClientLeft("the client closed the connection; its work was stopped")


async def _disconnect(receive: Receive) -> None:
    """Returns once the client has closed the connection (the body has been read: what
    ``receive`` gives now is that)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _prepare_on_loop(prepare: Callable[[ComputeContext], P], ctx: ComputeContext) -> P:
    """``prepare(ctx)``, stopped by :class:`PlanOffLoop` once it charges more than
    :data:`INLINE_OBJECTS` objects or a tensor over :data:`LOOP_PLAN_ELEMENTS`, or, at its
    next charge, once it has taken more than :data:`LOOP_PLAN_SECONDS` (the caller prepares
    again, in a thread)."""
    budget = ctx.budget
    budget.loop_objects, budget.loop_elements = INLINE_OBJECTS, LOOP_PLAN_ELEMENTS
    budget.loop_until = time.perf_counter() + LOOP_PLAN_SECONDS
    try:
        return prepare(ctx)
    finally:
        budget.loop_objects = budget.loop_elements = budget.loop_until = None


async def _stream(
    request: Request, job: ComputeJob[Any], used: list[torch.device], autograd: bool
) -> Response:
    manager = devices_of(request)
    job.shared = settings_of(request).isolate
    lease = await manager.lease(used)

    async def work(progress: Progress) -> bytes | memoryview:
        ran = await manager.run_isolated(
            run_job, job, used, autograd=autograd, lease=lease, on_progress=progress
        )
        result = ran.body
        assert isinstance(result, bytes | Blob), "streamed results are JSON"
        return memoryview(result.view()) if isinstance(result, Blob) else result

    try:
        return event_stream(request, work, lease.release)
    except BaseException:
        lease.release()
        raise


def _answer(ran: Ran, stages: Stages) -> PacedBodyResponse:
    stages.finished = time.perf_counter_ns()
    stages.compute_ns = ran.compute_ns
    result = ran.body
    if isinstance(result, Png):
        return png_response(result.data, result.headers)
    if isinstance(result, SharedPng):
        return png_response(result.blob.view(), result.headers)  # sent piece by piece
    if isinstance(result, BinaryBody):
        return BinaryResponse(result)
    if isinstance(result, Blob):
        return FastJSONResponse(result.view())  # sent from the shared memory, piece by piece
    return FastJSONResponse(result)
