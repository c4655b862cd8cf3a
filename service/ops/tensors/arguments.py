"""How ops read their arguments: dtype names, sizes (checked as shapes against the element
limit) and dimension lists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from service.codec import check_shape, parse_dtype
from service.ops.tensors.runtime import Context


def dtype_arg(args: Mapping[str, Any], key: str = "dtype") -> torch.dtype | None:
    """The dtype named by ``args[key]``, or ``None`` when it is absent or null."""
    name = args.get(key)
    return None if name is None else parse_dtype(name, key)


def size_arg(args: Mapping[str, Any], ctx: Context, what: str, key: str = "size") -> list[int]:
    """The size in ``args[key]``, refused over the element limit (or with a dimension longer
    than it, even beside a 0) before anything exists."""
    size = list(args[key])
    check_shape(size, ctx.max_elements, what)
    return size


def dims_arg(value: Any) -> Any:
    """A ``dim`` argument as torch takes it: a list of dimensions becomes a tuple."""
    return tuple(value) if isinstance(value, list) else value
