"""Admission control: elements, FLOPs and time, checked before memory is allocated.

Shapes are known before any work: ``/tensor/ops`` runs each program once on torch's
``meta`` device (shapes and dtypes, no storage) and charges every step to a
:class:`Budget`; only a program that fits runs for real.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from service.calibration import Throughput
from service.codec import MAX_DIMS, check_shape
from service.config import Limits, Settings
from service.errors import ComputeTimeout, ErrorCode, InvalidInput, LimitExceeded

OBJECT_SECONDS = 2e-6
"""Predicted time of one Python-level object (a name, a piece, a batch): microseconds."""


class MatmulDims(NamedTuple):
    """``torch.matmul(a, b)``'s sizes by its rules (1-D operands padded to matrices): the
    broadcast batch's elements, each operand's own batch, and m, k, n."""

    batch: int
    batch_a: int
    batch_b: int
    m: int
    k: int
    n: int


def matmul_dims(a_shape: Sequence[int], b_shape: Sequence[int]) -> MatmulDims:
    a = list(a_shape) if len(a_shape) > 1 else [1, *a_shape]
    b = list(b_shape) if len(b_shape) > 1 else [*b_shape, 1]
    batch_a, batch_b = a[:-2], b[:-2]
    width = max(len(batch_a), len(batch_b))
    batch_a = [1] * (width - len(batch_a)) + batch_a
    batch_b = [1] * (width - len(batch_b)) + batch_b
    batch = math.prod(max(x, y) for x, y in zip(batch_a, batch_b, strict=True))
    return MatmulDims(batch, math.prod(batch_a), math.prod(batch_b), a[-2], a[-1], b[-1])


def estimate_matmul_flops(a_shape: Sequence[int], b_shape: Sequence[int]) -> int:
    """FLOPs of ``torch.matmul(a, b)``: 2·m·k·n per batch element (a multiply and an add).

    Follows matmul's rules for 1-D operands and broadcast batch dimensions.
    """
    d = matmul_dims(a_shape, b_shape)
    return 2 * d.batch * d.m * d.k * d.n


def matmul_copies(a_shape: Sequence[int], b_shape: Sequence[int]) -> list[int]:
    """Elements of the copies ``torch.matmul(a, b)`` makes of its operands before it
    multiplies: with batch dimensions on both sides, each operand whose batch is smaller
    than the broadcast one is expanded to it and copied out (a [1024, 1, 1, 256] by a
    [1, 1024, 256, 1] copies 2 × 1024² × 256 elements, 2 GB of float32, for 1.5 million
    elements of operands and output). An operand of one or two dimensions is folded into
    the other's rows instead: no copy."""
    if len(a_shape) <= 2 or len(b_shape) <= 2:
        return []
    d = matmul_dims(a_shape, b_shape)
    return [
        d.batch * rows * cols
        for own, rows, cols in ((d.batch_a, d.m, d.k), (d.batch_b, d.k, d.n))
        if own < d.batch
    ]


MATMUL_READ_PASSES = 4.0
"""Element passes charged per element a float matmul reads: a thin one (a matrix by a
vector) is bound by memory, not FLOPs, and ran 16 to 62 times slower than its FLOPs at the
calibrated (square) rate; at 4 passes a read, [1, 2²⁰] @ [2²⁰, 8] is charged 5.7 ms (4.7
measured) on 2 cores."""
INTEGER_MATMUL_READ_PASSES = 160.0
"""The same for integers, which torch multiplies without BLAS: an int64 [4096, 4096] @
[4096, 1] took 359 ms (0.05 G elements read a second) where its FLOPs at the int64 rate
(measured square) predicted 2 ms; int32 [4096, 4096] @ [4096, 16] took 168 ms."""


HALF_FLOATS = frozenset({torch.float16, torch.bfloat16})
"""The 16-bit floats: their CPU kernels convert each element, and some of them run another
way on a CPU (products, softmax, convolutions, blurs in float32)."""

HALF_PRODUCT_MAX_K = 1 << 19
"""Longest reduction a product of 16-bit floats runs in its own dtype on a CPU: past it,
torch's float16 ``linear`` (a product by a transposed matrix) fell to 0.1 GFLOP/s, 1000
times its rate at half the length: [64, 2²⁰] by [64, 2²⁰]ᵀ took 71 s."""
HALF_PRODUCT_MIN_SIDE = 16
"""Narrowest product of 16-bit floats that runs in its own dtype on a CPU: a thinner one
(m or n at most this) took bfloat16's kernel 0.15 GFLOP/s and 16 bytes of scratch per byte
of its operands ([2, 2²³] @ [2²³, 2]: 1 GB)."""


