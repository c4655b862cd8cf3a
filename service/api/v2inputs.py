"""The checks of an inference request's inputs that come before their tensors are read.

Shared by the V2 route (:func:`service.api.inference.infer_call`) and the body worker
(:mod:`service.api.bodies`), which reads a large request's tensors first: either way a
request fails these checks with the same error, before any of its data is decoded.
"""

from __future__ import annotations

from schemas.v2 import InferenceRequest
from service.api.binary import BINARY_SIZE
from service.codec import parse_dtype
from service.errors import ErrorCode, InvalidInput


def check_inputs(body: InferenceRequest, *, binary_pending: bool = False) -> None:
    """Each input named once, with a datatype torch has (BYTES is a 400) and its data.
    ``binary_pending``: an input with ``binary_data_size`` may have no data yet (the binary
    part is attached later)."""
    names: set[str] = set()
    for index, entry in enumerate(body.inputs):
        if entry.name in names:
            raise InvalidInput(
                f"inputs[{index}]: input {entry.name[:64]!r} is given twice",
                code=ErrorCode.DUPLICATE_FIELD,
            )
        names.add(entry.name)
        parse_dtype(entry.datatype, f"inputs[{index}].datatype")  # BYTES: a 400 first
        pending = binary_pending and BINARY_SIZE in (entry.parameters or {})
        if entry.data is None and not pending:
            raise InvalidInput(
                f"inputs[{index}] ({entry.name[:64]}) has no 'data' (nor parameters."
                f"{BINARY_SIZE} in a binary request)",
                code=ErrorCode.INVALID_TENSOR,
            )
