"""The shape every compute route shares: admit, compute, encode.

A route gives a ``prepare`` (decode the request and charge its plan to a budget: refusals
happen here, before anything is allocated) and a ``compute`` (the real work, returning the
response content with tensors in it). Small bodies are prepared on the event loop, so a
refusal never waits for a compute slot; big ones in the compute thread, off the loop. A
prepared plan that is tiny on the CPU runs on the event loop too: a thread hop would cost
more than the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from fastapi import Request

from service.codec import Encoding, dumps, encode_tensor
from service.deps import devices_of
from service.limits import Budget, Deadline

P = TypeVar("P")

INLINE_BODY_BYTES = 16 * 1024
INLINE_ELEMENTS = 4096
INLINE_FLOPS = 1e5


def encode_tensors(content: Any, encoding: Encoding) -> Any:
    """``content`` with every tensor in it (in dicts and lists) encoded for the wire."""
    if isinstance(content, torch.Tensor):
        return encode_tensor(content, encoding)
    if isinstance(content, dict):
        return {key: encode_tensors(value, encoding) for key, value in content.items()}
    if isinstance(content, list | tuple):
        return [encode_tensors(value, encoding) for value in content]
    return content


def is_small(request: Request) -> bool:
    """Whether the body is small enough to decode and plan on the event loop."""
    return int(request.headers.get("content-length") or "0") <= INLINE_BODY_BYTES


async def run_compute(
    request: Request,
    device: torch.device,
    prepare: Callable[[], P],
    compute: Callable[[P, Deadline], dict[str, Any] | bytes],
    *,
    encoding: Encoding = "json",
    autograd: bool = False,
    budget: Callable[[P], Budget | None] = lambda plan: None,
    cheap_to_prepare: bool = True,
) -> bytes:
    """Prepare, compute on ``device`` and return the JSON body: the content of ``compute``
    with its tensors encoded, plus ``device`` and ``elapsed_ms`` (the compute time). Bytes
    from ``compute`` (a picture) are returned as they are.

    ``budget`` gives the prepared plan's budget, for the choice to run a tiny plan inline;
    ``cheap_to_prepare`` false keeps even a small body's preparation off the event loop.
    """
    devices = devices_of(request)
    prepared = prepare() if cheap_to_prepare and is_small(request) else None

    def work(deadline: Deadline) -> bytes:
        plan = prepared if prepared is not None else prepare()
        start = time.perf_counter()
        content = compute(plan, deadline)
        devices.synchronize(device)
        elapsed_ms = (time.perf_counter() - start) * 1000
        if isinstance(content, bytes):
            return content
        return dumps(
            {**encode_tensors(content, encoding), "device": str(device), "elapsed_ms": elapsed_ms}
        )

    spent = budget(prepared) if prepared is not None else None
    inline = (
        spent is not None
        and device.type == "cpu"
        and spent.elements <= INLINE_ELEMENTS
        and spent.flops <= INLINE_FLOPS
    )
    return await devices.run(work, [device], autograd=autograd, inline=inline)