def widened_product(
    a_shape: Sequence[int], b_shape: Sequence[int], dtype: torch.dtype, device_type: str
) -> bool:
    """Whether ``torch.matmul(a, b)`` of 16-bit floats runs in float32 (and is cast back) on
    ``device_type``: on a CPU, when it is long (:data:`HALF_PRODUCT_MAX_K`) or thin
    (:data:`HALF_PRODUCT_MIN_SIDE`); float32 is predictable there, the half kernels are not."""
    return _widened(matmul_dims(a_shape, b_shape), dtype, device_type)


def _widened(d: MatmulDims, dtype: torch.dtype, device_type: str) -> bool:
    if device_type != "cpu" or dtype not in HALF_FLOATS:
        return False
    return d.k > HALF_PRODUCT_MAX_K or min(d.m, d.n) <= HALF_PRODUCT_MIN_SIDE


class PlanOffLoop(Exception):
    """A plan being made on the event loop is about to make more objects one by one than
    :attr:`Budget.loop_objects` allows (``split`` into 300,000 pieces is a tiny body, and
    its plan builds every piece), charges a tensor over :attr:`Budget.loop_elements` (a
    convolution's random weight of 33 million values took 0.3 to 1 s to draw), or has taken
    longer than :attr:`Budget.loop_until` (a small body's steps may each be slow to plan:
    torch's meta kernel of a floor division is Python code, 3 to 4.5 ms a step): the caller
    makes it again off the loop."""


