"""A ``/tensor/ops`` program planned, then run.

A program runs twice: first on the ``meta`` device, where every step yields its output's
shape and dtype without storage, so element and FLOP limits are charged before any memory
is allocated (:func:`plan_program`); then, if it fits, on the real device
(:func:`run_program`). The interpreter itself is :mod:`service.ops.tensors.interpreter`,
the ops are listed in :mod:`service.ops.tensors.table`.

The plan depends on no tensor's values, only on the steps, the inputs' shapes, dtypes and
strides, and the budget it is charged to; so a short program planned once is not planned
again: :class:`PlanCache` keeps what its plan returned and charged. On a tiny request the
meta pass is a fifth of the server's time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline
from service.ops.tensors.interpreter import execute
from service.ops.tensors.runtime import META, Context, Value
from service.ops.tensors.table import OPS

__all__ = [
    "META",
    "OPS",
    "PLANS",
    "Context",
    "PlanCache",
    "Shaped",
    "Value",
    "execute",
    "plan_program",
    "run_program",
    "warm_up",
]


KEY_ROOM = 512
"""The most a kept plan's key may hold, counted as its values plus the characters of its
strings (names, index expressions): a program over it (long lists, long names) is planned
each time. With :class:`PlanCache`'s 256 entries this bounds the memory keys take to a few
MB, whatever programs are sent."""


class _Uncachable(Exception):
    """A program whose plan is not kept: a step argument of a kind :class:`_Key` does not
    know, or a key over :data:`KEY_ROOM`."""


class _Key:
    """Writes what the plan can depend on in step arguments, within ``room``: each value
    with its type (``1``, ``1.0`` and ``True`` are equal in Python but not to torch's type
    promotion), and of a tensor its shape, dtype, strides and device, not its values."""

    __slots__ = ("room",)

    def __init__(self, room: int) -> None:
        self.room = room

    def of(self, value: Any) -> Hashable:
        self.room -= 1
        kind = type(value)
        if kind is str:
            self.room -= len(value)
            if self.room < 0:
                raise _Uncachable
            return value  # type: ignore[no-any-return]  # a str
        if value is None:
            return None
        if kind is int or kind is bool:
            return kind, value
        if kind is float:
            return kind, value.hex()  # -0.0 and 0.0 apart, NaN equal to itself
        if kind is list or kind is tuple:
            self.room -= len(value)  # before a long list is walked
            if self.room < 0:
                raise _Uncachable
            return kind, tuple(map(self.of, value))
        if kind is torch.Tensor:
            return kind, tuple(value.shape), value.dtype, value.stride(), value.device
        raise _Uncachable


Shaped = tuple[tuple[int, ...], torch.dtype]
"""A tensor's shape and dtype, without the tensor."""


class _Planned(NamedTuple):
    throughput: object
    """The budget's rates, held: while the plan is kept, no other rates can take the
    ``id`` its key holds (:meth:`~service.limits.Budget.state`)."""
    names: tuple[str, ...]
    charged: tuple[int, int, float, float, int]
    answer: tuple[Shaped, ...]


class PlanCache:
    """The plans of the last ``entries`` programs of at most ``max_steps`` steps: the names
    each returns and what it charged, by what planning it depended on (the budget's
    :meth:`~service.limits.Budget.state`, the steps' arguments and the inputs' shapes,
    dtypes and strides). Only plans that fitted are kept: a program that is refused is
    planned, and refused, again. Shared by the threads that plan."""

    def __init__(self, entries: int = 256, max_steps: int = 16) -> None:
        self.entries = entries
        self.max_steps = max_steps
        self._plans: OrderedDict[Hashable, _Planned] = OrderedDict()
        self._lock = threading.Lock()

    def key(
        self,
        inputs: Mapping[str, torch.Tensor],
        steps: Sequence[Mapping[str, Any]],
        returns: Sequence[str] | None,
        budget: Budget,
    ) -> Hashable | None:
        """The program's key, or ``None`` for one not kept (too many steps, a key over
        :data:`KEY_ROOM`, or an argument of a kind not known)."""
        if len(steps) > self.max_steps:
            return None
        of = _Key(KEY_ROOM).of
        try:
            return (
                budget.state(),
                None if returns is None else of(returns),
                tuple([(of(name), of(tensor)) for name, tensor in inputs.items()]),
                tuple([tuple([(k, of(v)) for k, v in step.items()]) for step in steps]),
            )
        except _Uncachable:
            return None

    def get(
        self, key: Hashable, budget: Budget, answer: list[Shaped] | None = None
    ) -> list[str] | None:
        """The names of the plan kept under ``key``, its charges made to ``budget``; the
        tensors it returns put in ``answer``."""
        with self._lock:
            planned = self._plans.get(key)
            if planned is None:
                return None
            self._plans.move_to_end(key)
        budget.restore(planned.charged)
        if answer is not None:
            answer.extend(planned.answer)
        return list(planned.names)

    def put(
        self, key: Hashable, names: Sequence[str], budget: Budget, answer: Sequence[Shaped]
    ) -> None:
        """Keep the plan that returned ``names`` (of the tensors ``answer``) and left
        ``budget`` charged as it is."""
        with self._lock:
            self._plans[key] = _Planned(
                budget.throughput, tuple(names), budget.charged(), tuple(answer)
            )
            self._plans.move_to_end(key)
            while len(self._plans) > self.entries:
                self._plans.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()


