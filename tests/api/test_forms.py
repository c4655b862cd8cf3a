"""JSON-or-multipart bodies: one model, two encodings, documented for the docs page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import orjson
import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from pydantic import Field

from schemas.common import StrictModel
from service.api.bodies import many_values
from service.api.forms import json_or_form_body, parse_body
from service.deps import settings_of
from service.main import create_app
from tests.api.test_system import assert_error
from tests.conftest import make_settings


class DemoRequest(StrictModel):
    """A demo body."""

    model_config = {"json_schema_extra": {"examples": [{"kernels": ["edge"], "mode": "L"}]}}

    kernels: list[str] = Field(default_factory=list, description="Kernel names.")
    mode: Literal["L", "RGB"] = Field(default="L", description="Colour mode.")
    target: str | None = Field(default=None, description="A column name.")
    size: int = Field(default=5, description="A size.")
    image: str | None = Field(default=None, description="The picture as base64 (JSON only).")


@pytest.fixture(scope="module")
def demo() -> TestClient:
    app = create_app(make_settings())

    @app.post("/demo", openapi_extra=json_or_form_body(DemoRequest, {"image": "A picture."}))
    async def demo_route(request: Request) -> dict[str, object]:
        body, files = await parse_body(request, DemoRequest, settings_of(request), {"image": 1})
        images = [await upload.read() for upload in files.get("image", [])]
        return {**body.model_dump(), "images": [len(data) for data in images]}

    with TestClient(app) as client:
        yield client


def test_json_body(demo: TestClient) -> None:
    response = demo.post("/demo", json={"kernels": ["edge", "random"], "size": 3})
    assert response.json() == {
        "kernels": ["edge", "random"],
        "mode": "L",
        "target": None,
        "size": 3,
        "image": None,
        "images": [],
    }


def test_form_fields_are_plain_values_or_json_text(demo: TestClient) -> None:
    response = demo.post(
        "/demo",
        data={"kernels": '["edge", "random"]', "mode": "RGB", "target": "2020", "size": "7"},
        files={"image": ("a.png", b"12345", "image/png")},
    )
    assert response.json() == {
        "kernels": ["edge", "random"],
        "mode": "RGB",
        "target": "2020",
        "size": 7,
        "image": None,
        "images": [5],
    }


def test_form_errors(demo: TestClient) -> None:
    files = {"image": ("a.png", b"1", "image/png")}
    assert_error(demo.post("/demo", data={"size": "big"}, files=files), 422, "validation_error")
    assert_error(demo.post("/demo", data={"nope": "1"}, files=files), 422, "validation_error")
    assert_error(
        demo.post("/demo", files={"other": ("a.png", b"1", "image/png")}), 422, "unexpected_file"
    )
    two = [("image", ("a.png", b"1", "image/png")), ("image", ("b.png", b"2", "image/png"))]
    assert_error(demo.post("/demo", files=two), 422, "too_many_files")
    assert_error(
        demo.post("/demo", content=b"x", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_error(
        demo.post("/demo", content=b"{", headers={"Content-Type": "application/json"}),
        400,
        "malformed_body",
    )


def test_the_docs_offer_both_encodings(demo: TestClient) -> None:
    schema = demo.get("/openapi.json").json()
    content = schema["paths"]["/demo"]["post"]["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/DemoRequest"}
    form = content["multipart/form-data"]["schema"]["properties"]
    # The model's base64 `image` field gives way to the file picker in the form.
    assert form["image"]["format"] == "binary"
    assert set(form) == {"image", "kernels", "mode", "target", "size"}
    assert schema["components"]["schemas"]["DemoRequest"]["examples"] == [
        {"kernels": ["edge"], "mode": "L"}
    ]


@pytest.fixture(scope="module")
def service() -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as client:
        yield client


def multipart(fields: dict[str, str]) -> dict[str, tuple[None, str]]:
    """Form fields sent as multipart/form-data (without files httpx would urlencode them)."""
    return {key: (None, value) for key, value in fields.items()}


def _line(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """40,000 samples of y = 2 x0 - x1 + 0.5: megabytes as JSON."""
    x = np.random.default_rng(seed).standard_normal((40_000, 2))
    return x, x @ [2.0, -1.0] + 0.5


def test_large_form_fields_are_read_as_a_large_json_body(
    service: TestClient, body_worker_calls: list[str]
) -> None:
    # Megabytes of JSON text in form fields are read as a JSON body of the same fields is:
    # by a body worker when they hold many values, never on the event loop.
    x, y = _line(0)
    fields = {
        "x": orjson.dumps(x, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
        "y": str(y.tolist()),
    }
    assert many_values(fields["x"].encode()) and len(fields["x"]) > 1 << 20
    by_form = service.post("/regress/linear", files=multipart(fields))
    assert body_worker_calls == ["compact_body"]  # read by a body worker, not the server
    by_json = service.post("/regress/linear", json={"x": x.tolist(), "y": y.tolist()})
    assert by_form.status_code == 200, by_form.text
    assert by_form.json()["model"] == by_json.json()["model"]
    np.testing.assert_allclose(by_form.json()["model"]["coef"], [2.0, -1.0], atol=1e-9)
    # A large field that is not JSON is a plain word, as a small one is: the same refusal.
    small, large = (
        service.post("/regress/linear", files=multipart({**fields, "y": word}))
        for word in ("abc", "abc" * 300_000)
    )
    assert_error(small, 422, "shape_mismatch")
    assert (large.status_code, large.json()) == (small.status_code, small.json())


def test_a_large_json_part_of_a_binary_body_is_read_by_a_worker(
    service: TestClient, body_worker_calls: list[str]
) -> None:
    x, y = _line(1)
    binary_y = {"shape": [40_000], "dtype": "float64", "binary_data_size": y.nbytes}
    head = orjson.dumps({"x": x.tolist(), "y": binary_y})
    assert len(head) > 1 << 20 and many_values(head)
    response = service.post(
        "/regress/linear",
        content=head + y.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert response.status_code == 200, response.text
    assert body_worker_calls == ["compact_body"]
    np.testing.assert_allclose(response.json()["model"]["coef"], [2.0, -1.0], atol=1e-9)
