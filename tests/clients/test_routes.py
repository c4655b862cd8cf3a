"""A route's JSON method and its ``_png`` twin send one request, built in one place: the
twin's differs only by ``format=png`` and by not asking for base64 tensors."""

from __future__ import annotations

import email.parser
import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import torchlab_client as tl

PICTURE = np.arange(48, dtype=np.uint8).reshape(6, 8)
CSV = b"a,y\n1,2\n2,4\n3,6\n"


class Sent(Exception):
    """Raised by the mock transport instead of answering: the request is all we look at."""

    def __init__(self, request: httpx.Request) -> None:
        super().__init__(request.url.path)
        self.request = request


def refuse(request: httpx.Request) -> httpx.Response:
    request.read()
    raise Sent(request)


def sent(call: Callable[[tl.Client], object]) -> httpx.Request:
    with (
        tl.Client("http://mock", transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(Sent) as caught,
    ):
        call(client)
    return caught.value.request


def fields(request: httpx.Request) -> dict[str, Any]:
    """The request's fields: its JSON body, or its form fields (text) and uploads (bytes)."""
    content_type = request.headers["content-type"]
    if content_type == "application/json":
        body = json.loads(request.content)
        assert isinstance(body, dict)
        return body
    assert content_type.startswith("multipart/form-data")
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + request.content
    )
    parts = message.get_payload()
    assert isinstance(parts, list)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        if part.get_filename()
        else part.get_payload(decode=True).decode()
        for part in parts
    }


def media_type(request: httpx.Request) -> str:
    return request.headers["content-type"].split(";")[0]


TWINS = [
    pytest.param("activate", (["relu", "tanh"],), {"x": [0.0, 1.0], "columns": 2}, id="activate"),
    pytest.param(
        "conv", (PICTURE,), {"kernels": ["edge", np.eye(3)], "seed": 1}, id="conv-picture"
    ),
    pytest.param("conv", (), {"input": np.ones((4, 4)), "kernel_size": 3}, id="conv-tensor"),
    pytest.param("pool", (), {"input": np.ones((1, 1, 4, 4)), "kind": "avg"}, id="pool"),
    pytest.param("linear_regression", (), {"dataset": "exam"}, id="linear-dataset"),
    pytest.param("linear_regression", (), {"csv": CSV, "target": "y"}, id="linear-csv"),
    pytest.param(
        "logistic_regression", ([[0.0], [1.0]], [0, 1]), {"epochs": 5}, id="logistic-arrays"
    ),
    pytest.param("images", (), {"dataset": "digits", "max_images": 4}, id="images-dataset"),
    pytest.param("images", ([PICTURE, PICTURE],), {"labels": ["a", "b"]}, id="images-upload"),
]


@pytest.mark.parametrize(("method", "args", "kwargs"), TWINS)
def test_the_png_twin_sends_the_same_request(
    method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    png_only = {key: kwargs.pop(key) for key in ("columns",) if key in kwargs}
    as_json = sent(lambda client: getattr(client, method)(*args, **kwargs))
    as_png = sent(lambda client: getattr(client, f"{method}_png")(*args, **kwargs, **png_only))
    assert (as_png.method, as_png.url.path) == (as_json.method, as_json.url.path)
    assert media_type(as_png) == media_type(as_json)
    assert fields(as_png) == {**fields(as_json), "format": "png", **png_only}
    assert "encoding" not in as_png.url.params


def test_every_argument_is_a_field_and_extra_fields_are_spread() -> None:
    # Issue 15: fields the client does not know go in extra_fields (a bare keyword is a
    # TypeError at the call).
    request = sent(
        lambda client: client.conv(
            input=[[1.0, 2.0], [3.0, 4.0]],
            kernels=("box",),
            stride=2,
            seed=3,
            extra_fields={"future_field": 1},
        )
    )
    assert fields(request) == {
        "input": [[1.0, 2.0], [3.0, 4.0]],
        "kernels": ["box"],
        "stride": 2,
        "seed": 3,
        "future_field": 1,
    }
    assert request.url.params["encoding"] == "binary"


def test_sizes_are_inferred_from_the_tensors() -> None:
    x = np.zeros((5, 2, 3), np.float32)
    request = sent(lambda client: client.rnn(x, h0=np.zeros((1, 2, 4), np.float32)))
    assert (fields(request)["input_size"], fields(request)["hidden_size"]) == (3, 4)
    weight = np.zeros((6, 3), np.float32)
    request = sent(lambda client: client.linear_layer(x, weight=weight, as_torch=False))
    assert (fields(request)["in_features"], fields(request)["out_features"]) == (3, 6)


def test_a_picture_or_a_tensor_but_not_both() -> None:
    with tl.Client("http://mock", transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(ValueError, match="not both"):
            client.conv_png(PICTURE, input=[[1.0]])
        with pytest.raises(ValueError, match="an `image`"):
            client.pool()
