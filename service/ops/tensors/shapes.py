"""Shape ops: ``reshape view flatten squeeze unsqueeze permute transpose t cat stack split
chunk expand repeat contiguous clone index to info``.

``expand`` and ``repeat`` check the shape they produce (elements, longest dimension) before
torch builds it; ``index``
reads NumPy-style text through :mod:`service.ops.tensors.indexing`, never ``eval``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from service.codec import DTYPE_NAMES, check_shape
from service.errors import ErrorCode, InvalidInput
from service.ops.tensors.arguments import dims_arg, dtype_arg
from service.ops.tensors.indexing import IndexParseError, check_index, parse_index
from service.ops.tensors.runtime import Context, OpFn

PIECES_PER_CALL = 4096
"""Pieces of ``split`` or ``chunk`` made by one torch call. A call holds the interpreter
lock until it returns, and making a piece takes about 2 µs: split into 600,000 pieces held
it (and so the event loop, while its plan was made in a thread) for 1.3 s."""


def _split(args: Mapping[str, Any], ctx: Context) -> tuple[torch.Tensor, ...]:
    x: torch.Tensor = args["x"]
    size, dim = args["split_size_or_sections"], args["dim"]
    if not -x.dim() <= dim < x.dim():
        return torch.split(x, size, dim=dim)  # torch's refusal
    length = int(x.shape[dim])
    if isinstance(size, int):
        if size <= 0 or length <= size * PIECES_PER_CALL:
            return torch.split(x, size, dim=dim)
        sections = [size] * (length // size) + ([length % size] if length % size else [])
    else:
        sections = list(size)
        if len(sections) <= PIECES_PER_CALL or sum(sections) != length or min(sections) < 0:
            return torch.split(x, sections, dim=dim)
    pieces: list[torch.Tensor] = []
    start = 0
    for first in range(0, len(sections), PIECES_PER_CALL):
        group = sections[first : first + PIECES_PER_CALL]
        width = sum(group)
        pieces.extend(torch.split(x.narrow(dim, start, width), group, dim=dim))
        start += width
    return tuple(pieces)


def _chunk(args: Mapping[str, Any], ctx: Context) -> tuple[torch.Tensor, ...]:
    x: torch.Tensor = args["x"]
    chunks, dim = args["chunks"], args["dim"]
    if chunks <= PIECES_PER_CALL or not -x.dim() <= dim < x.dim():
        return torch.chunk(x, chunks, dim=dim)
    length = int(x.shape[dim])
    if length == 0:  # torch.chunk's answer: as many empty pieces as asked for
        return tuple(x.narrow(dim, 0, 0) for _ in range(chunks))
    return _split({"x": x, "split_size_or_sections": -(-length // chunks), "dim": dim}, ctx)


def _expand(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    x: torch.Tensor = args["x"]
    size = list(args["size"])
    target = [
        x.shape[i - len(size) + x.dim()] if s == -1 and i - len(size) + x.dim() >= 0 else s
        for i, s in enumerate(size)
    ]
    check_shape(target, ctx.max_elements, f"expand to {size}")
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
    check_shape(
        [s * r for s, r in zip(shape, repeats, strict=True)],
        ctx.max_elements,
        f"repeat {repeats} of shape {list(x.shape)}",
    )
    return x.repeat(*repeats)


def _index(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    x: torch.Tensor = args["x"]
    try:
        # Resolved against the shape, as NumPy resolves it: torch's int64 slice arithmetic
        # overflows on steps and bounds near 2**63.
        index = check_index(parse_index(args["index"]), tuple(x.shape))
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


SHAPE_OPS: dict[str, OpFn] = {
    "reshape": lambda a, c: torch.reshape(a["x"], a["shape"]),
    "view": lambda a, c: a["x"].view(a["shape"]),
    "flatten": lambda a, c: torch.flatten(a["x"], a["start_dim"], a["end_dim"]),
    "squeeze": lambda a, c: (
        torch.squeeze(a["x"]) if a["dim"] is None else torch.squeeze(a["x"], dims_arg(a["dim"]))
    ),
    "unsqueeze": lambda a, c: torch.unsqueeze(a["x"], a["dim"]),
    "permute": lambda a, c: torch.permute(a["x"], a["dims"]),
    "transpose": lambda a, c: torch.transpose(a["x"], a["dim0"], a["dim1"]),
    "t": lambda a, c: torch.t(a["x"]),
    "cat": lambda a, c: torch.cat(a["tensors"], dim=a["dim"]),
    "stack": lambda a, c: torch.stack(a["tensors"], dim=a["dim"]),
    "split": _split,
    "chunk": _chunk,
    "expand": _expand,
    "repeat": _repeat,
    "contiguous": lambda a, c: a["x"].contiguous(),
    "clone": lambda a, c: torch.clone(a["x"]),
    "index": _index,
    "to": lambda a, c: a["x"].to(dtype_arg(a)),
    "info": _info,
}
