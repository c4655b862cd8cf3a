"""Edge values over HTTP: one regression test per reproducer of the schema-and-edges review.

Huge slice steps and bounds give NumPy's answer; empty tensors with huge other sizes are
refused (413) or answered with the right empty shape, never a 500; a 0×0 picture draws; a
multipart request breaking a rule between fields is a 422 like its JSON twin; and the
published schema admits what the service takes (whole-number floats for integers, exact
64-bit bounds, one dtype spelling, named keys, typed form fields).
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

HUGE = 2**63 - 1


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def program(client: TestClient, *steps: dict[str, Any]) -> Any:
    return client.post("/tensor/ops", json={"steps": list(steps)})


def png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, "PNG")
    return buffer.getvalue()


# --- 1. slices with huge steps and bounds give NumPy's answer --------------------------------


@pytest.mark.parametrize(
    ("size", "index", "numpy_index"),
    [
        ([4], "[::9223372036854775807]", np.s_[::HUGE]),  # was [] (NumPy: [0])
        ([4, 4], "[::9223372036854775807]", np.s_[::HUGE]),  # was "as_strided: Negative strides"
        ([0, 2], "[:, ::9223372036854775807]", np.s_[:, ::HUGE]),  # was a 500: a [0, -1] tensor
        (
            [3, 2],
            "[-9223372036854775807:9223372036854775807, 1::9223372036854775807]",
            np.s_[-HUGE:HUGE, 1::HUGE],
        ),
    ],
)
def test_huge_slices_give_numpys_answer(
    client: TestClient, size: list[int], index: str, numpy_index: Any
) -> None:
    response = program(
        client,
        {"op": "arange", "end": math.prod(size), "out": "a"},
        {"op": "reshape", "x": "a", "shape": size, "out": "a"},
        {"op": "index", "x": "a", "index": index},
    )
    assert response.status_code == 200, response.text
    expected = np.arange(math.prod(size)).reshape(size)[numpy_index]
    out = response.json()["outputs"]["out"]
    assert out["shape"] == list(expected.shape)
    assert np.array_equal(np.array(out["data"]).reshape(expected.shape), expected)


def test_grad_of_a_huge_step_selects_numpys_elements(client: TestClient) -> None:
    # was a 422 "integer multiplication overflow"
    x = [1.0, 2.0, 3.0, 4.0]
    response = client.post("/grad", json={"expression": f"sum(x[::{HUGE}])", "inputs": {"x": x}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["value"]["data"] == 1.0
    assert body["grads"]["x"]["data"] == [1.0, 0.0, 0.0, 0.0]


# --- 2. empty tensors whose other sizes are huge: a 413 or the right empty shape -------------


@pytest.mark.parametrize(
    "steps",
    [
        [{"op": "zeros", "size": [0, 4611686018427387904]}],
        [{"op": "eye", "n": 0, "m": HUGE}],
        [
            {"op": "zeros", "size": [0, 2], "out": "e"},
            {"op": "view", "x": "e", "shape": [2**40, 0]},
        ],
        [
            {"op": "zeros", "size": [0, 2], "out": "e"},
            {"op": "reshape", "x": "e", "shape": [0, 2**40]},
        ],
        [
            {"op": "zeros", "size": [0, 1], "out": "e"},
            {"op": "expand", "x": "e", "size": [0, 2**40]},
        ],
        [
            {"op": "zeros", "size": [0, 1], "out": "e"},
            {"op": "repeat", "x": "e", "repeats": [1, 2**40]},
        ],
    ],
    ids=["zeros", "eye", "view", "reshape", "expand", "repeat"],
)
def test_empty_but_huge_tensors_are_refused(
    client: TestClient, steps: list[dict[str, Any]]
) -> None:
    body = assert_error(program(client, *steps), 413, "elements_limit")
    assert body["details"]["limit"] == "max_elements"


@pytest.mark.parametrize(
    ("steps", "shape"),
    [
        (
            [
                {"op": "zeros", "size": [0, 2], "out": "e"},
                {"op": "view", "x": "e", "shape": [2, 0]},
            ],
            [2, 0],
        ),
        (
            [
                {"op": "zeros", "size": [0, 1], "out": "e"},
                {"op": "expand", "x": "e", "size": [0, 3]},
            ],
            [0, 3],
        ),
        (
            [
                {"op": "zeros", "size": [0, 2], "out": "e"},
                {"op": "repeat", "x": "e", "repeats": [5, 1]},
            ],
            [0, 2],
        ),
        ([{"op": "eye", "n": 0, "m": 3}], [0, 3]),
    ],
    ids=["view", "expand", "repeat", "eye"],
)
def test_empty_tensors_within_the_limits_keep_their_shape(
    client: TestClient, steps: list[dict[str, Any]], shape: list[int]
) -> None:
    response = program(client, *steps)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["out"]["shape"] == shape


def test_an_empty_linear_input_with_a_huge_size_is_refused(client: TestClient) -> None:
    body = {
        "in_features": 1,
        "out_features": 1,
        "input": {"data": [], "shape": [0, 2**48, 1], "dtype": "float32"},
    }
    assert_error(client.post("/layers/linear", json=body), 413, "elements_limit")


def test_a_hessian_over_an_empty_but_long_input_is_refused(client: TestClient) -> None:
    body = {
        "expression": "sum(x)",
        "inputs": {"x": {"data": [], "shape": [0, 2**31], "dtype": "float32"}},
        "hessian": True,
    }
    assert_error(client.post("/grad", json=body), 413, "elements_limit")


# --- 3. a PNG of 0×0 pictures ----------------------------------------------------------------


def test_a_png_of_empty_pictures_is_not_a_server_error(client: TestClient) -> None:
    body = {
        "dataset": "digits",
        "transforms": [{"name": "CenterCrop", "size": 0}],
        "format": "png",
        "batch_size": 1,
    }
    response = client.post("/data/images", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.width > 0 and picture.height > 0  # the padding and the label strip
    picture.verify()


# --- 4. a multipart rule between fields is a 422, as in JSON ---------------------------------


@pytest.mark.parametrize(
    ("path", "files", "fields", "fragment"),
    [
        ("/conv", {"image": ("p.png", png())}, {"bias_values": "[0.5]"}, "bias_values need"),
        (
            "/pool",
            {"image": ("p.png", png())},
            {"kind": "max", "output_size": "[2, 2]"},
            "output_size does not apply",
        ),
        ("/regress/linear", {"file": ("d.csv", b"a,b\n1,2\n")}, {"y": "[1, 2]"}, "`y` needs `x`"),
        ("/regress/logistic", {"file": ("d.csv", b"a,b\n1,2\n")}, {"y": "[1, 2]"}, "`y` needs"),
        ("/data/loader", {"file": ("d.csv", b"a,b\n1,2\n")}, {"y": "[1, 2]"}, "`y` needs `x`"),
    ],
)
def test_multipart_rules_between_fields_are_422(
    client: TestClient, path: str, files: dict[str, Any], fields: dict[str, str], fragment: str
) -> None:
    body = assert_error(client.post(path, files=files, data=fields), 422, "validation_error")
    assert fragment in body["error"]


def test_a_body_that_is_not_json_is_still_415(client: TestClient) -> None:
    response = client.post(
        "/tensor/ops", content=b'{"steps": []}', headers={"content-type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")


# --- 5. the published schema admits what the service takes -----------------------------------


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    published: dict[str, Any] = client.get("/openapi.json").json()
    return published


def component(document: dict[str, Any], name: str) -> dict[str, Any]:
    """A component schema that resolves its references within the document."""
    return {**document["components"]["schemas"][name], "components": document["components"]}


def body_schema(document: dict[str, Any], path: str, media: str) -> dict[str, Any]:
    schema = document["paths"][path]["post"]["requestBody"]["content"][media]["schema"]
    return {**schema, "components": document["components"]}


def valid(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tensor/ops", {"steps": [{"op": "zeros", "size": [2.0, 3.0]}]}),
        (
            "/tensor/ops",
            {
                "steps": [
                    {"op": "arange", "end": 4, "out": "a"},
                    {"op": "sum", "x": "a", "dim": 0.0},
                ]
            },
        ),
        ("/tensor/ops", {"steps": [{"op": "tensor", "data": {"data": [1, 2], "shape": [2.0]}}]}),
        ("/layers/linear", {"in_features": 2.0, "out_features": 1.0, "input": [[1.0, 2.0]]}),
        (
            "/benchmark",
            {
                "m": 8.0,
                "k": 8,
                "n": 8.0,
                "repeats": 1.0,
                "warmup": 0.0,
                "seed": 3.0,
                "devices": ["cpu"],
            },
        ),
    ],
)
def test_whole_number_floats_are_integers(
    client: TestClient, document: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    assert valid(body_schema(document, path, "application/json"), body)
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tensor/ops", {"steps": [{"op": "zeros", "size": [True, 3]}]}),
        ("/tensor/ops", {"steps": [{"op": "zeros", "size": [2.5]}]}),
        ("/layers/linear", {"in_features": True, "out_features": 1, "input": [[1.0]]}),
    ],
)
def test_booleans_and_fractions_are_not_integers(
    client: TestClient, document: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    assert not valid(body_schema(document, path, "application/json"), body)
    assert_error(client.post(path, json=body), 422, "validation_error")


def test_the_seed_bound_is_published_exactly(client: TestClient, document: dict[str, Any]) -> None:
    schema = body_schema(document, "/benchmark", "application/json")
    seed = document["components"]["schemas"]["BenchmarkRequest"]["properties"]["seed"]
    assert seed["anyOf"][0]["exclusiveMaximum"] == 2**63  # an integer, not 9.2e18
    assert type(seed["anyOf"][0]["exclusiveMaximum"]) is int
    request = {"m": 4, "k": 4, "n": 4, "repeats": 1, "warmup": 0, "devices": ["cpu"]}
    assert valid(schema, {**request, "seed": 2**63 - 1})
    assert client.post("/benchmark", json={**request, "seed": 2**63 - 1}).status_code == 200
    assert not valid(schema, {**request, "seed": 2**63})
    assert_error(
        client.post("/benchmark", json={**request, "seed": 2**63}), 422, "validation_error"
    )


def test_no_published_bound_is_a_rounded_float(document: dict[str, Any]) -> None:
    keys = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
    found: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in keys and isinstance(value, float) and value.is_integer():
                    found.append((key, value))
                elif key not in ("examples", "example", "default"):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    assert found == []


@pytest.mark.parametrize(
    "tensor",
    [
        {"data": [1.0], "dtype": "float32", "datatype": "FP32"},  # two spellings of the dtype
        {"b64": "AACAPw==", "shape": [1]},  # base64 without a dtype
        {"b64": "AACAPw", "shape": [1], "dtype": "float32"},  # base64 without its padding
        {"data": [[1.0, [2.0]]]},  # 9 deep: more than 8 dimensions is never a tensor
        {"data": [None]},
    ],
)
def test_tensors_the_service_refuses_are_invalid_by_the_schema(
    client: TestClient, document: dict[str, Any], tensor: dict[str, Any]
) -> None:
    if tensor.get("data") == [[1.0, [2.0]]]:
        tensor = {"data": [[[[[[[[[1.0]]]]]]]]]}
    assert not valid(component(document, "Tensor"), tensor)
    response = program(client, {"op": "tensor", "data": tensor})
    assert response.status_code == 422, response.text


def test_tensors_the_service_takes_are_valid_by_the_schema(
    client: TestClient, document: dict[str, Any]
) -> None:
    for tensor in (
        [[1, 2], [3, 4]],
        {"data": [1.0, 2.0], "shape": [2, 1], "datatype": "FP64"},
        {"b64": "AACAPw==", "shape": [1], "dtype": "float32"},
        {"b64": "AACAPw==", "shape": [1], "datatype": "FP32"},
        {"data": ["NaN", "Infinity"], "dtype": None},
        "-Infinity",
    ):
        assert valid(component(document, "Tensor"), tensor), tensor
        response = program(client, {"op": "tensor", "data": tensor})
        assert response.status_code == 200, (tensor, response.text)


def test_logistic_classes_are_counted_as_items(document: dict[str, Any]) -> None:
    classes = document["components"]["schemas"]["LogisticModel"]["properties"]["classes"]
    for option in classes["anyOf"]:
        assert option["minItems"] == 2 and option["maxItems"] == 1000
        assert "minLength" not in option
    assert "minLength" not in classes and "maxLength" not in classes


def test_input_names_and_activation_params_are_constrained(
    client: TestClient, document: dict[str, Any]
) -> None:
    grad = body_schema(document, "/grad", "application/json")
    body = {"expression": "sum(x)", "inputs": {"x": [1.0]}}
    assert valid(grad, body)
    for name in ("lambda", "pi", "2x", "a-b"):
        bad = {"expression": "sum(x)", "inputs": {"x": [1.0], name: [1.0]}}
        assert not valid(grad, bad), name
        assert client.post("/grad", json=bad).status_code == 422
    ops = body_schema(document, "/tensor/ops", "application/json")
    assert not valid(ops, {"inputs": {"no spaces": [1]}, "steps": [{"op": "zeros", "size": [1]}]})
    activate = body_schema(document, "/activate", "application/json")
    assert valid(activate, {"function": "leaky_relu", "params": {"negative_slope": 0.2}})
    for params in ({"slope": 0.2}, {"negative_slope": "steep"}, {"dim": 1.5}):
        bad = {"function": "leaky_relu", "x": [1.0], "params": params}
        assert not valid(activate, bad), params
        assert client.post("/activate", json=bad).status_code == 422
    assert not valid(activate, {"function": "no_such_function"})
    assert valid(activate, {"function": "Leaky_ReLU"})


def test_multipart_fields_are_typed(document: dict[str, Any]) -> None:
    form = body_schema(document, "/conv", "multipart/form-data")
    assert form["additionalProperties"] is False
    assert valid(form, {"kernel_size": 3, "kernels": ["edge"], "image": "..."})
    assert not valid(form, {"kernel_size": "three", "image": "..."})
    assert not valid(form, {"kernel_size": 3, "unknown": 1, "image": "..."})
    assert valid(form, {"kernel_size": "", "image": "..."})  # an empty field is one left out
    # the rules between fields hold in a form too
    assert not valid(form, {"image": "...", "bias_values": [0.5]})
    assert not valid(form, {})  # no input at all


def test_a_405_lists_every_method_of_the_path(client: TestClient) -> None:
    response = client.put("/activate")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"
    assert client.delete("/tensor/ops").headers["allow"] == "POST"


def test_numbers_past_doubles_are_infinities_not_malformed_json(client: TestClient) -> None:
    # JSON Schema's numbers have no range; JavaScript's JSON.parse reads 1e400 as Infinity,
    # as the service reads integers past 64 bits as floats.
    raw = b'{"steps": [{"op": "full", "size": [1], "fill_value": 1e400}]}'
    response = client.post("/tensor/ops", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["out"]["data"] == ["Infinity"]
    raw = b'{"steps": [{"op": "zeros", "size": [1]}], "seed": 1e400}'
    response = client.post("/tensor/ops", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 422, "validation_error")


def test_the_schema_of_a_form_holds_every_json_rule(document: dict[str, Any]) -> None:
    # the same rules, spelt for a form (an empty field is left out; a file is a part)
    json_rules = document["components"]["schemas"]["PoolRequest"]["allOf"]
    form_rules = body_schema(document, "/pool", "multipart/form-data")["allOf"]
    assert len(json_rules) == len(form_rules)
    assert json.dumps(form_rules).count('""') > 0