class Budget:
    """What one request may still create and compute; every charge is checked on the spot."""

    def __init__(
        self,
        max_elements: int,
        max_total_elements: int,
        max_flops: float,
        *,
        throughput: Throughput | None = None,
        max_seconds: float = math.inf,
        max_objects: int = 1 << 62,
    ) -> None:
        self.max_elements = max_elements
        self.max_total_elements = max_total_elements
        self.max_flops = max_flops
        self.throughput = throughput
        self.max_seconds = max_seconds
        self.max_objects = max_objects
        self.objects = 0
        self.elements = 0
        self.flops = 0.0
        self.seconds = 0.0
        self.serial_steps = 1
        """Steps that run one after another, each waiting for the last (an RNN's time steps,
        an optimizer's steps): the work's grain is ``seconds / serial_steps``."""
        self.loop_objects: int | None = None
        """While the plan is made on the event loop: the most objects it may charge before
        :class:`PlanOffLoop` sends it to a thread."""
        self.loop_elements: int | None = None
        """While the plan is made on the event loop: the largest tensor it may charge before
        :class:`PlanOffLoop` sends it to a thread (a plan may build what it charges: a
        convolution's random weight)."""
        self.loop_until: float | None = None
        """While the plan is made on the event loop: the ``time.perf_counter()`` past which
        its next charge raises :class:`PlanOffLoop`."""

    @classmethod
    def from_limits(cls, limits: Limits, throughput: Throughput | None = None) -> Budget:
        """A budget of the limits; with the device's ``throughput`` it also predicts the
        work's time and refuses a plan predicted to run past ``request_timeout_s``."""
        return cls(
            limits.max_elements,
            limits.max_total_elements,
            limits.max_flops,
            throughput=throughput,
            max_seconds=limits.request_timeout_s,
            max_objects=limits.max_objects,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Budget:
        return cls.from_limits(settings.limits)

    def state(self) -> tuple[Any, ...]:
        """Everything a charge depends on and changes: the limits, the rates they are
        predicted at (by identity) and what has been charged so far. Two budgets in the same
        state accept and refuse the same charges and end in the same state."""
        return (
            self.max_elements,
            self.max_total_elements,
            self.max_flops,
            self.max_seconds,
            self.max_objects,
            id(self.throughput),
            self.objects,
            self.elements,
            self.flops,
            self.seconds,
            self.serial_steps,
        )

    def charged(self) -> tuple[int, int, float, float, int]:
        """What has been charged so far (for :meth:`restore`)."""
        return self.objects, self.elements, self.flops, self.seconds, self.serial_steps

    def restore(self, charged: tuple[int, int, float, float, int]) -> None:
        """Charged as :meth:`charged` returned: the charges a budget in this one's
        :meth:`state` made, taken as made again."""
        self.objects, self.elements, self.flops, self.seconds, self.serial_steps = charged

    def _leave_the_loop_when_overdue(self) -> None:
        """:class:`PlanOffLoop` once a plan made on the event loop is past ``loop_until``."""
        if self.loop_until is not None and time.perf_counter() > self.loop_until:
            raise PlanOffLoop

    def charge_tensor(self, numel: int, what: str) -> None:
        """Charge one tensor of ``numel`` elements (the per-tensor and per-request limits)."""
        if numel > self.max_elements:
            raise LimitExceeded("max_elements", self.max_elements, numel, what)
        if self.loop_elements is not None and numel > self.loop_elements:
            raise PlanOffLoop
        self.charge_tensors(numel, what)

    def charge_tensors(self, numel: int, what: str) -> None:
        """Charge ``numel`` elements held in many tensors, none larger than one already
        charged (what an autograd graph keeps): toward the request's total only."""
        self._leave_the_loop_when_overdue()
        self.elements += numel
        if self.elements > self.max_total_elements:
            raise LimitExceeded(
                "max_total_elements",
                self.max_total_elements,
                self.elements,
                f"{what} brings the request's tensors to a total that",
            )
        if self.throughput is not None:
            self.charge_seconds(numel / self.throughput.elements_per_s, what)

    def charge_shape(self, shape: Sequence[int], what: str) -> None:
        """Charge a tensor by its shape: at most ``MAX_DIMS`` dimensions (422), no dimension
        longer than ``max_elements`` even beside a 0 (413), then its elements."""
        if len(shape) > MAX_DIMS:
            raise InvalidInput(
                f"{what}: a tensor has at most {MAX_DIMS} dimensions, this one would have "
                f"{len(shape)}",
                details={"ndim": len(shape), "max_ndim": MAX_DIMS},
                code=ErrorCode.TOO_MANY_DIMS,
            )
        check_shape(shape, self.max_elements, what)
        numel = math.prod(shape)
        if numel == 0:
            self.charge_empty_lists(shape, what)
        self.charge_tensor(numel, what)

    def charge_empty_lists(self, shape: Sequence[int], what: str) -> None:
        """Charge the nested lists a JSON answer writes for a tensor without values, as
        objects: one per index before its first zero dimension (``[2**25, 0]`` is 2**25
        empty lists, 100 MB of ``[]`` that took orjson 2.8 s and 3 GB to write, for no
        element charged). A tensor with values writes fewer lists than values, which its
        elements already pay for."""
        lists = 1
        for size in shape:
            if size == 0:
                break
            lists *= int(size)
        if lists > 1:
            self.charge_objects(lists, f"{what}: {lists:,} empty lists")

    def charge_objects(self, count: int, what: str) -> None:
        """Charge ``count`` things made one by one in Python (tensors a step returns, names
        per column, labels per class, batches, frames, points): however small each is, their
        number is bounded (``max_objects``) and their time predicted, before the loop that
        makes them."""
        self._leave_the_loop_when_overdue()
        self.objects += count
        if self.objects > self.max_objects:
            raise LimitExceeded("max_objects", self.max_objects, self.objects, what)
        if self.loop_objects is not None and self.objects > self.loop_objects:
            raise PlanOffLoop
        self.charge_seconds(count * OBJECT_SECONDS, what)

    def charge_flops(self, flops: float, what: str, dtype: torch.dtype | None = None) -> None:
        """Charge estimated floating-point operations against the per-request limit and, at
        the device's rate for ``dtype`` (float32 by default), against the time limit."""
        self.flops += flops
        if self.flops > self.max_flops:
            raise LimitExceeded("max_flops", self.max_flops, self.flops, what)
        if self.throughput is not None:
            self.charge_seconds(flops / self.throughput.rate(dtype), what)

    @property
    def device_type(self) -> str:
        """The type of the device the budget's rates are of (``cpu`` when it has none)."""
        device = self.throughput.device if self.throughput is not None else "cpu"
        return str(device).split(":")[0]

    def charge_matmul(
        self, a_shape: Sequence[int], b_shape: Sequence[int], what: str, dtype: torch.dtype
    ) -> None:
        """Charge ``torch.matmul(a, b)``'s work: the copies it makes of its operands
        (:func:`matmul_copies`) as tensors, its FLOPs at ``dtype``'s rate, and its reads of
        the operands as element passes (what bounds a thin one). A product of 16-bit floats
        that runs in float32 (:func:`widened_product`) is charged at float32's rate, with
        float32 copies of its operands and output."""
        for copy in matmul_copies(a_shape, b_shape):
            self.charge_tensor(copy, f"{what} (an operand copied out to the broadcast batch)")
        d = matmul_dims(a_shape, b_shape)
        if _widened(d, dtype, self.device_type):
            sizes = (d.batch_a * d.m * d.k, d.batch_b * d.k * d.n, d.batch * d.m * d.n)
            for numel in sizes:
                self.charge_tensor(numel, f"{what} (in float32)")
            self.charge_elementwise(2 * sum(sizes), f"{what}: to float32 and back")
            dtype = torch.float32
        self.charge_flops(2.0 * d.batch * d.m * d.k * d.n, what, dtype=dtype)
        floats = dtype.is_floating_point or dtype.is_complex
        passes = MATMUL_READ_PASSES if floats else INTEGER_MATMUL_READ_PASSES
        self.charge_elementwise(passes * d.batch * d.k * (d.m + d.n), f"{what}: its reads")

    def charge_elementwise(self, count: float, what: str) -> None:
        """Charge memory-bound work over ``count`` elements (copies, transforms, encoding)."""
        if self.throughput is not None:
            self.charge_seconds(count / self.throughput.elements_per_s, what)

    def count_serial_steps(self, count: int) -> None:
        """The work runs as ``count`` more steps one after another (see ``serial_steps``)."""
        self.serial_steps += count

    def charge_seconds(self, seconds: float, what: str) -> None:
        """Charge predicted seconds; past the time limit the plan is refused (413
        ``over_time_budget``) instead of being stopped at its deadline."""
        self.seconds += seconds
        if self.seconds > self.max_seconds and self.throughput is not None:
            device = self.throughput.device if self.throughput is not None else "the device"
            raise LimitExceeded(
                "request_timeout_s",
                self.max_seconds,
                self.seconds,
                what,
                message=(
                    f"{what} is predicted to take {self.seconds:.3g} s on {device}, more than "
                    f"the limit request_timeout_s of {self.max_seconds:g} s; ask for less work "
                    "(smaller tensors, fewer steps, a faster dtype such as float32)"
                ),
            )


PROGRESS_INTERVAL_S = 0.1
"""The shortest time between two progress events of one request."""


class Deadline:
    """The request's time limit, checked between units of work (steps, repeats).

    A compute thread cannot be interrupted; the route stops waiting at the deadline
    (504) and the work itself stops at its next check.
    """

    def __init__(self, seconds: float, *, streaming: bool = False) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.cancelled = False
        self.streaming = streaming
        """The caller follows the work's progress: where it runs, set :attr:`reporter`."""
        self.reporter: Callable[[dict[str, Any]], None] | None = None
        """Where :meth:`progress` sends its events (not pickled: each process sets its own)."""
        self._reported = -math.inf
        self._done = -1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["reporter"] = None
        return state

    def progress(
        self, done: int, total: int, unit: str, *, final: bool = False, **extra: Any
    ) -> None:
        """Tell a streaming caller how far the work is: ``done`` of ``total`` ``unit``s,
        with ``extra`` facts (the current loss, the device). At most one event every
        :data:`PROGRESS_INTERVAL_S`, besides the last one (``done == total``, or ``final``:
        work that stops early); nothing when nobody follows, nor twice for one ``done``."""
        if self.reporter is None or done == self._done:
            return
        now = time.monotonic()
        if done < total and not final and now - self._reported < PROGRESS_INTERVAL_S:
            return
        self._reported, self._done = now, done
        self.reporter({"done": done, "total": total, "unit": unit, **extra})

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def check(self) -> None:
        """Raise :class:`ComputeTimeout` once the time is up (or the request was abandoned)."""
        if self.cancelled or time.monotonic() > self.expires:
            raise ComputeTimeout(
                f"the request ran past its time limit of {self.seconds:g} s",
                details={"limit": "request_timeout_s", "allowed": self.seconds},
            )
