"""A response body: orjson writes its tensors as it meets them in the body's dicts and lists
(``tensors_as``), exactly as encoding each tensor first, in a walk of the body, would."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import orjson
import pytest
import torch

from service.api.binary import BinaryBody, body_view
from service.api.compute import Envelope, encode_response
from service.codec import binary_header, dumps, encode_tensor, raw_bytes


class _Pair(NamedTuple):
    first: torch.Tensor
    second: int


def _body() -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(3, 4, generator=generator, requires_grad=True)
    return {
        "outputs": {"out": torch.arange(4), "flag": torch.tensor(True)},
        "batches": [
            {"x": torch.randn(2, 3, generator=generator), "index": i, "meta": (1, 2.5, None)}
            for i in range(3)
        ],
        "pair": _Pair(torch.tensor([1.5, float("nan"), float("inf")]), 7),
        "shape": torch.Size([2, 3]),
        "grad": weights * 2,  # requires grad: detached to encode
        "half": torch.tensor([0.1, 65504.0], dtype=torch.float16),
        "brain": torch.tensor([0.1, -3.0], dtype=torch.bfloat16),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "view": torch.arange(12).reshape(3, 4).t(),  # not contiguous
        "numpy": np.float32(0.25),
        "text": "label",
    }


def _walked(value: Any, encoding: str, payloads: list[torch.Tensor]) -> Any:
    """The reference: ``value`` with each tensor encoded, walked depth first in Python."""
    if isinstance(value, dict):
        return {key: _walked(item, encoding, payloads) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        if encoding == "binary":
            payloads.append(raw_bytes(value))
            return binary_header(value)
        return encode_tensor(value, encoding)  # type: ignore[arg-type]
    if isinstance(value, list | tuple):
        return [_walked(item, encoding, payloads) for item in value]
    return value


@pytest.mark.parametrize("encoding", ["json", "b64"])
def test_a_body_is_written_as_encoding_its_tensors_first_would(encoding: str) -> None:
    body = _body()
    envelope = Envelope(encoding, "cpu", 1.5, shared=False)  # type: ignore[arg-type]
    written = encode_response(body, envelope)
    walked = dumps({**_walked(body, encoding, []), "device": "cpu", "elapsed_ms": 1.5})
    assert written == walked


def test_a_binary_body_has_its_tensors_bytes_in_the_order_of_its_json() -> None:
    body = _body()
    written = encode_response(body, Envelope("binary", "cpu", 1.5, shared=False))
    assert isinstance(written, BinaryBody)
    payloads: list[torch.Tensor] = []
    header = dumps({**_walked(body, "binary", payloads), "device": "cpu", "elapsed_ms": 1.5})
    raw = bytes(body_view(written))
    assert raw[: len(header)] == header and not raw[len(header) : written.json_length].strip()
    assert raw[written.json_length :] == b"".join(p.numpy().tobytes() for p in payloads)
    # Each tensor's bytes read back as the tensor, in the order the JSON names them.
    flat = orjson.loads(raw[: written.json_length])
    offset = written.json_length
    expected = [body["outputs"]["out"], body["outputs"]["flag"], body["batches"][0]["x"]]
    for item, tensor in zip(
        [flat["outputs"]["out"], flat["outputs"]["flag"], flat["batches"][0]["x"]],
        expected,
        strict=True,
    ):
        size = item["binary_data_size"]
        value = torch.frombuffer(bytearray(raw[offset : offset + size]), dtype=tensor.dtype)
        assert torch.equal(value.reshape(item["shape"]), tensor)
        offset += size


def test_a_written_tensor_reads_back_as_torch_computed_it() -> None:
    body = _body()
    written = encode_response(body, Envelope("json", "cpu", 0.0, shared=False))
    assert isinstance(written, bytes)
    data = orjson.loads(written)
    assert data["outputs"]["out"] == {"shape": [4], "dtype": "int64", "data": [0, 1, 2, 3]}
    assert data["pair"][0]["data"] == [1.5, "NaN", "Infinity"]
    assert data["pair"][1] == 7
    assert data["shape"] == [2, 3]
    assert data["view"]["data"] == torch.arange(12).reshape(3, 4).t().tolist()
    expected = (body["grad"].detach()).tolist()
    assert np.allclose(np.array(data["grad"]["data"]), np.array(expected), rtol=1e-6)
    assert data["batches"][2]["index"] == 2 and data["batches"][2]["meta"] == [1, 2.5, None]
    assert (data["device"], data["elapsed_ms"]) == ("cpu", 0.0)


def test_what_json_cannot_hold_is_still_refused() -> None:
    with pytest.raises(TypeError):
        encode_response({"where": torch.device("cpu")}, Envelope("json", "cpu", 0.0, False))