PLANS = PlanCache()
"""The process's plans (each server process, and each body worker, keeps its own)."""


def plan_program(
    inputs: Mapping[str, torch.Tensor],
    steps: Sequence[Mapping[str, Any]],
    returns: Sequence[str] | None,
    budget: Budget,
    plans: PlanCache | None = PLANS,
    *,
    answer: list[Shaped] | None = None,
) -> list[str]:
    """Run the program on ``meta`` (shapes and dtypes only) and charge it to ``budget``;
    or, for a program ``plans`` has planned before in the same state, make the charges its
    plan made.

    Raises before anything is allocated if a step is over a limit or invalid. Returns the
    names to return (``returns``, default: what the last step stored), and puts the shape
    and dtype of every tensor they hold in ``answer`` (to size the response before the
    work).
    """
    key = None if plans is None else plans.key(inputs, steps, returns, budget)
    if key is None:
        return _plan(inputs, steps, returns, budget, answer)
    assert plans is not None
    names = plans.get(key, budget, answer)
    if names is not None:
        return names
    shaped: list[Shaped] = []
    names = _plan(inputs, steps, returns, budget, shaped)
    plans.put(key, names, budget, shaped)
    if answer is not None:
        answer.extend(shaped)
    return names


def _shaped(value: Any, into: list[Shaped]) -> None:
    if isinstance(value, torch.Tensor):
        into.append((tuple(value.shape), value.dtype))
    elif isinstance(value, dict):
        for item in value.values():
            _shaped(item, into)
    elif isinstance(value, list | tuple):
        for item in value:
            _shaped(item, into)


def _plan(
    inputs: Mapping[str, torch.Tensor],
    steps: Sequence[Mapping[str, Any]],
    returns: Sequence[str] | None,
    budget: Budget,
    answer: list[Shaped] | None = None,
) -> list[str]:
    meta = Context(META, budget=budget, max_elements=budget.max_elements)
    if returns:
        budget.charge_objects(len(returns), f"{len(returns):,} names to return")
    planned, last = execute(inputs, steps, meta)
    names = list(returns) if returns else last
    missing = [name for name in names if name not in planned]
    if missing:
        raise InvalidInput(
            f"return: unknown names {missing}; known: {', '.join(sorted(planned))}",
            details={"unknown": missing, "known": sorted(planned)},
            code=ErrorCode.UNKNOWN_NAME,
        )
    if answer is not None:
        for name in names:
            _shaped(planned[name], answer)
    return names


def run_program(
    inputs: Mapping[str, torch.Tensor],
    steps: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    *,
    device: torch.device,
    deadline: Deadline | None = None,
    seed: int | None = None,
    max_elements: int = 1 << 62,
) -> dict[str, Value]:
    """Run a planned program on ``device``; return the values called ``names``."""
    real = Context(device, deadline=deadline, seed=seed, max_elements=max_elements)
    env, _ = execute(inputs, steps, real)
    return {name: env[name] for name in names}


def warm_up() -> None:
    """Run a small program through the common ops once.

    torch loads many of its meta-device kernels on first use, which costs a second or more;
    paying it at start-up keeps that out of the first requests.
    """
    steps: list[dict[str, Any]] = [
        {"op": "arange", "start": 0, "end": 16, "step": 1, "dtype": "float32", "out": "a"},
        {"op": "reshape", "x": "a", "shape": [2, 2, 4], "out": "a"},
        {"op": "index", "x": "a", "index": "[:, 1, :-1]", "out": "b"},
        {"op": "cat", "tensors": ["a", "a"], "dim": 0, "out": "c"},
        {"op": "stack", "tensors": ["a", "a"], "dim": 0, "out": "c"},
        {"op": "sum", "x": "a", "dim": 0, "keepdim": False, "dtype": None, "out": "c"},
        {"op": "t", "x": "b", "out": "c"},
        {"op": "matmul", "x": "b", "y": "c", "out": "c"},
        {"op": "add", "x": "a", "y": 1, "alpha": 1, "out": "c"},
        {"op": "expand", "x": "b", "size": [3, 2, 3], "out": "c"},
        {"op": "transpose", "x": "a", "dim0": 0, "dim1": 1, "out": "c"},
        {"op": "softmax", "x": "a", "dim": 0, "dtype": None, "out": "c"},
        {"op": "max", "x": "a", "dim": 0, "keepdim": False, "out": "c"},
    ]
    names = plan_program({}, steps, None, Budget(1 << 20, 1 << 20, 1e9))
    run_program({}, steps, names, device=torch.device("cpu"))
