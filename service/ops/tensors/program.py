"""The ``/tensor/ops`` interpreter: named tensors, steps in order, torch's own functions.

A program runs twice: first on the ``meta`` device, where every step yields its output's
shape and dtype without storage, so element and FLOP limits are charged before any memory
is allocated; then, if it fits, on the real device. Steps are plain dicts (``op`` plus
torch's parameter names) whose tensor arguments are names, tensors or Python numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from service.codec import DTYPE_NAMES, check_elements, parse_dtype
from service.errors import ErrorCode, InvalidInput, OpError, ServiceError
from service.limits import Budget, Deadline, estimate_matmul_flops
from service.ops.tensors.indexing import IndexParseError, check_index, parse_index

Value = torch.Tensor | dict[str, Any]
META = torch.device("meta")


@dataclass
class Context:
    """Where a run happens and what it may spend."""

    device: torch.device
    budget: Budget | None = None
    deadline: Deadline | None = None
    seed: int | None = None
    max_elements: int = 1 << 62
    _generator: torch.Generator | None = field(default=None, repr=False)

    @property
    def is_meta(self) -> bool:
        return self.device.type == "meta"

    def generator(self, seed: int | None) -> torch.Generator | None:
        """A CPU generator: the step's own seed, else the request's (one stream), else fresh."""
        if self.is_meta:
            return None
        if seed is not None:
            return torch.Generator().manual_seed(seed)
        if self._generator is None:
            self._generator = torch.Generator()
            if self.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(self.seed)
        return self._generator


def _dtype(args: Mapping[str, Any], key: str = "dtype") -> torch.dtype | None:
    name = args.get(key)
    return None if name is None else parse_dtype(name, key)


def _size(args: Mapping[str, Any], ctx: Context, what: str, key: str = "size") -> list[int]:
    size = list(args[key])
    check_elements(math.prod(size), ctx.max_elements, what)
    return size


def _random(
    draw: Callable[..., torch.Tensor], args: Mapping[str, Any], ctx: Context, **kwargs: Any
) -> torch.Tensor:
    # Drawn on the CPU so a seed gives the same numbers on every device.
    size = _size(args, ctx, f"{draw.__name__} of size {list(args['size'])}")
    device = META if ctx.is_meta else torch.device("cpu")
    out = draw(
        *kwargs.pop("pos", ()),
        size,
        generator=ctx.generator(args.get("seed")),
        dtype=_dtype(args),
        device=device,
        **kwargs,
    )
    return out if ctx.is_meta else out.to(ctx.device)


def _full(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    size = _size(args, ctx, f"full of size {list(args['size'])}")
    return torch.full(size, args["fill_value"], dtype=_dtype(args), device=ctx.device)


def _factory(fn: Callable[..., torch.Tensor]) -> Callable[[Mapping[str, Any], Context], Any]:
    def run(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
        size = _size(args, ctx, f"{fn.__name__} of size {list(args['size'])}")
        return fn(size, dtype=_dtype(args), device=ctx.device)

    return run


def _planned(shape: list[int], dtype: torch.dtype | None) -> torch.Tensor:
    # A factory's shape and dtype are known from its arguments. torch's meta versions of
    # eye, arange and linspace run Python reference code (50-300 µs); this costs 2 µs.
    return torch.empty(shape, dtype=dtype or torch.get_default_dtype(), device=META)


def _eye(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    n, m = args["n"], args.get("m")
    check_elements(n * (n if m is None else m), ctx.max_elements, f"eye({n}, {m})")
    if ctx.is_meta:
        return _planned([n, n if m is None else m], _dtype(args))
    if m is None:
        return torch.eye(n, dtype=_dtype(args), device=ctx.device)
    return torch.eye(n, m, dtype=_dtype(args), device=ctx.device)


def _arange(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    start, end, step = args["start"], args["end"], args["step"]
    if not all(math.isfinite(v) for v in (start, end, step)):
        raise InvalidInput(
            f"arange: start, end and step must be finite, got {start}, {end}, {step}"
        )
    if step == 0:
        raise InvalidInput("arange: step must not be zero")
    count = max(0, math.ceil((end - start) / step))
    check_elements(count, ctx.max_elements, f"arange({start}, {end}, {step})")
    if ctx.is_meta:
        integral = all(isinstance(v, int) for v in (start, end, step))
        return _planned([count], _dtype(args) or (torch.int64 if integral else None))
    return torch.arange(start, end, step, dtype=_dtype(args), device=ctx.device)


def _linspace(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    check_elements(args["steps"], ctx.max_elements, f"linspace with {args['steps']} steps")
    if ctx.is_meta:
        return _planned([args["steps"]], _dtype(args))
    return torch.linspace(
        args["start"], args["end"], args["steps"], dtype=_dtype(args), device=ctx.device
    )


def _tensor(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    data: torch.Tensor = args["data"]
    return data.to(device=ctx.device, dtype=_dtype(args) or data.dtype)


def _expand(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    x: torch.Tensor = args["x"]
    size = list(args["size"])
    target = [
        x.shape[i - len(size) + x.dim()] if s == -1 and i - len(size) + x.dim() >= 0 else s
        for i, s in enumerate(size)
    ]
    check_elements(math.prod(target), ctx.max_elements, f"expand to {size}")
    # expand makes a view; its elements are charged like any output (the next op may copy).
    return x.expand(*size)


def _repeat(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    x: torch.Tensor = args["x"]
    repeats = list(args["repeats"])
    shape = [1] * (len(repeats) - x.dim()) + list(x.shape)
    if len(repeats) < x.dim():
        raise InvalidInput(
            f"repeat: {len(repeats)} repeats for a tensor of {x.dim()} dimensions; give at "
            "least one per dimension"
        )
    check_elements(
        math.prod(s * r for s, r in zip(shape, repeats, strict=True)),
        ctx.max_elements,
        f"repeat {repeats} of shape {list(x.shape)}",
    )
    return x.repeat(*repeats)


def _index(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    x: torch.Tensor = args["x"]
    try:
        index = parse_index(args["index"])
        check_index(index, tuple(x.shape))
    except IndexParseError as exc:
        raise InvalidInput(
            f"index {args['index']!r}: {exc}",
            details={"column": exc.position},
            code=ErrorCode.INVALID_INDEX,
        ) from exc
    except IndexError as exc:
        raise InvalidInput(
            f"index {args['index']!r} does not fit shape {list(x.shape)}: {exc}",
            code=ErrorCode.INVALID_INDEX,
        ) from exc
    if any(isinstance(i, slice) and i.step is not None and i.step < 0 for i in index):
        raise InvalidInput(
            f"index {args['index']!r}: torch does not support negative slice steps; use flip",
            code=ErrorCode.INVALID_INDEX,
        )
    return x[index]


def _dims(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _reduce(fn: Callable[..., torch.Tensor]) -> Callable[[Mapping[str, Any], Context], Any]:
    def run(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
        kwargs: dict[str, Any] = {"keepdim": args["keepdim"]}
        if "dtype" in args and args["dtype"] is not None:
            kwargs["dtype"] = _dtype(args)
        if "correction" in args:
            kwargs["correction"] = args["correction"]
        dim = _dims(args["dim"])
        if dim is None:
            if kwargs["keepdim"]:
                dim = tuple(range(args["x"].dim()))
            else:
                kwargs.pop("keepdim")
        return fn(args["x"], dim=dim, **kwargs) if dim is not None else fn(args["x"], **kwargs)

    return run


def _extremum(fn: Callable[..., Any]) -> Callable[[Mapping[str, Any], Context], Any]:
    def run(args: Mapping[str, Any], ctx: Context) -> Any:
        if args["dim"] is None:
            return fn(args["x"])
        values, indices = fn(args["x"], dim=args["dim"], keepdim=args["keepdim"])
        return {"": values, "indices": indices}

    return run


def _arg(fn: Callable[..., torch.Tensor]) -> Callable[[Mapping[str, Any], Context], Any]:
    return lambda args, ctx: fn(args["x"], dim=args["dim"], keepdim=args["keepdim"])


def _norm(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    x: torch.Tensor = args["x"]
    if not (x.is_floating_point() or x.is_complex()):
        raise InvalidInput(
            f"norm needs a float tensor, x is {DTYPE_NAMES[x.dtype]}; "
            "convert it first with a 'to' step"
        )
    p = {"Infinity": math.inf, "-Infinity": -math.inf}.get(args["p"], args["p"])
    norm: torch.Tensor = torch.norm(x, p=p, dim=_dims(args["dim"]), keepdim=args["keepdim"])
    return norm


def _info(args: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    x: torch.Tensor = args["x"]
    return {
        "shape": list(x.shape),
        "size": list(x.size()),
        "stride": list(x.stride()),
        "numel": x.numel(),
        "dtype": DTYPE_NAMES[x.dtype],
        "is_contiguous": x.is_contiguous(),
    }


def _clamp(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    if args["min"] is None and args["max"] is None:
        raise InvalidInput("clamp: give min, max or both")
    return torch.clamp(args["x"], min=args["min"], max=args["max"])


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    return lambda args, ctx: fn(args["x"])


OpFn = Callable[[Mapping[str, Any], Context], Any]

OPS: dict[str, OpFn] = {
    # factories
    "tensor": _tensor,
    "eye": _eye,
    "zeros": _factory(torch.zeros),
    "ones": _factory(torch.ones),
    "full": _full,
    "arange": _arange,
    "linspace": _linspace,
    "rand": lambda a, c: _random(torch.rand, a, c),
    "randn": lambda a, c: _random(torch.randn, a, c),
    "randint": lambda a, c: _random(torch.randint, a, c, pos=(a["low"], a["high"])),
    # shape
    "reshape": lambda a, c: torch.reshape(a["x"], a["shape"]),
    "view": lambda a, c: a["x"].view(a["shape"]),
    "flatten": lambda a, c: torch.flatten(a["x"], a["start_dim"], a["end_dim"]),
    "squeeze": lambda a, c: (
        torch.squeeze(a["x"]) if a["dim"] is None else torch.squeeze(a["x"], _dims(a["dim"]))
    ),
    "unsqueeze": lambda a, c: torch.unsqueeze(a["x"], a["dim"]),
    "permute": lambda a, c: torch.permute(a["x"], a["dims"]),
    "transpose": lambda a, c: torch.transpose(a["x"], a["dim0"], a["dim1"]),
    "t": lambda a, c: torch.t(a["x"]),
    "cat": lambda a, c: torch.cat(a["tensors"], dim=a["dim"]),
    "stack": lambda a, c: torch.stack(a["tensors"], dim=a["dim"]),
    "split": lambda a, c: torch.split(a["x"], a["split_size_or_sections"], dim=a["dim"]),
    "chunk": lambda a, c: torch.chunk(a["x"], a["chunks"], dim=a["dim"]),
    "expand": _expand,
    "repeat": _repeat,
    "contiguous": lambda a, c: a["x"].contiguous(),
    "clone": lambda a, c: torch.clone(a["x"]),
    "index": _index,
    "to": lambda a, c: a["x"].to(_dtype(a)),
    # elementwise
    "add": lambda a, c: torch.add(a["x"], a["y"], alpha=a["alpha"]),
    "sub": lambda a, c: torch.sub(a["x"], a["y"], alpha=a["alpha"]),
    "mul": lambda a, c: torch.mul(a["x"], a["y"]),
    "div": lambda a, c: torch.div(a["x"], a["y"], rounding_mode=a["rounding_mode"]),
    "pow": lambda a, c: torch.pow(a["x"], a["exponent"]),
    "clamp": _clamp,
    "neg": _unary(torch.neg),
    "abs": _unary(torch.abs),
    "exp": _unary(torch.exp),
    "log": _unary(torch.log),
    "sqrt": _unary(torch.sqrt),
    "sin": _unary(torch.sin),
    "cos": _unary(torch.cos),
    "tanh": _unary(torch.tanh),
    "sigmoid": _unary(torch.sigmoid),
    "relu": _unary(torch.relu),
    # reductions
    "sum": _reduce(torch.sum),
    "mean": _reduce(torch.mean),
    "std": _reduce(torch.std),
    "var": _reduce(torch.var),
    "max": _extremum(torch.max),
    "min": _extremum(torch.min),
    "argmax": _arg(torch.argmax),
    "argmin": _arg(torch.argmin),
    "norm": _norm,
    "cumsum": lambda a, c: torch.cumsum(a["x"], dim=a["dim"], dtype=_dtype(a)),
    "softmax": lambda a, c: torch.softmax(a["x"], dim=a["dim"], dtype=_dtype(a)),
    "matmul": lambda a, c: torch.matmul(a["x"], a["y"]),
    "info": _info,
}

TENSOR_ARGS = ("x", "y", "exponent", "data")


_NON_FINITE_SCALARS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _resolve(
    value: Any, env: Mapping[str, Value], ctx: Context, where: str, *, scalar_ok: bool = False
) -> Any:
    if isinstance(value, str):
        if value not in env and value in _NON_FINITE_SCALARS:
            # A non-finite number written as JSON allows: a Python scalar where one may
            # stand (y, exponent), else a 0-d tensor, as torch.tensor(float("nan")).
            number = _NON_FINITE_SCALARS[value]
            return number if scalar_ok else torch.tensor(number, device=ctx.device)
        if value not in env:
            known = ", ".join(sorted(env)) or "none yet"
            raise InvalidInput(
                f"{where}: unknown tensor {value!r}; known names: {known}",
                details={"name": value, "known": sorted(env)},
                code=ErrorCode.UNKNOWN_NAME,
            )
        found = env[value]
        if not isinstance(found, torch.Tensor):
            raise InvalidInput(f"{where}: {value!r} is an info result, not a tensor")
        return found
    if isinstance(value, torch.Tensor):
        if ctx.budget is not None:  # an inline tensor: it counts like an input
            ctx.budget.charge_tensor(value.numel(), where)
        return value.to(ctx.device)
    return value  # a Python number


def _flops(op: str, args: Mapping[str, Any], outputs: Sequence[torch.Tensor]) -> float:
    if op == "matmul":
        return estimate_matmul_flops(tuple(args["x"].shape), tuple(args["y"].shape))
    # Everything else is at most a few operations per element read or written.
    read = sum(t.numel() for k in TENSOR_ARGS if isinstance(t := args.get(k), torch.Tensor))
    read += sum(t.numel() for t in args.get("tensors", ()))
    return float(max(read, sum(t.numel() for t in outputs)))


def _store(result: Any, out: str) -> dict[str, Value]:
    if isinstance(result, torch.Tensor):
        return {out: result}
    if isinstance(result, (tuple, list)):
        return {f"{out}.{i}": piece for i, piece in enumerate(result)}
    if isinstance(result, dict) and "" in result:
        return {(out if key == "" else f"{out}.{key}"): value for key, value in result.items()}
    return {out: result}  # an info dict


def execute(
    inputs: Mapping[str, torch.Tensor],
    steps: Sequence[Mapping[str, Any]],
    ctx: Context,
) -> tuple[dict[str, Value], list[str]]:
    """Run the steps; return every named value and the names the last step stored."""
    env: dict[str, Value] = {name: t.to(ctx.device) for name, t in inputs.items()}
    if ctx.budget is not None:
        for name, tensor in env.items():
            assert isinstance(tensor, torch.Tensor)
            ctx.budget.charge_tensor(tensor.numel(), f"input {name!r}")
    last: list[str] = []
    for number, step in enumerate(steps):
        op = step["op"]
        where = f"step {number} ({op})"
        args = {key: value for key, value in step.items() if key not in ("op", "out")}
        for key in TENSOR_ARGS:
            if key in args:
                scalar_ok = key in ("y", "exponent")
                args[key] = _resolve(args[key], env, ctx, f"{where}.{key}", scalar_ok=scalar_ok)
        if "tensors" in args:
            args["tensors"] = [
                _resolve(v, env, ctx, f"{where}.tensors[{i}]")
                for i, v in enumerate(args["tensors"])
            ]
        try:
            result = OPS[op](args, ctx)
        except ServiceError as exc:
            if not exc.message.startswith("step "):
                exc.message = f"{where}: {exc.message}"
            exc.details.setdefault("step", number)
            raise
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
            # ArithmeticError: torch's OverflowError for a Python int beyond int64 (a fill
            # value, a scalar operand, a correction), which would otherwise be a 500.
            raise OpError(f"{where}: {exc}", details={"step": number, "op": op}) from exc
        stored = _store(result, step["out"])
        tensors = [v for v in stored.values() if isinstance(v, torch.Tensor)]
        if ctx.budget is not None:
            try:
                for name, value in stored.items():
                    if isinstance(value, torch.Tensor):
                        ctx.budget.charge_tensor(value.numel(), f"{where} output {name!r}")
                ctx.budget.charge_flops(_flops(op, args, tensors), where)
            except ServiceError as exc:
                exc.details.setdefault("step", number)  # as for limits checked inside ops
                raise
        if ctx.deadline is not None:
            ctx.deadline.check()
        env.update(stored)
        last = list(stored)
    return env, last


def plan_program(
    inputs: Mapping[str, torch.Tensor],
    steps: Sequence[Mapping[str, Any]],
    returns: Sequence[str] | None,
    budget: Budget,
) -> list[str]:
    """Run the program on ``meta`` (shapes and dtypes only) and charge it to ``budget``.

    Raises before anything is allocated if a step is over a limit or invalid. Returns the
    names to return (``returns``, default: what the last step stored).
    """
    meta = Context(META, budget=budget, max_elements=budget.max_elements)
    planned, last = execute(inputs, steps, meta)
    names = list(returns) if returns else last
    missing = [name for name in names if name not in planned]
    if missing:
        raise InvalidInput(
            f"return: unknown names {missing}; known: {', '.join(sorted(planned))}",
            details={"unknown": missing, "known": sorted(planned)},
            code=ErrorCode.UNKNOWN_NAME,
        )
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
